"""User-facing error types: one clear line, no traceback, non-zero exit."""

from __future__ import annotations


class PigError(Exception):
    """An error caused by user input (a file, a flag, a checkpoint).

    CLIs print ``str(err)`` on one line and exit with ``exit_code``.
    """

    exit_code = 2


class CheckpointError(PigError):
    """A checkpoint that cannot be loaded as a PIG model."""


class BundleError(PigError):
    """A missing, incomplete or inconsistent bundle directory."""


class VideoReadError(PigError):
    """A video file that cannot be decoded; names the file and the reason."""

    def __init__(self, path: object, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class IndexStoreError(PigError):
    """A missing, corrupt or foreign index directory."""


class BackendUnavailable(PigError):
    """A requested backend/precision/device that cannot be used here."""
