"""User-facing error types.

Every failure a user can cause or meet is one of these, and its message names the field, the bad value
and what was expected, in the style of SageMaker Neo's ``ClientError: InputConfiguration: ...`` texts.
"""
from __future__ import annotations


class NeoError(Exception):
    """Base class: the message is meant to be read by the user as is."""

    #: Prefix used when the error is shown as a job FailureReason / CLI error line.
    kind = "ClientError"
    #: Short class of failure, as in Neo's troubleshooting guide.
    category = "Error"

    def __str__(self) -> str:  # keep str() equal to the message, without args tuple noise
        return self.args[0] if self.args else self.category

    @property
    def reason(self) -> str:
        """The one-line FailureReason SageMaker would show."""
        return f"{self.kind}: {self}"


class InputConfigurationError(NeoError):
    """The model archive, the DataInputConfig or the framework do not fit together."""

    category = "InputConfiguration"

    def __init__(self, message: str):
        if not message.startswith("InputConfiguration:"):
            message = f"InputConfiguration: {message}"
        super().__init__(message)


class ValidationError(NeoError):
    """A request field is malformed (SageMaker's ValidationException)."""

    category = "ValidationException"


class TargetError(NeoError):
    """Unknown or unsupported TargetDevice / TargetPlatform / CompilerOptions."""

    category = "TargetConfiguration"


class CompilationError(NeoError):
    """TVM could not compile or link the model for the target."""

    category = "CompilationError"


class VerificationError(NeoError):
    """The compiled model disagrees with the source framework beyond tolerance."""

    category = "VerificationError"


class StorageError(NeoError):
    """Reading the input or writing the output failed (S3 or local folder)."""

    category = "StorageError"


class JobTimeout(NeoError):
    """StoppingCondition.MaxRuntimeInSeconds was reached."""

    category = "TimeOut"


class PackageError(NeoError):
    """A compiled package cannot be loaded or run here (wrong device, wrong architecture, damaged)."""

    category = "PackageError"


class JobStopped(NeoError):
    """StopCompilationJob (or the loss of the job) ended a running compile."""

    category = "Stopped"
