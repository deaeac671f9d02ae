"""What CPU this is, for result files and caches keyed by machine."""

from __future__ import annotations

import platform


def cpu_info() -> tuple[str, set[str]]:
    """The CPU's model name and instruction-set flags (from /proc/cpuinfo where there is one)."""
    name, flags = platform.processor() or platform.machine() or "unknown CPU", set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name") and ":" in line:
                    name = line.split(":", 1)[1].strip()
                elif line.startswith("flags") and ":" in line:
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    return name, flags


def cpu_name() -> str:
    """The CPU's model name, e.g. ``Intel(R) Xeon(R) Processor``."""
    return cpu_info()[0]
