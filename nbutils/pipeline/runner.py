"""Run the numbered notebooks headless, in order, with papermill: ``nbutils run``.

Each run gets its own directory, ``runs/<timestamp>-<profile>/``, holding the executed
notebooks, every stage's outputs and ``manifest.json`` (parameters, git commit, package
versions, device, timings and per-notebook status). A run directory is never overwritten:
an existing one is only re-entered explicitly with ``--only`` (e.g. to resume a stage).

Parameters come from ``params/<profile>.yaml`` plus ``-p key=value`` overrides. The profile is
flat; each notebook receives only the keys its ``parameters`` cell declares, cast to the
declared type. A key no notebook declares is an error (papermill itself only warns).
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.metadata
import os
import platform
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from nbutils.core.errors import NbutilsError, entered_through
from nbutils.core.io import write_json
from nbutils.core.paths import REPO_ROOT, RunPaths
from nbutils.runtime.memory import longest_max_length
from nbutils.runtime.process import configure_process
from nbutils.runtime.threads import (
    current_policy,
    machine_load,
    thread_schedules,
)

NOTEBOOK_DIR = REPO_ROOT / "notebooks"
PARAMS_DIR = REPO_ROOT / "params"
RUNS_DIR = REPO_ROOT / "runs"
KERNEL_NAME = "python3"
# Parameters whose names end like this are paths; relative values are taken from the repo root.
PATH_SUFFIXES = ("_dir", "_path", "_file")
# `*_source` may be a hub id ("bert-base-chinese"); it is a path only if it exists as one.
SOURCE_SUFFIX = "_source"
# Always injected by the runner, never taken from a profile (``overwrite`` comes from --overwrite:
# replacing a stage's finished results is a decision for one command, not a profile default).
RUNNER_PARAMETERS = {"run_dir", "headless", "overwrite"}
# Old parameter name -> (new name, why it changed): a profile still using the old name fails
# with the new one instead of a bare "unknown parameter".
RENAMED_PARAMETERS = {
    "freeze_max_eval_samples": ("freeze_max_dev_test_samples", "it sizes the dev and the test split"),
    "explore_text_column": ("data_text_column", "every stage reads the text column, not only exploration"),
    "explore_label_column": ("data_label_column", "every stage reads the label column, not only exploration"),
}
MANIFEST_PACKAGES = (
    "nbutils", "torch", "transformers", "tokenizers", "accelerate", "safetensors", "numpy",
    "pandas", "scikit-learn", "papermill", "nbconvert", "matplotlib", "seaborn",
)


@dataclass
class NotebookParameters:
    """The parameters one notebook declares: name -> declared type name and default."""

    path: Path
    declared: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.path.stem


def discover_notebooks(notebook_dir: Path = NOTEBOOK_DIR) -> list[Path]:
    """The numbered notebooks (``NN_name.ipynb``) in execution order."""
    return sorted(p for p in notebook_dir.glob("[0-9][0-9]_*.ipynb"))


def select_notebooks(notebooks: list[Path], only: str | None) -> list[Path]:
    """Pick notebooks by number: ``"04"``, ``"1,4"`` or ``"02-04"``; ``None`` picks all."""
    if only is None:
        return notebooks
    if not only.strip():
        # an empty selection (e.g. `--only "$STAGES"` with STAGES unset) must not mean "everything"
        raise NbutilsError("--only '' selects no notebook", fix="use numbers like 04, 1,4 or 02-04, or omit --only")
    wanted: set[int] = set()
    for part in only.split(","):
        part = part.strip()
        match = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not match:
            raise NbutilsError(f"--only {only!r}: {part!r} is not a notebook number",
                               fix="use numbers like 04, 1,4 or 02-04")
        lo = int(match.group(1))
        hi = int(match.group(2) or lo)
        if hi < lo:
            raise NbutilsError(f"--only {only!r}: the range {part!r} runs backwards",
                               fix=f"write it low to high: {hi:02d}-{lo:02d}")
        wanted.update(range(lo, hi + 1))
    chosen = [p for p in notebooks if int(p.name[:2]) in wanted]
    missing = wanted - {int(p.name[:2]) for p in chosen}
    if missing:
        have = ", ".join(p.stem for p in notebooks)
        raise NbutilsError(f"--only {only!r}: no notebook numbered {sorted(missing)}",
                           fix=f"choose from: {have}")
    return chosen


def execute_notebook(notebook: Path, output: Path, parameters: dict[str, Any], *, timeout: int,
                     progress_bar: bool = False) -> None:
    """Execute ``notebook`` into ``output`` with ``parameters`` the one way this project does:
    kernel ``python3``, the notebook's folder as working directory, a per-cell timeout, and the
    output saved after every cell (a killed run leaves its progress). ``nbutils run`` and
    ``nbutils report`` both execute through here; papermill's errors propagate."""
    import papermill

    papermill.execute_notebook(
        str(notebook), str(output), parameters=parameters, kernel_name=KERNEL_NAME,
        cwd=str(Path(notebook).parent), execution_timeout=timeout, progress_bar=progress_bar,
        log_output=False, request_save_on_cell_execute=True,
    )


def inspect_parameters(path: Path) -> NotebookParameters:
    import papermill

    declared = papermill.inspect_notebook(str(path))
    if not declared:
        raise NbutilsError(f"{path} has no cell tagged 'parameters'",
                           fix="tag the notebook's parameter cell with 'parameters'")
    return NotebookParameters(path=path, declared=declared)


def load_profile(profile: str) -> dict[str, Any]:
    """Read ``params/<profile>.yaml`` (or a path to a YAML file) into a flat dict."""
    path = Path(profile)
    if not path.suffix:
        path = PARAMS_DIR / f"{profile}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in PARAMS_DIR.glob("*.yaml")))
        raise NbutilsError(f"profile {profile!r}: {path} not found", fix=f"use one of: {known}")
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        line = getattr(getattr(err, "problem_mark", None), "line", None)
        raise NbutilsError(f"{path}:{'' if line is None else line + 1} is not valid YAML: {err}") from err
    if not isinstance(values, dict):
        raise NbutilsError(f"{path}: a profile is a flat mapping of key: value")
    nested = [k for k, v in values.items() if isinstance(v, dict)]
    if nested:
        raise NbutilsError(f"{path}: nested sections {nested} are not supported",
                           fix="profiles are flat; prefix stage-specific keys instead")
    return values


def parse_override(text: str) -> tuple[str, Any]:
    """``key=value`` with YAML typing, plus what YAML 1.1 gets wrong: ``1e-5`` is a float."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key.isidentifier():
        raise NbutilsError(f"-p {text!r} is not key=value", fix="write e.g. -p finetune_epochs=3")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    if value in ("", None) and raw.strip()[:1] in ("|", ">", "#"):
        # YAML reads a lone "|" or ">" as an empty block and "#" as a comment; as a value they
        # are meant literally (e.g. -p data_label_delimiter=|)
        value = raw.strip()
    if isinstance(value, str):
        try:
            value = float(value) if re.fullmatch(r"[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+", value) else value
        except ValueError:
            pass
    return key, value


def _plain(value: Any) -> Any:
    """numpy scalars/arrays and tuples -> plain Python, which papermill injects faithfully."""
    if hasattr(value, "item") and not isinstance(value, (list, dict, str)):
        try:
            return value.item()
        except (TypeError, ValueError):
            pass
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def cast_to_declared(notebook: str, name: str, value: Any, type_name: str | None) -> Any:
    """Cast a value to the type the notebook declares, or explain why it cannot be."""
    value = _plain(value)
    base = (type_name or "None").split("[")[0].strip().lower()
    ok = {
        "str": lambda v: isinstance(v, str),
        "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
        "bool": lambda v: isinstance(v, bool),
        "list": lambda v: isinstance(v, list),
        "dict": lambda v: isinstance(v, dict),
    }.get(base)
    if ok is None:  # undeclared type: pass through as given
        return value
    if base == "str" and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)  # e.g. -p model_source=123 -> "123"
    if base == "list" and isinstance(value, str) and "," in value:
        value = [parse_override(f"x={v}")[1] for v in value.split(",")]
    if not ok(value):
        raise NbutilsError(
            f"parameter {name}={value!r} ({type(value).__name__}) does not match "
            f"{notebook}'s declared type {type_name}",
            fix=f"give {name} a {type_name} value in the profile or with -p {name}=...",
        )
    return float(value) if base == "float" else value


def resolve_paths(params: dict[str, Any], root: Path = REPO_ROOT) -> dict[str, Any]:
    """Make relative path parameters absolute (papermill runs the kernel in another folder)."""
    resolved = dict(params)
    for key, value in params.items():
        if not isinstance(value, str) or not value or Path(value).is_absolute():
            continue
        if key.endswith(PATH_SUFFIXES):
            resolved[key] = str((root / value).resolve())
        elif key.endswith(SOURCE_SUFFIX) and (root / value).exists():
            resolved[key] = str((root / value).resolve())
    return resolved


def plan_parameters(
    notebooks: list[NotebookParameters], values: dict[str, Any], run_dir: Path,
    *, known: set[str] | None = None, overwrite: bool = False,
) -> dict[str, dict[str, Any]]:
    """Per notebook, the parameters to inject; a key in no notebook of ``known`` is an error.

    ``known`` is every parameter name of the whole pipeline: a profile is checked against all
    notebooks even when ``--only`` runs a few of them.
    """
    if known is None:
        known = set().union(*(nb.declared for nb in notebooks)) if notebooks else set()
    reserved = sorted(set(values) & RUNNER_PARAMETERS)
    if reserved:
        raise NbutilsError(f"parameter(s) {reserved} are set by the runner, not by a profile or -p",
                           fix="use --run-dir for run_dir and --overwrite for overwrite; headless is always True")
    renamed = sorted(set(values) & set(RENAMED_PARAMETERS))
    if renamed:
        raise NbutilsError(
            "renamed parameter(s): " + "; ".join(
                f"{old} is now {RENAMED_PARAMETERS[old][0]} ({RENAMED_PARAMETERS[old][1]})" for old in renamed),
            fix="use the new name(s) in your profile (params/*.yaml) or -p override",
        )
    unknown = sorted(set(values) - known - RUNNER_PARAMETERS)
    if unknown:
        raise NbutilsError(
            f"unknown parameter(s) {unknown}: no notebook declares them",
            fix="check the spelling against the notebooks' parameters cells",
        )
    values = resolve_paths(values)
    plan: dict[str, dict[str, Any]] = {}
    for nb in notebooks:
        injected: dict[str, Any] = {}
        for name, spec in nb.declared.items():
            if name == "run_dir":
                injected[name] = str(run_dir)
            elif name == "headless":
                injected[name] = True
            elif name == "overwrite":
                injected[name] = bool(overwrite)
            elif name in values:
                injected[name] = cast_to_declared(nb.name, name, values[name],
                                                  spec.get("inferred_type_name"))
        plan[nb.name] = injected
    return plan


def new_run_dir(profile: str, runs_dir: Path = RUNS_DIR) -> Path:
    """``runs/<YYYYmmdd-HHMMSS>-<profile>``, created exclusively (a suffix if taken)."""
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    label = re.sub(r"[^A-Za-z0-9_.-]", "_", Path(profile).stem)
    runs_dir.mkdir(parents=True, exist_ok=True)
    for attempt in range(1, 1000):
        path = runs_dir / (f"{stamp}-{label}" if attempt == 1 else f"{stamp}-{label}-{attempt}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise NbutilsError(f"could not create a new run directory under {runs_dir}")


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"],
                             capture_output=True, text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO_ROOT), "status", "--porcelain"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return out + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def _package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in MANIFEST_PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def _device_description() -> str:
    try:
        import torch
    except ImportError:
        return f"{platform.processor() or platform.machine()} (torch not installed)"
    if torch.cuda.is_available():
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        return f"{len(names)} x CUDA: " + ", ".join(names)
    return f"CPU: {platform.machine()}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}"


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _clean(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", text or "")


def describe_failure(err: BaseException, notebook: str, executed: Path) -> str:
    """One readable block: which notebook, which cell, what went wrong, where to look."""
    cell = getattr(err, "cell_index", None)
    count = getattr(err, "exec_count", None)
    ename = getattr(err, "ename", type(err).__name__)
    evalue = _clean(getattr(err, "evalue", str(err)))
    where = f"cell {cell}" if cell is not None else "before any cell ran"
    if count is not None:
        where += f" (execution count {count})"
    lines = [f"FAILED {notebook}, {where}", f"  {ename}: {evalue}"]
    source = _failing_line(getattr(err, "traceback", None) or [], count) or _cell_source(executed, count)
    if source:
        lines.insert(1, f"  in: {source}")
    traceback = getattr(err, "traceback", None) or []
    tail = [line for line in _clean("\n".join(traceback)).splitlines() if line.strip()][-6:]
    if tail and ename != "NbutilsError":
        lines += ["  traceback (last lines):"] + [f"    {line}" for line in tail]
    lines.append(f"  executed notebook kept at {executed}")
    return "\n".join(lines)


def _failing_line(traceback: list[str], exec_count: int | None) -> str:
    """The cell's line that raised, from IPython's traceback ("Cell In[7], line 12" + an arrow)."""
    text = _clean("\n".join(traceback))
    lines = text.splitlines()
    for i, line in enumerate(lines):
        match = re.search(r"Cell In\[(\d+)\], line (\d+)", line)
        if not match or (exec_count is not None and int(match.group(1)) != exec_count):
            continue
        # the frame's code follows, the failing line marked with "---->" (the first frame in the
        # cell is the cell's own statement: the call that failed, not a line inside a function)
        for code in lines[i + 1:]:
            arrow = re.match(r"\s*-+>\s*\d+\s?(.*)", code)
            if arrow:
                return arrow.group(1).strip()[:120]
            if re.search(r"Cell In\[|File ", code):
                break
    return ""


def _cell_source(executed: Path, exec_count: int | None) -> str:
    """The failing cell's first code line, so the reader can find it without opening Jupyter."""
    if exec_count is None or not executed.is_file():
        return ""
    try:
        import nbformat

        cells = nbformat.read(executed, as_version=4).cells
    except (OSError, ValueError):
        return ""
    # found by execution count: papermill adds an error banner cell that shifts indices
    source = next((c.source for c in cells if c.get("execution_count") == exec_count), "")
    first = next((line for line in source.splitlines() if line.strip()
                  and not line.lstrip().startswith("#")), "")
    return first.strip()[:120]


class RunFailed(NbutilsError):
    pass


def run_pipeline(
    profile: str,
    overrides: dict[str, Any] | None = None,
    *,
    only: str | None = None,
    run_dir: str | Path | None = None,
    cell_timeout: int = 4 * 3600,
    notebook_dir: Path | None = None,
    runs_dir: Path | None = None,
    overwrite: bool = False,
    log=print,
) -> Path:
    """Execute the selected notebooks into a run directory and return its path.

    ``overwrite`` is passed to notebooks that declare an ``overwrite`` parameter (01, 03, 04, 05):
    with it a re-entry (``only``) may replace that stage's finished results.
    """

    notebook_dir = notebook_dir or NOTEBOOK_DIR
    runs_dir = runs_dir or RUNS_DIR

    every_notebook = discover_notebooks(notebook_dir)
    notebooks = select_notebooks(every_notebook, only)
    if not notebooks:
        raise NbutilsError(f"no numbered notebooks found in {notebook_dir}")
    values = {**load_profile(profile), **(overrides or {})}
    # Before torch loads here (device description) and before any kernel starts: the kernels
    # inherit the thread policy's environment, OMP_NUM_THREADS where torch_threads asks, and for
    # long articles torch's huge pages (each notebook's first cell applies the rest in its kernel).
    configure_process(torch_threads=values.get("torch_threads") or 0,
                      max_length=longest_max_length(values), quiet=True)
    inspected = [inspect_parameters(p) for p in notebooks]
    known = set().union(*(inspect_parameters(p).declared for p in every_notebook))

    if run_dir is None:
        root = new_run_dir(profile, runs_dir)
    else:
        root = Path(run_dir).resolve()
        if root.exists() and not root.is_dir():
            raise NbutilsError(f"--run-dir {root} is a file, not a folder", fix="pass a run directory")
        non_empty = root.is_dir() and any(root.iterdir())
        if non_empty and only is None:
            raise NbutilsError(
                f"{root} already exists; a run directory is never overwritten",
                fix="omit --run-dir for a new run, or add --only NN to (re)run stages in it",
            )
        if non_empty and not RunPaths(root).manifest.is_file():
            # --only re-enters a run; it must not scatter notebooks/ and manifest.json into
            # some other folder (a dataset, the repository...)
            raise NbutilsError(f"{root} is not a run directory (it has files but no manifest.json)",
                               fix="pass a folder made by `nbutils run` (runs/<timestamp>-<profile>), "
                                   "or an empty or new folder")
        root.mkdir(parents=True, exist_ok=True)
    paths = RunPaths(root)
    try:
        plan = plan_parameters(inspected, values, root, known=known, overwrite=overwrite)
    except NbutilsError:
        if run_dir is None:
            root.rmdir()  # nothing was written: do not leave an empty run behind
        raise
    from nbutils.pipeline.runlock import RunLock

    # the kernels inherit NBUTILS_ENTRY=run: their errors name -p parameters (nbutils.core.errors)
    with RunLock(root), entered_through("run"):
        return _execute(inspected, plan, paths, profile, values, cell_timeout, log)


def _execute(inspected, plan, paths: RunPaths, profile: str, values: dict,
             cell_timeout: int, log) -> Path:
    """The run itself; the caller holds the run directory's lock."""
    root = paths.root
    paths.notebooks.mkdir(exist_ok=True)
    manifest = _load_or_new_manifest(paths, profile, values)
    reentry = manifest["reentries"][-1] if manifest.get("reentries") else None
    before = manifest.get("status")  # a re-entry never turns a finished run into a failed one
    # the notebooks this run executes (a re-entry adds its own): the report counts them
    manifest["planned"] = list(dict.fromkeys([*manifest.get("planned", []), *(nb.name for nb in inspected)]))
    if reentry is None:
        manifest["status"] = "running"
    else:
        reentry["status"] = "running"
        if before != "ok":
            manifest["status"] = "running"
    write_json(paths.manifest, manifest)
    log(f"run directory: {root}")
    log(f"device: {manifest['device']}")
    log(current_policy().describe())
    log(f"load average (1, 5, 15 min) at start: {manifest['load_average']['start']}")
    started = time.monotonic()

    def finish(status: str) -> None:
        if reentry is None or before != "ok":
            manifest["status"] = status
        manifest["ended"] = _now()
        manifest.setdefault("load_average", {})["end"] = machine_load()
        # what the thread governor did in each training (its full schedule: each metrics.json)
        manifest["thread_schedules"] = thread_schedules(root)
        if reentry is not None:
            reentry.update(status=status, ended=_now())
        write_json(paths.manifest, manifest)

    for index, nb in enumerate(inspected, 1):
        executed = _fresh_output_path(paths.notebooks / nb.path.name)
        entry = {"name": nb.name, "status": "running", "started": _now(),
                 "executed_path": str(executed.relative_to(root)), "parameters": plan[nb.name]}
        manifest["notebooks"].append(entry)
        write_json(paths.manifest, manifest)
        log(f"[{index}/{len(inspected)}] {nb.name} ... (run elapsed {time.monotonic() - started:.0f} s)")
        t0 = time.monotonic()
        try:
            execute_notebook(nb.path, executed, plan[nb.name], timeout=cell_timeout,
                             progress_bar=sys.stderr.isatty())
        except BaseException as err:  # noqa: BLE001 - record every way a notebook can stop
            interrupted = isinstance(err, (KeyboardInterrupt, SystemExit))
            status = "interrupted" if interrupted else "failed"
            entry.update(status=status, duration_s=round(time.monotonic() - t0, 2),
                         error=f"{getattr(err, 'ename', type(err).__name__)}: "
                               f"{_clean(getattr(err, 'evalue', str(err)))}")
            finish(status)
            if interrupted:
                raise
            raise RunFailed(describe_failure(err, nb.name, executed)) from err
        entry.update(status="ok", duration_s=round(time.monotonic() - t0, 2))
        _record_parameters(manifest, reentry, plan[nb.name])
        manifest["thread_schedules"] = thread_schedules(root)  # so far: the report notebook shows them
        write_json(paths.manifest, manifest)
        log(f"      ok in {entry['duration_s']:.1f} s")
    finish("ok")
    log(f"load average (1, 5, 15 min) at the end: {manifest['load_average']['end']}")
    log(f"done in {time.monotonic() - started:.0f} s: {root}")
    return root


def _record_parameters(manifest: dict, reentry: dict | None, injected: dict[str, Any]) -> None:
    """After a notebook of a re-entry succeeds, the run's parameter table shows the values it ran
    with (the report reads this table); the values they replaced go into the re-entry record."""
    if reentry is None:
        return
    table = manifest.setdefault("parameters", {})
    for name, value in injected.items():
        if name in RUNNER_PARAMETERS:
            continue
        value = _plain(value)
        if name in table and table[name] != value:
            reentry.setdefault("replaced", {}).setdefault(name, table[name])
        table[name] = value


def _fresh_output_path(path: Path) -> Path:
    """Never overwrite an executed notebook: a re-run gets ``name.2.ipynb``, ``name.3.ipynb``..."""
    if not path.exists():
        return path
    for n in range(2, 10_000):
        candidate = path.with_name(f"{path.stem}.{n}{path.suffix}")
        if not candidate.exists():
            return candidate
    raise NbutilsError(f"too many executions of {path.name} in {path.parent}")


def _load_or_new_manifest(paths: RunPaths, profile: str, values: dict[str, Any]) -> dict:
    if paths.manifest.exists():
        from nbutils.core.io import read_json

        try:
            manifest = read_json(paths.manifest)
        except ValueError as err:
            raise NbutilsError(f"{paths.manifest} is not valid JSON ({err})",
                               fix="restore it from a backup, or run the stages into a new run directory") from None
        manifest.setdefault("notebooks", [])
        if manifest.get("status") == "running":
            # We hold the lock, so the runner that wrote "running" is dead (SIGKILL, power cut).
            for stale in manifest["notebooks"]:
                if stale.get("status") == "running":
                    stale.update(status="interrupted", error="the runner stopped without finishing (killed?)")
            manifest["status"] = "interrupted"
        manifest.setdefault("reentries", []).append(
            {"at": _now(), "profile": profile, "parameters": _plain(values),
             "threads": current_policy().as_dict(), "load_average_start": machine_load()})
        # The latest (re)entry's machine state: what the stages run now will see.
        manifest["load_average"] = {"start": machine_load(), "end": None, "cpus": os.cpu_count()}
        return manifest
    from nbutils.core.run_contract import SCHEMA_VERSION

    return {
        "run_schema_version": SCHEMA_VERSION,  # the nbutils/core/run_contract.py this run follows
        "profile": profile,
        "parameters": _plain(values),
        "git_commit": _git_commit(),
        "packages": _package_versions(),
        "device": _device_description(),
        # How torch uses the CPU (nbutils.runtime.threads) and how busy the machine was: a run on a
        # loaded machine is slower, and the reader should be able to tell.
        "threads": current_policy().as_dict(),
        "load_average": {"start": machine_load(), "end": None, "cpus": os.cpu_count()},
        "host": platform.node(),
        "started": _now(),
        "ended": None,
        "status": "running",
        "notebooks": [],
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nbutils run",
        description="Execute the numbered notebooks headless with papermill into a new run directory.",
    )
    parser.add_argument("--profile", default="demo",
                        help="smoke | demo | full, or a path to a YAML profile (default: demo)")
    parser.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE",
                        help="override a profile parameter (YAML-typed: 3, 1e-5, true, [1,2], text)")
    parser.add_argument("--only", help="run only these notebooks: 04, 1,4 or 02-04")
    parser.add_argument("--run-dir", help="run directory (default: runs/<timestamp>-<profile>)")
    parser.add_argument("--overwrite", action="store_true",
                        help="with --only: let stages that already finished (03, 04, 05) replace their results")
    parser.add_argument("--cell-timeout", type=int, default=4 * 3600,
                        help="seconds one cell may run before the run fails (default 4 h)")
    return parser


def _exit_on_sigterm(signum, frame):
    # `kill`/timeout send SIGTERM: unwind like Ctrl-C so the kernel is shut down and the
    # manifest says "interrupted" instead of "running" forever.
    raise SystemExit(128 + signum)


def main(argv: list[str]) -> int:
    import signal

    args = build_parser().parse_args(argv)
    overrides = dict(parse_override(p) for p in args.param)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    if hasattr(signal, "SIGHUP"):  # a closed terminal or ssh session: the same orderly stop
        signal.signal(signal.SIGHUP, _exit_on_sigterm)
    try:
        run_pipeline(args.profile, overrides, only=args.only, run_dir=args.run_dir,
                     cell_timeout=args.cell_timeout, overwrite=args.overwrite)
    except RunFailed as err:
        print(f"\n{err}", file=sys.stderr)
        return 1
    return 0
