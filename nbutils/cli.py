"""The ``nbutils`` command line: ``nbutils <command> [options]``.

Each command lives in the module of its concern and is imported only when used, so light
commands (data fetch, run) do not pay for importing torch. A command is a function
``main(argv: list[str]) -> int``.
"""

from __future__ import annotations

import errno
import importlib
import os
import signal
import sys

from nbutils.core.errors import NbutilsError, entered_through
from nbutils.runtime.memory import max_length_argument
from nbutils.runtime.process import configure_process

COMMANDS: dict[str, tuple[str, str]] = {
    "data": ("nbutils.data.fetch:main", "fetch a dataset into data/raw (from its source or a local mirror)"),
    "run": ("nbutils.pipeline.runner:main", "run the numbered notebooks headless with a profile"),
    "convert": ("nbutils.checkpoints.convert:main_convert", "convert a Google TF BERT checkpoint to Hugging Face"),
    "export": ("nbutils.checkpoints.convert:main_export", "export a Hugging Face BERT to Google's TF checkpoint layout"),
    "train": ("nbutils.training.launch:main", "fine-tune a BERT model folder on a dataset"),
    "pretrain": ("nbutils.pretraining.mlm:main", "continue masked-LM pre-training on in-domain text"),
    "predict": ("nbutils.explain.attributions:predict_main", "classify texts with a fine-tuned model"),
    "export-onnx": ("nbutils.inference.onnx_export:main", "export a fine-tuned model to ONNX (fp32 + int8) for ONNX Runtime"),
    "figures": ("nbutils.reporting.figures:main", "redraw the README figures (figures/*.png) from a run"),
    "report": ("nbutils.reporting.report:main", "rebuild the HTML report of a run directory"),
    "threads": ("nbutils.runtime.device:main", "show the device, precision and CPU thread policy chosen here, and why"),
}


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: nbutils <command> [options]", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "`nbutils <command> --help` shows a command's options."]
    return "\n".join(lines)


def _stop_on_signal(signum, frame):
    # SIGTERM (kill, timeout, a batch scheduler) and SIGHUP (a closed terminal) end Python
    # without running `finally` blocks; raising instead unwinds them, so atomic writes remove
    # their hidden temporary folders and the runner records "interrupted".
    raise SystemExit(128 + signum)


def _install_signal_handlers() -> None:
    for name in ("SIGTERM", "SIGHUP"):
        if hasattr(signal, name):
            try:
                signal.signal(getattr(signal, name), _stop_on_signal)
            except ValueError:  # not the main thread (e.g. called from a test runner thread)
                return


_NO_PERMISSION = {errno.EACCES, errno.EPERM, errno.EROFS}
_NO_SPACE = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}


def os_error_message(err: OSError) -> str | None:
    """A user-facing sentence for file-system errors a user can fix, else None (a bug)."""
    where = err.filename if err.filename is not None else "a file"
    if err.errno in _NO_PERMISSION:
        return (f"permission denied: {where} ({err.strerror})\n  how to fix: choose an output folder "
                f"you can write to, or fix its permissions (`ls -ld {os.path.dirname(str(where)) or '.'}`); "
                "nothing half-written was kept")
    if err.errno in _NO_SPACE:
        return (f"no space left on the device while writing {where}\n  how to fix: free some space "
                f"(`df -h {os.path.dirname(str(where)) or '.'}`) or write somewhere else, then run the "
                "command again; nothing half-written was kept")
    return None


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in {"-h", "--help", "help"}:
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"nbutils: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    # Before the command loads torch: OpenMP reads its thread count, and torch's allocator its
    # huge-page switch, once (nbutils.runtime.process).
    configure_process(max_length=max_length_argument(rest), quiet=True)
    module_name, func_name = COMMANDS[name][0].split(":")
    command = getattr(importlib.import_module(module_name), func_name)
    _install_signal_handlers()
    try:
        with entered_through("cli"):  # errors name this command's --flags
            return int(command(rest) or 0)
    except NbutilsError as err:
        print(f"nbutils {name}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"nbutils {name}: interrupted", file=sys.stderr)
        return 130
    except SystemExit as stop:
        if isinstance(stop.code, int) and stop.code > 128:
            print(f"nbutils {name}: stopped by signal {stop.code - 128}; unfinished outputs were removed",
                  file=sys.stderr)
        raise
    except BrokenPipeError:
        # `nbutils data check ... | head`: the reader left; not an error worth a traceback.
        # Point stdout at /dev/null so the interpreter's final flush does not fail again.
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return 141  # 128 + SIGPIPE, what a shell reports for a command stopped by a closed pipe
    except OSError as err:
        message = os_error_message(err)
        if message is None:
            raise
        print(f"nbutils {name}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
