"""Errors a user can fix. Each says what was wrong, where, and how to fix it.

The CLI prints these as one readable block (no traceback) and exits with status 2; any other
exception is a bug in nbutils and keeps its traceback.
"""

from __future__ import annotations

from pathlib import Path


class NbutilsError(Exception):
    """A problem with the user's input or environment, with a suggested fix."""

    def __init__(self, message: str, *, fix: str | None = None):
        self.message = message
        self.fix = fix
        super().__init__(self.__str__())

    def __str__(self) -> str:
        return self.message if not self.fix else f"{self.message}\n  how to fix: {self.fix}"


class DataError(NbutilsError):
    """A bad row or file in a dataset: names the file, the 1-based line and the reason."""

    def __init__(self, path: str | Path, line: int | None, reason: str, *, fix: str | None = None):
        self.path = Path(path)
        self.line = line
        self.reason = reason
        where = f"{self.path}:{line}" if line is not None else f"{self.path}"
        super().__init__(f"{where}: {reason}", fix=fix)
