"""Where things live: the repository, the shared mirror, and the layout of one run directory.

Files are the contract between notebooks. Each stage writes into its own folder of the run
directory, and every figure also lands in ``<run>/figures/<stage>_<name>.png`` so the report
can embed them without knowing each stage's internals. The file names come from
:mod:`nbutils.core.run_contract`; :meth:`RunPaths.file` resolves any of them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from nbutils.core.run_contract import FILE

REPO_ROOT = Path(__file__).resolve().parents[2]


def default_mirror_dirs() -> list[Path]:
    """Local mirror folders for offline machines: $NBUTILS_DATA_MIRROR (os.pathsep-separated)."""
    value = os.environ.get("NBUTILS_DATA_MIRROR", "")
    return [Path(p).expanduser() for p in value.split(os.pathsep) if p]


@dataclass(frozen=True)
class RunPaths:
    """The layout of one run directory (``runs/<timestamp>-<profile>/``)."""

    root: Path

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))

    # one folder per stage
    @property
    def convert(self) -> Path:
        return self.root / "convert"

    @property
    def explore(self) -> Path:
        return self.root / "explore"

    @property
    def pretrain(self) -> Path:
        return self.root / "pretrain"

    @property
    def finetune(self) -> Path:
        return self.root / "finetune"

    @property
    def freezing(self) -> Path:
        return self.root / "freezing"

    @property
    def report(self) -> Path:
        return self.root / "report"

    @property
    def figures(self) -> Path:
        return self.root / "figures"

    @property
    def notebooks(self) -> Path:
        return self.root / "notebooks"

    def file(self, key: str) -> Path:
        """The path of a file of the run-directory contract, e.g. ``file("explore_stats")``."""
        try:
            return self.root / FILE[key].relpath
        except KeyError:
            raise KeyError(f"{key!r} is not a file of the run-directory contract "
                           f"(nbutils/core/run_contract.py names: {', '.join(FILE)})") from None

    @property
    def manifest(self) -> Path:
        return self.file("manifest")

    # the model hand-offs between stages
    @property
    def converted_model(self) -> Path:
        """Hugging Face model folder written by the conversion notebook."""
        return self.file("converted_model")

    @property
    def pretrained_model(self) -> Path:
        """Domain-adapted (MLM) model folder written by the pre-training notebook."""
        return self.file("pretrained_model")

    @property
    def finetuned_model(self) -> Path:
        return self.file("finetuned_model")

    def base_model(self) -> Path:
        """The encoder to fine-tune: the domain-adapted one if that stage ran, else the converted one."""
        if (self.pretrained_model / "config.json").exists():
            return self.pretrained_model
        return self.converted_model

    def figure(self, stage: str, name: str) -> Path:
        """Path for a figure, e.g. figure("finetune", "curves") -> figures/finetune_curves.png."""
        self.figures.mkdir(parents=True, exist_ok=True)
        return self.figures / f"{stage}_{name}.png"

    def shown(self, path: str | Path) -> str:
        """``path`` as a figure title or a log line shows it: relative to the run directory when
        inside it (``pretrain/model``), else its last two parts; never a machine's absolute path."""
        path = Path(path)
        for root in (self.root, self.root.resolve()):
            if path.is_relative_to(root):
                return path.relative_to(root).as_posix()
        return "/".join(path.parts[-2:])
