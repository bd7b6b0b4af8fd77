"""User-facing errors: one line that names the problem and the fix, exit code 2, no traceback."""
from __future__ import annotations

EXIT_USER_ERROR = 2


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
