"""The Python API: ``compile_model`` mirrors CreateCompilationJob / the compile-model command."""
from __future__ import annotations

from typing import Any, Callable


def compile_model(
    model_uri: str,
    framework: str,
    output_location: str,
    data_input_config: str | dict | list | None = None,
    target_device: str | None = None,
    target_platform: dict[str, str] | None = None,
    compiler_options: str | dict | None = None,
    job_name: str | None = None,
    framework_version: str | None = None,
    max_runtime_seconds: int | None = None,
    progress: Callable[[Any], None] | None = None,
):
    """Compile ``model_uri`` (a model.tar.gz: s3://, file:// or a path) for a TargetDevice or TargetPlatform.

    Writes ``<stem>-<target>.tar.gz`` to ``output_location`` and returns a
    :class:`neocompile.pipeline.CompilationResult` (artifact URI, BLAKE2 digest, compiled.meta, verification
    report, stage timings). Raises a :class:`neocompile.errors.NeoError` subclass with a user-readable message
    on bad input or failure; nothing is left at ``output_location`` then. With ``max_runtime_seconds`` the
    compile runs in a child process group that is killed at the deadline (``JobTimeout``).
    """
    from . import pipeline

    request = pipeline.CompilationRequest(
        model_uri=model_uri,
        framework=framework,
        output_location=output_location,
        data_input_config=data_input_config,
        target_device=target_device,
        target_platform=target_platform,
        compiler_options=compiler_options,
        job_name=job_name,
        framework_version=framework_version,
        max_runtime_seconds=max_runtime_seconds,
    )
    return run_request(request, progress)


def run_request(request: Any, progress: Callable[[Any], None] | None = None):
    """Run a :class:`CompilationRequest`, under a deadline when it sets MaxRuntimeInSeconds."""
    from . import pipeline

    if request.max_runtime_seconds:
        from .deadline import run_with_deadline

        return run_with_deadline(request, request.max_runtime_seconds, progress)
    return pipeline.run(request, progress)
