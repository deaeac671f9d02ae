"""What every stage object does with the notebook parameters it is opened from."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from nbutils.core.errors import NbutilsError


def require(params: Mapping[str, Any], names: Sequence[str], notebook: str) -> None:
    """Raise a clear error when the namespace a stage is opened from (the notebook's
    ``globals()``) lacks a parameter the stage reads."""
    missing = [name for name in names if name not in params]
    if missing:
        raise NbutilsError(f"notebook {notebook}: no parameter {', '.join(missing)} in the namespace passed",
                           fix="run the notebook's parameters cell first, and pass globals() to open()")
