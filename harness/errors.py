"""User-facing errors: one line that names the problem and the fix, exit code 2, no traceback."""
from __future__ import annotations

import errno
import shutil
from pathlib import Path

NO_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)  # disk full, quota, file size limit
EXIT_OK = 0  # every cell finished ok and every validation passed
EXIT_FAILED = 1  # a cell failed (error, oom, crash, timeout, skipped, load failure) or a validation failed
EXIT_USER_ERROR = 2  # bad input: nothing measured (Ctrl-C exits 130, 128 + SIGINT, the shell's convention)


class UserError(Exception):
    """A mistake in the input (config, paths, missing library) that the user can fix."""

    def __init__(self, problem: str, fix: str):
        super().__init__(problem)
        self.problem = problem
        self.fix = fix

    def one_line(self) -> str:
        return f"enginebench: error: {self.problem} (fix: {self.fix})"


class MissingLibrary(UserError):
    """The selected backend needs a library that is not installed."""

    def __init__(self, backend: str, module: str, pip_packages: str):
        super().__init__(f"backend '{backend}' needs the Python module '{module}', which is not installed",
                         f"pip install {pip_packages}")


class JobFailed(Exception):
    """Raised by the Python API when a job ran but did not fully succeed (exit status 1); its files are complete."""

    def __init__(self, out_dir, exit_code: int, summary: str):
        super().__init__(f"{summary} (results in {out_dir})")
        self.out_dir = out_dir
        self.exit_code = exit_code
        self.summary = summary


def out_of_space(exc: BaseException) -> bool:
    """True for a write that failed for lack of room (anywhere in the exception's chain)."""
    while exc is not None:
        if isinstance(exc, OSError) and exc.errno in NO_SPACE:
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def no_space_line(exc: OSError, directory: Path) -> str:
    """One line for a full disk: the directory, its free space, and that finished cells are kept."""
    try:
        free = f"{shutil.disk_usage(directory).free / 2**20:.1f} MiB free"
    except OSError:
        free = "free space unknown"
    return (f"enginebench: out of space writing {directory} ({free}; {exc.strerror}); every finished cell is in "
            f"its results.csv (fix: free some space, then add resume=true)")
