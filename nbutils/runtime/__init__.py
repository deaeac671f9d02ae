"""How this process uses the machine: device and precision, the CPU thread policy and its governor,
thread-invariant training numerics, and allocator settings. Nothing here acts on import: entry
points (the CLI, the runner, each notebook's first code cell) call :func:`configure_process`.
"""

from nbutils.runtime.process import ProcessSettings, configure_process

__all__ = ["ProcessSettings", "configure_process"]
