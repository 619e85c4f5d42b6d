"""The device side of a package: what must run on the TargetDevice's own operating system.

Per-architecture TVM runtimes and the toolchain that builds them for the device's libc floor; the package's C API
(``driver/neocompile_rt.cc``, ``driver/include/neocompile_rt.h``), the ``neo_run`` runner over it and their build
(``runner.py``); the numpy-only Python binding shipped in every package (``python/``); the ELF checks that prove a
package stays within its device's glibc/libstdc++ floors; and runs of packages inside device-class root filesystems
(Debian images, also with the distribution's Python and numpy, under qemu-user).
"""
