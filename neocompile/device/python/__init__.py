"""The numpy-only Python binding of the package runtime's C API: ``neocompile_rt.py`` is copied into every package
as ``python/neocompile_rt.py`` and is the whole of the ``neocompile-runtime`` distribution (runtime-python/); the
build machine's :class:`neocompile.runtime.Model` runs packages through it too."""
