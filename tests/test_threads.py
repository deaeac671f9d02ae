"""The CPU thread policy (nbutils.runtime.threads) reaches OpenMP wherever torch runs.

OpenMP reads its settings once, when torch loads, so "the policy is in os.environ" is not
enough: each path is checked in a fresh process with ``OMP_DISPLAY_ENV=VERBOSE``, which makes
libgomp print the settings it actually took (``OMP_NUM_THREADS = '1'``) when torch loads.
The processes start from an environment without the policy's variables, as a JupyterLab kernel
or a user's shell does. The policy's pool size is every usable CPU, libgomp's own default, so
where that alone cannot tell the policy from no policy, the checks look for the policy's marker
(which tells child processes the count is the policy's, so their training governor runs) and for
a pinned count (OMP_NUM_THREADS / torch_threads: no governor).
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from nbutils.core.errors import NbutilsError
from nbutils.core.paths import REPO_ROOT
from nbutils.pipeline.runner import discover_notebooks
from nbutils.runtime import threads

POLICY_VARIABLES = ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY", "OMP_NUM_THREADS", "MKL_CBWR", threads.SWITCH, threads.MARKER)
NUMERICS = {"MKL_CBWR": "AUTO,STRICT"}  # nbutils.runtime.invariant: MKL's reproducible mode, always
EFFECTIVE = re.compile(r"OMP_NUM_THREADS = '(\d+)'")
POLICY = threads.policy_threads()
DEFAULT = threads.usable_cpus()  # libgomp's own count: one thread per usable CPU


def clean_env(**extra: str) -> dict[str, str]:
    """The environment of a process nobody prepared: no thread settings; libgomp shows its own."""
    env = {k: v for k, v in os.environ.items() if k not in POLICY_VARIABLES}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    return {**env, "OMP_DISPLAY_ENV": "VERBOSE", **extra}


def effective_threads(stderr: str) -> list[int]:
    """Every thread count libgomp reported (one per process that loaded torch)."""
    return [int(x) for x in EFFECTIVE.findall(stderr)]


def run(cmd: list[str], env: dict[str, str], timeout: int = 120) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc


def test_policy_adds_only_what_the_user_left_unset():
    # adaptive (the default): the whole pool, the governor picks the count; fixed: all CPUs but one
    assert threads.policy_threads(2, "fixed") == 1 and threads.policy_threads(1, "fixed") == 1
    assert threads.policy_threads(16, "fixed") == 15
    assert threads.policy_threads(2) == 2 and threads.policy_threads(16) == 16 and threads.policy_threads(1) == 1
    assert threads.policy_environment({}, cpus=2) == {"OMP_NUM_THREADS": "2", threads.MARKER: "2"}
    assert threads.policy_environment({threads.SWITCH: "fixed"}, cpus=2) == {"OMP_NUM_THREADS": "1",
                                                                             threads.MARKER: "1"}
    assert threads.policy_environment({"OMP_NUM_THREADS": "2"}, cpus=2) == {}
    assert threads.policy_environment({threads.SWITCH: "off"}, cpus=2) == {}
    with pytest.raises(NbutilsError, match="adaptive .*fixed .*off"):
        threads.policy_environment({threads.SWITCH: "fast"}, cpus=2)
    env = {"OMP_NUM_THREADS": "3"}
    policy = threads.apply_thread_policy(env)
    assert env == {"OMP_NUM_THREADS": "3", **NUMERICS}
    assert (policy.threads, policy.source) == (3, "OMP_NUM_THREADS") and "OMP_NUM_THREADS" in policy.reason
    assert not policy.adaptive and "bit-identical" in policy.reason  # pinned: no governor
    env = {"MKL_CBWR": "AVX2"}
    threads.apply_thread_policy(env)
    assert env["MKL_CBWR"] == "AVX2"
    env_fixed = {threads.SWITCH: "fixed"}
    policy = threads.apply_thread_policy(env_fixed)
    assert (policy.threads, policy.source, policy.mode) == (threads.policy_threads(mode="fixed"), "policy", "fixed")
    assert not policy.adaptive and "left free" in policy.reason
    env = {}
    adaptive = threads.apply_thread_policy(env)
    assert adaptive.mode == "adaptive" and adaptive.adaptive == (DEFAULT > 1) and adaptive.threads == DEFAULT
    if adaptive.adaptive:
        assert "fewer while other processes compete" in adaptive.reason
        assert "bit-identical quiet or busy" in adaptive.reason
        assert adaptive.describe(DEFAULT).startswith(f"CPU threads: adaptive 1-{DEFAULT} (now {DEFAULT}) of {DEFAULT}")
    # a child process that inherited the policy's count still knows it is the policy's
    assert threads.apply_thread_policy(dict(env)).source == "policy"
    assert threads.apply_thread_policy(dict(env)).adaptive == adaptive.adaptive
    assert threads.apply_thread_policy(dict(env_fixed)).source == "policy"
    # ... unless torch_threads / the user changed the count (the marker no longer matches)
    assert threads.apply_thread_policy({**env, "OMP_NUM_THREADS": "7"}).source == "OMP_NUM_THREADS"


@pytest.mark.skipif(DEFAULT < 2, reason="on one CPU the policy and libgomp's default agree")
def test_without_the_policy_libgomp_uses_every_cpu():
    # the baseline the other tests compare against: torch loaded by a process that has not
    # imported nbutils keeps libgomp's default
    proc = run([sys.executable, "-c", "import torch"], clean_env())
    assert effective_threads(proc.stderr) == [DEFAULT]


def test_cli_applies_the_policy_before_torch_loads():
    # `python -m nbutils.cli` is what the `nbutils` console script runs (nbutils.cli:main)
    proc = run([sys.executable, "-m", "nbutils.cli", "threads"], clean_env())
    assert effective_threads(proc.stderr) == [POLICY]
    assert "device:" in proc.stdout and "CPU threads: " in proc.stdout
    shown = json.loads(proc.stdout.strip().splitlines()[-1])
    assert shown["applied_before_torch"] is True and shown["torch_threads"] == POLICY
    assert shown["source"] == "policy" and shown["set_here"] == {"OMP_NUM_THREADS": str(POLICY),
                                                                 threads.MARKER: str(POLICY), **NUMERICS}
    assert shown["mode"] == "adaptive" and shown["policy"] == ("adaptive" if POLICY > 1 else "fixed")
    assert "CPU threads: " + (f"adaptive 1-{POLICY} (now {POLICY})" if POLICY > 1 else "1") in proc.stdout
    assert len(shown["load_average"]) == 3


@pytest.mark.skipif(DEFAULT < 2, reason="on one CPU the policy and libgomp's default agree")
def test_omp_num_threads_overrides():
    proc = run([sys.executable, "-m", "nbutils.cli", "threads"], clean_env(OMP_NUM_THREADS="1"))
    assert effective_threads(proc.stderr) == [1]
    shown = json.loads(proc.stdout.strip().splitlines()[-1])
    assert shown["torch_threads"] == 1 and shown["source"] == "OMP_NUM_THREADS" and shown["policy"] == "fixed"
    assert "CPU threads: 1 of" in proc.stdout and "bit-identical" in proc.stdout


@pytest.mark.skipif(DEFAULT < 2, reason="on one CPU the policy and libgomp's default agree")
def test_the_switch_turns_the_policy_off():
    proc = run([sys.executable, "-m", "nbutils.cli", "threads"], clean_env(**{threads.SWITCH: "off"}))
    assert effective_threads(proc.stderr) == [DEFAULT]
    shown = json.loads(proc.stdout.strip().splitlines()[-1])
    assert (shown["source"], shown["policy"], shown["set_here"]) == ("off", "fixed", NUMERICS)


@pytest.mark.skipif(DEFAULT < 2, reason="on one CPU the policy and libgomp's default agree")
def test_torch_loaded_first_is_recorded():
    # torch loaded before the policy is applied keeps libgomp's count: the record says so and how to fix it
    code = ("import torch, nbutils.runtime.threads as t; p = t.apply_thread_policy(); "
            "print(p.reason); print(p.applied_before_torch, t.governor_threads(), torch.get_num_threads())")
    proc = run([sys.executable, "-c", code], clean_env(**{threads.SWITCH: "fixed"}))
    assert effective_threads(proc.stderr) == [DEFAULT]
    assert proc.stdout.split()[-3:] == ["False", "None", str(DEFAULT)] and "configure_process() before anything imports torch" in proc.stdout
    # the adaptive pool (the default) is libgomp's default count, so there it only shows in the record
    proc = run([sys.executable, "-c", code], clean_env())
    assert proc.stdout.split()[-3:] == ["False", str(DEFAULT), str(DEFAULT)]


def _setup_statements(source: str) -> str:
    """A notebook cell's top-level imports and its ``configure_process(...)`` call, in order."""
    tree = ast.parse(source)
    keep = [node for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))
            or (isinstance(node, ast.Expr) and isinstance(node.value, ast.Call)
                and getattr(node.value.func, "id", "") == "configure_process")]
    return "\n".join(ast.get_source_segment(source, node) for node in keep)


@pytest.mark.slow  # one fresh interpreter per notebook (~5 s each on a quiet 2-core CPU)
@pytest.mark.parametrize("path", discover_notebooks(), ids=lambda p: p.stem)
def test_notebooks_apply_the_policy_before_torch(path: Path):
    """A JupyterLab kernel starts without the policy: each notebook's first code cell applies it
    (``configure_process``) before anything loads torch (``from transformers import AutoConfig``
    does), so that torch and any process the notebook starts run under it (the marker says so)."""
    nb = nbformat.read(path, as_version=4)
    cells = [c for c in nb.cells if c.cell_type == "code"]
    first = next(i for i, c in enumerate(cells) if "parameters" in c.metadata.get("tags", [])) + 1
    assert "configure_process(" in cells[first].source, f"{path.name}: the first code cell applies no policy"
    setup = "\n".join(_setup_statements(c.source) for c in cells[first:])
    check = ("\nimport os\nimport torch, nbutils.runtime.threads as t\n"
             "print(t.current_policy().applied_before_torch, os.environ.get(t.MARKER))")
    proc = run([sys.executable, "-c", cells[first - 1].source + "\n" + setup + check], clean_env(), timeout=180)
    assert effective_threads(proc.stderr) == [POLICY]
    assert proc.stdout.split()[-2:] == ["True", str(POLICY)], f"{path.name} loads torch before the policy"


def test_importing_nbutils_changes_nothing_in_the_process():
    """Every subpackage imports without touching the environment; only entry points apply settings."""
    import pkgutil

    import nbutils

    names = [m.name for m in pkgutil.walk_packages(nbutils.__path__, "nbutils.") if m.ispkg]
    assert {"nbutils.core", "nbutils.runtime", "nbutils.data", "nbutils.training"} <= set(names)
    code = ("import os; before = dict(os.environ); import " + ", ".join(names) +
            "; print(os.environ.get('MKL_CBWR'), os.environ.get('OMP_NUM_THREADS'), dict(os.environ) == before)")
    proc = run([sys.executable, "-c", code], clean_env())
    assert proc.stdout.split()[-3:] == ["None", "None", "True"], proc.stdout + proc.stderr


@pytest.mark.slow  # starts a kernel
def test_runner_kernels_inherit_the_policy_and_torch_threads(tmp_path: Path):
    """The kernel imports torch without nbutils: it can only have the settings from the runner."""
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('run_dir: str = ""  # out\nheadless: bool = False  # papermill\n'
                                       'torch_threads: int = 0  # threads')
    params.metadata["tags"] = ["parameters"]
    probe = ("import json, os, pathlib, torch\n"
             "environ = dict(kv.split('=', 1) for kv in pathlib.Path('/proc/self/environ').read_text().split('\\0') if '=' in kv)\n"
             "pathlib.Path(run_dir, 'probe.json').write_text(json.dumps({'threads': torch.get_num_threads(), "
             "'omp_num_threads_at_start': environ.get('OMP_NUM_THREADS')}))")
    nb.cells = [params, nbformat.v4.new_code_cell(probe)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, notebooks / "01_probe.ipynb")
    profile = tmp_path / "p.yaml"
    profile.write_text("torch_threads: 1\n")  # a pinned count, not the policy's pool: it reaches the kernel
    script = (f"from nbutils.pipeline.runner import run_pipeline; print(run_pipeline({str(profile)!r}, "
              f"notebook_dir=__import__('pathlib').Path({str(notebooks)!r}), "
              f"runs_dir=__import__('pathlib').Path({str(tmp_path / 'runs')!r})))")
    proc = run([sys.executable, "-c", script], clean_env(), timeout=180)
    run_dir = Path(proc.stdout.strip().splitlines()[-1])
    probe_out = json.loads((run_dir / "probe.json").read_text())
    assert probe_out == {"threads": 1, "omp_num_threads_at_start": "1"}
    # runner and kernel both loaded torch, both with the count asked for
    assert effective_threads(proc.stderr) == [1, 1]
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["threads"]["source"] == "torch_threads" and manifest["threads"]["torch_threads"] == 1
    assert manifest["threads"]["policy"] == "fixed" and manifest["thread_schedules"] == {}  # nothing trained
    load = manifest["load_average"]
    assert len(load["start"]) == 3 and len(load["end"]) == 3 and load["cpus"] == os.cpu_count()
    assert "CPU threads:" in proc.stdout and "load average" in proc.stdout


@pytest.mark.slow  # starts a kernel
def test_runner_kernels_get_the_policy(tmp_path: Path):
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('run_dir: str = ""  # out\nheadless: bool = False  # papermill')
    params.metadata["tags"] = ["parameters"]
    probe = ("import os, pathlib, torch\n"
             f"pathlib.Path(run_dir, 'marker').write_text(os.environ.get({threads.MARKER!r}, 'none'))")
    nb.cells = [params, nbformat.v4.new_code_cell(probe)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, notebooks / "01_torch.ipynb")
    profile = tmp_path / "p.yaml"
    profile.write_text("{}\n")
    script = (f"from pathlib import Path; from nbutils.pipeline.runner import run_pipeline; "
              f"run_pipeline({str(profile)!r}, notebook_dir=Path({str(notebooks)!r}), runs_dir=Path({str(tmp_path)!r}))")
    proc = run([sys.executable, "-c", script], clean_env(), timeout=180)
    assert effective_threads(proc.stderr) == [POLICY, POLICY]  # the runner, then the kernel
    # the kernel knows its count is the policy's, so its training governor runs
    assert [p.read_text() for p in tmp_path.glob("*/marker")] == [str(POLICY)]


def test_torch_threads_must_be_a_count():
    with pytest.raises(NbutilsError, match="torch_threads"):
        threads.use_torch_threads(-1)
    with pytest.raises(NbutilsError, match="torch_threads"):
        threads.use_torch_threads(True)


def test_torchrun_workers_apply_the_policy_and_share_the_cpus(monkeypatch):
    # a torchrun worker is `python -m nbutils.cli train ...` (nbutils.training.launch.torchrun_command)
    proc = run([sys.executable, "-m", "nbutils.cli", "train", "--help"], clean_env())
    assert effective_threads(proc.stderr) == [POLICY]
    # launched from a process under the policy, the ranks split its count between them
    import nbutils.training.launch as train

    monkeypatch.setattr(threads, "_applied", threads.ThreadPolicy(threads=7, source="policy", cpus=8,
                                                                  applied_before_torch=True))
    seen = {}

    class FakePopen:
        def __init__(self, cmd, env, **kwargs):
            seen.update(env)
            self.stdout = iter(())

        def wait(self):
            return 0

    monkeypatch.setattr(train.subprocess, "Popen", FakePopen)
    train.launch_distributed(2, ["--help"])
    assert seen["OMP_NUM_THREADS"] == "3"  # 7 policy threads // 2 ranks
    # a count the user chose is passed on as it is
    monkeypatch.setattr(threads, "_applied", threads.ThreadPolicy(threads=4, source="OMP_NUM_THREADS", cpus=8,
                                                                  applied_before_torch=True))
    monkeypatch.setenv("OMP_NUM_THREADS", "4")
    train.launch_distributed(2, ["--help"])
    assert seen["OMP_NUM_THREADS"] == "4"
