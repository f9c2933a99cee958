"""User-facing error types: one clear line, no traceback, non-zero exit.

Three kinds of failure, told apart by exit code and HTTP status (one table in the docs):

=========================  ==========================  =========  ===========
kind                       class                       exit code  HTTP status
=========================  ==========================  =========  ===========
a user's mistake           :class:`PigError`           2          4xx (400)
a fault of the environment :class:`EnvironmentFault`   3          5xx (503)
videos that failed         (recorded in the catalog)   1          --
=========================  ==========================  =========  ===========
"""

from __future__ import annotations

EXIT_VIDEOS_FAILED = 1
EXIT_USER_ERROR = 2
EXIT_ENVIRONMENT = 3


class PigError(Exception):
    """An error caused by user input (a file, a flag, a checkpoint).

    CLIs print ``str(err)`` on one line and exit with ``exit_code``; the server answers
    ``http_status``.
    """

    exit_code = EXIT_USER_ERROR
    http_status = 400


class EnvironmentFault(PigError):
    """A fault of the environment, not of the user's input: a damaged or changed index file,
    a full disk, a missing driver. The message names the file and the cause."""

    exit_code = EXIT_ENVIRONMENT
    http_status = 503


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
    """A missing or foreign index directory, or one used the wrong way."""


class IndexDamaged(IndexStoreError, EnvironmentFault):
    """An index file that is damaged or changed under us (checksum, truncation, SQLite)."""


class IndexIOError(IndexStoreError, EnvironmentFault):
    """An index file that cannot be read or written: a full disk, an I/O error."""


class BackendUnavailable(PigError):
    """A requested backend/precision/device that cannot be used here."""


class GpuFault(BackendUnavailable, EnvironmentFault):
    """The GPU, its driver or a GPU library failed (CUDA initialisation, a plan TensorRT
    cannot deserialise, a decoder that does not open): ``auto`` falls back like for any
    :class:`BackendUnavailable`; an explicit request exits 3 (HTTP 503)."""
