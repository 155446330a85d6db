"""The exception tree: every error a user can cause is a ChurnError with a one-line message.

The CLI maps these to exit codes and the API (later) to HTTP status codes; nothing below the
edges formats errors for humans beyond the message itself.
"""


def first_line(exc: BaseException) -> str:
    """An exception's message, its first line only (drivers add pages of context)."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


class ChurnError(Exception):
    """Base of every error churn-mlops raises on purpose."""

    exit_code = 1


class ConfigError(ChurnError):
    """Settings or a dataset spec that cannot be used."""

    exit_code = 2


class SpecError(ConfigError):
    """A dataset spec that does not parse, or does not describe a usable table."""


class SourceError(ChurnError):
    """A data source that cannot be read: a missing file, an unreadable file, a bad URL."""

    exit_code = 3


class DataValidationError(ChurnError):
    """A table-level failure that stops a run: missing columns, duplicate ids, no rows."""

    exit_code = 4


class NotFoundError(ChurnError):
    """Something asked for by name or version that does not exist."""

    exit_code = 5


class VersionNotFoundError(NotFoundError):
    """A lake version that does not exist."""


class ModelNotFoundError(NotFoundError):
    """A registered model, version or alias that does not exist."""


class ChecksumError(ChurnError):
    """A model artifact that fails verification; it is never loaded."""

    exit_code = 6


class GateError(ChurnError):
    """A promotion or rollback that the registry's state does not allow."""

    exit_code = 7


class MonitoringError(ChurnError):
    """A monitoring run that cannot go on: its store or the model registry cannot be read."""

    exit_code = 8
