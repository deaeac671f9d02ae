"""Notebook 04's stage object (nbutils.stages.finetune): parameters, interrupts, what it shows.

The whole stage runs in the notebook tests (tests/test_e2e_smoke.py through `nbutils run`, the
JupyterLab check in tests/test_browser.py); here each piece of its own logic runs alone, without
training a model.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from nbutils.core.errors import NbutilsError
from nbutils.core.paths import RunPaths
from nbutils.stages import finetune as stage_module
from nbutils.stages.finetune import PARAMETERS, Finetuning, interrupted, training_lines
from nbutils.stages.parameters import require

TRAIN = {"steps": 80, "runtime_s": 12.4, "samples_per_second": 103.2, "step_samples_per_second": 140.5,
         "world_size": 1, "best_dev_macro_f1": 0.81234, "peak_memory_mb": 812.0, "peak_memory_kind": "RSS",
         "trainable_params": 1234567}


def _stage(tmp_path: Path, **params) -> Finetuning:
    values = {name: None for name in PARAMETERS} | {"finetune_num_gpus": 1, "headless": True} | params
    return Finetuning(values, RunPaths(tmp_path / "run"), "model", config=None, teacher=None, dataset=None)


def test_open_names_the_parameters_the_namespace_lacks():
    params = {name: "" for name in PARAMETERS if name not in ("data_dir", "seed")}
    with pytest.raises(NbutilsError, match="04_finetune: no parameter data_dir, seed") as err:
        require(params, PARAMETERS, "04_finetune")
    assert "globals()" in str(err.value)
    require({name: "" for name in PARAMETERS}, PARAMETERS, "04_finetune")  # all there: no error


def test_training_lines_say_steps_speed_score_and_memory():
    lines = training_lines(TRAIN).splitlines()
    assert lines[0] == ("trained 80 steps in 12 s (103.2 samples/s with evaluations, 140.5 in the optimizer "
                        "steps alone, 1 process(es)); best dev macro-F1 0.8123")
    assert lines[1] == "peak memory: 812 MB (RSS); trainable parameters: 1,234,567"
    resumed_without_steps = training_lines(TRAIN | {"step_samples_per_second": None})
    assert "optimizer steps alone" not in resumed_without_steps


def test_the_interrupt_names_the_checkpoint_a_rerun_resumes_from(tmp_path):
    paths = RunPaths(tmp_path / "run")
    assert "before its first checkpoint" in str(interrupted(paths))
    for step in (20, 40):
        checkpoint = paths.finetune / "checkpoints" / f"checkpoint-{step}"
        checkpoint.mkdir(parents=True)
        (checkpoint / "trainer_state.json").write_text("{}", encoding="utf-8")
    message = str(interrupted(paths))
    assert isinstance(interrupted(paths), KeyboardInterrupt)
    assert "resumes from finetune/checkpoints/checkpoint-" in message, message


def test_train_turns_an_interrupt_into_one_without_the_training_frames(tmp_path, monkeypatch):
    stage = _stage(tmp_path)

    def stopped(curves_png, overwrite):
        raise KeyboardInterrupt

    monkeypatch.setattr(stage, "_train_here", stopped)
    with pytest.raises(KeyboardInterrupt, match="fine-tuning interrupted") as err:
        stage.train(overwrite=False)
    assert err.value.__suppress_context__  # shown without the training loop's frames
    assert stage.metrics is None


def test_sections_after_training_need_the_training_first(tmp_path):
    stage = _stage(tmp_path)
    for section in (stage.show_scores, stage.show_confusion, stage.show_mistakes, stage.show_calibration):
        with pytest.raises(NbutilsError, match="run the Train cell"):
            section()


def test_train_shows_the_curves_headless_and_prints_how_it_went(tmp_path, monkeypatch, capsys):
    stage = _stage(tmp_path, headless=True)
    shown = []

    def trained(curves_png, overwrite):
        stage.metrics = {"train": TRAIN}
        assert overwrite is True and curves_png == stage.paths.figure("finetune", "curves")

    monkeypatch.setattr(stage, "_train_here", trained)
    monkeypatch.setattr(stage_module, "display", shown.append)
    monkeypatch.setattr(stage_module, "Image", lambda filename: filename)
    assert stage.train(overwrite=True) == {"train": TRAIN}
    assert shown == [str(stage.paths.figure("finetune", "curves"))]
    assert "trained 80 steps" in capsys.readouterr().out


# The interrupt as IPython shows it. IPython formats every frame of a traceback from its source
# file (stack_data, executing); when a file changed on disk after the kernel imported it, a frame's
# line can fall on a blank line there, and IPython prints its own formatting error
# (executing.NotOneValueFound) instead of the KeyboardInterrupt. The control shows that happening;
# through the stage only the cell's and train()'s frames are formatted.
SHELL = textwrap.dedent("""
    import importlib, io, contextlib, re, sys
    from pathlib import Path
    sys.path.insert(0, {folder!r})
    import deep_loop
    module = Path(deep_loop.__file__)
    module.write_text("\\n" + module.read_text())  # changed on disk after the import
    from IPython.core.interactiveshell import InteractiveShell
    from nbutils.core.paths import RunPaths
    from nbutils.stages.finetune import Finetuning
    stage = Finetuning({{"finetune_num_gpus": 1, "headless": True}}, RunPaths({run!r}), "m", None, None, None)
    stage._train_here = lambda curves_png, overwrite: deep_loop.step()
    shell = InteractiveShell.instance()
    shell.user_ns.update(stage=stage, deep_loop=deep_loop)
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        shell.run_cell({cell!r})
    print(re.sub(r"\\x1b\\[[0-9;]*m", "", out.getvalue()))
""")
DEEP = "def step():\n    x = 1\n\n    raise KeyboardInterrupt\n"


@pytest.mark.parametrize("cell", ["stage.train(overwrite=True)", "deep_loop.step()"])
def test_ipython_shows_the_interrupt_through_the_stage(tmp_path, cell):
    (tmp_path / "deep_loop.py").write_text(DEEP, encoding="utf-8")
    code = SHELL.format(folder=str(tmp_path), run=str(tmp_path / "run"), cell=cell)
    shown = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                           cwd=tmp_path).stdout
    if cell.startswith("stage"):
        assert "NotOneValueFound" not in shown and "Unexpected exception formatting" not in shown, shown
        assert shown.rstrip().splitlines()[-1].startswith("KeyboardInterrupt: fine-tuning interrupted"), shown
    else:  # the control: the same stale frame formatted directly
        assert "NotOneValueFound" in shown, shown
