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


# How the user reached the code that raised: ``nbutils run`` (``run``), a command such as
# ``nbutils data check`` (``cli``), a notebook (``notebook``) or Python (``python``). An error's
# "how to fix" names the option that exists there (-p name=..., --flag, a parameters-cell variable).
ENTRY_VARIABLE = "NBUTILS_ENTRY"
ENTRY_POINTS = ("run", "cli", "notebook", "python")


def entry_point() -> str:
    """Where the user came in: ``$NBUTILS_ENTRY`` when an entry point set it (the runner's kernels
    inherit ``run``), else ``notebook`` inside a running Jupyter kernel, else ``python``."""
    import os

    entry = os.environ.get(ENTRY_VARIABLE, "")
    if entry in ENTRY_POINTS:
        return entry
    return "notebook" if _in_jupyter_kernel() else "python"


def _in_jupyter_kernel() -> bool:
    """A Jupyter kernel's shell is running this code (not merely: ipykernel was imported, as
    papermill, nbconvert or a test may do in a plain process)."""
    import sys

    if "IPython" not in sys.modules:  # no shell without IPython; do not import it here
        return False
    shell = sys.modules["IPython"].get_ipython()
    # by name, so that ipykernel is not imported here; subclasses count (Colab's shell is one)
    return shell is not None and any(cls.__name__ == "ZMQInteractiveShell" for cls in type(shell).__mro__)


class entered_through:  # noqa: N801 - used as a context manager, like contextlib's
    """``with entered_through("cli"): ...``: errors raised inside name that entry point's options.
    An entry point already set (the runner above a notebook) is kept; the old value comes back."""

    def __init__(self, entry: str):
        if entry not in ENTRY_POINTS:
            raise ValueError(f"entry point {entry!r} is not one of {ENTRY_POINTS}")
        self.entry = entry

    def __enter__(self):
        import os

        self._before = os.environ.get(ENTRY_VARIABLE)
        if self._before not in ("run",):
            os.environ[ENTRY_VARIABLE] = self.entry
        return self

    def __exit__(self, *exc):
        import os

        if self._before is None:
            os.environ.pop(ENTRY_VARIABLE, None)
        else:
            os.environ[ENTRY_VARIABLE] = self._before
        return False
