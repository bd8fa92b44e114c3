"""User-facing errors: one line saying what is wrong and how to fix it."""
from __future__ import annotations

import errno
import signal


class UserError(Exception):
    """A mistake in the user's input (path, data, config). The CLI prints it without a traceback."""


class TrainingDiverged(RuntimeError):
    """Energies or losses became NaN/inf; the last good checkpoint is kept."""


class Interrupted(Exception):
    """SIGINT or SIGTERM stopped the command; ``exit_code`` is the shell's 128 + signal number."""

    def __init__(self, signum: int, message: str):
        super().__init__(message)
        self.signum, self.exit_code = signum, 128 + signum


def signal_name(signum: int) -> str:
    return signal.Signals(signum).name


_PLAIN = {errno.ENOSPC: "no space left on device", errno.EROFS: "read-only file system",
          errno.EACCES: "permission denied", errno.EPERM: "permission denied",
          errno.EDQUOT: "disk quota exceeded", errno.ENOTDIR: "a part of the path is a file",
          errno.EISDIR: "it is a folder"}


def write_error(path, err: OSError, kept: str = "") -> UserError:
    """A one-line UserError for a failed write (full disk, read-only file system, no
    permission), saying plainly which and what was kept."""
    why = _PLAIN.get(err.errno, err.strerror or str(err))
    return UserError(f"cannot write {path}: {why}" + (f"; {kept}" if kept else ""))
