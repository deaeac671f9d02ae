"""The ``nbutils`` command line: ``nbutils <command> [options]``.

Each command lives in the module of its concern and is imported only when used, so light
commands (data fetch, run) do not pay for importing torch. A command is a function
``main(argv: list[str]) -> int``.
"""

from __future__ import annotations

import importlib
import sys

from nbutils.errors import NbutilsError

COMMANDS: dict[str, tuple[str, str]] = {
    "data": ("nbutils.fetch:main", "fetch a dataset into data/raw (from its source or a local mirror)"),
    "run": ("nbutils.runner:main", "run the numbered notebooks headless with a profile"),
    "convert": ("nbutils.convert:main_convert", "convert a Google TF BERT checkpoint to Hugging Face"),
    "export": ("nbutils.convert:main_export", "export a Hugging Face BERT to Google's TF checkpoint layout"),
    "train": ("nbutils.launch:main", "fine-tune a BERT model folder on a dataset"),
    "pretrain": ("nbutils.pretrain:main", "continue masked-LM pre-training on in-domain text"),
    "predict": ("nbutils.prediction:main", "classify texts with a fine-tuned model"),
    "export-onnx": ("nbutils.onnx_export:main", "export a fine-tuned model to ONNX (fp32 + int8) for ONNX Runtime"),
    "figures": ("nbutils.readme_figures:main", "redraw the README figures (figures/*.png) from a run"),
    "report": ("nbutils.report:main", "rebuild the HTML report of a run directory"),
    "threads": ("nbutils.threads:main", "show the device, precision and CPU thread policy chosen here, and why"),
}


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: nbutils <command> [options]", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "`nbutils <command> --help` shows a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in {"-h", "--help", "help"}:
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"nbutils: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module_name, func_name = COMMANDS[name][0].split(":")
    command = getattr(importlib.import_module(module_name), func_name)
    try:
        return int(command(rest) or 0)
    except NbutilsError as err:
        print(f"nbutils {name}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"nbutils {name}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
