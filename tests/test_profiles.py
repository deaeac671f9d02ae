"""Profiles and notebooks agree: every key is declared by a notebook, with a matching type."""

from __future__ import annotations

import nbformat
import pytest

from nbutils.core.paths import REPO_ROOT
from nbutils.pipeline.runner import (
    NOTEBOOK_DIR,
    PARAMS_DIR,
    PATH_SUFFIXES,
    RUNNER_PARAMETERS,
    discover_notebooks,
    inspect_parameters,
    load_profile,
    plan_parameters,
)

NOTEBOOKS = discover_notebooks()
PROFILES = sorted(p.stem for p in PARAMS_DIR.glob("*.yaml"))


def test_the_three_profiles_exist():
    assert {"smoke", "demo", "full"} <= set(PROFILES)


@pytest.mark.parametrize("profile", PROFILES)
def test_profile_keys_match_notebook_parameters(profile, tmp_path):
    inspected = [inspect_parameters(p) for p in NOTEBOOKS]
    # raises on a key no notebook declares or a value of the wrong type
    plan = plan_parameters(inspected, load_profile(profile), tmp_path)
    for nb in inspected:
        assert plan[nb.name]["run_dir"] == str(tmp_path)
        assert plan[nb.name]["headless"] is True
        if "overwrite" in nb.declared:  # a headless run never replaces a stage unless told to
            assert plan[nb.name]["overwrite"] is False
    again = plan_parameters(inspected, load_profile(profile), tmp_path, overwrite=True)  # --overwrite
    assert all(again[nb.name].get("overwrite", True) is True for nb in inspected)


@pytest.mark.parametrize("stage", ["01", "03", "04", "05"])
def test_a_notebook_rerun_in_jupyterlab_replaces_its_stage(stage):
    """The stages that refuse to overwrite declare `overwrite`, True by default (Run All twice works)."""
    path = next(p for p in NOTEBOOKS if p.name.startswith(stage))
    spec = inspect_parameters(path).declared.get("overwrite")
    assert spec is not None and spec["inferred_type_name"] == "bool" and spec["default"] == "True"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_conventions(path):
    nb = nbformat.read(path, as_version=4)
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3"
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, "exactly one cell tagged 'parameters'"
    declared = inspect_parameters(path).declared
    assert {"run_dir", "headless"} <= set(declared)
    for name, spec in declared.items():
        assert spec["inferred_type_name"] != "None", f"{name} needs a type hint"
        assert spec["help"], f"{name} needs a '# what it is' comment"
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert "import nbutils" in code or "from nbutils" in code
    assert "sys.path" not in code
    assert not any(c.get("outputs") for c in nb.cells if c.cell_type == "code"), "strip outputs"


def test_no_parameter_decides_by_the_clock():
    """Budgets are steps or epochs: a limit in seconds would make a busy machine's results
    different ones (a loaded demo once stopped pre-training after 177 of 3,000 steps)."""
    import re

    clock = re.compile(r"time_budget|deadline|timeout|_seconds$|_s$|_minutes$|_hours$")
    for path in NOTEBOOKS:
        names = [n for n in inspect_parameters(path).declared if clock.search(n)]
        assert not names, f"{path.name} has time-based parameters {names}"
    for profile in PROFILES:
        names = [k for k in load_profile(profile) if clock.search(k)]
        assert not names, f"params/{profile}.yaml has time-based parameters {names}"


def _default_value(spec):
    import ast

    return ast.literal_eval(spec["default"])


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_defaults_equal_the_demo_profile(path):
    """`jupyter lab` (the notebooks' own defaults) and `make demo` run the same experiment.

    Paths are compared after resolving: a notebook's defaults are relative to notebooks/, the
    profile's to the repository root. Runner-injected parameters (run_dir, headless, ...) differ
    by design.
    """
    demo = load_profile("demo")
    mismatches = []
    for name, spec in inspect_parameters(path).declared.items():
        if name in RUNNER_PARAMETERS or name not in demo:
            continue
        default, wanted = _default_value(spec), demo[name]
        if name.endswith(PATH_SUFFIXES) and default:
            same = (NOTEBOOK_DIR / default).resolve() == (REPO_ROOT / wanted).resolve()
        else:
            same = default == wanted and type(default) is type(wanted)  # True is not 1
        if not same:
            mismatches.append(f"{name}: notebook {default!r}, params/demo.yaml {wanted!r}")
    assert not mismatches, (f"{path.name}'s parameters cell disagrees with params/demo.yaml "
                            "(change both together):\n  " + "\n  ".join(mismatches))


def test_every_demo_key_is_some_notebooks_default():
    """The other direction: no demo value that only `make demo` uses and JupyterLab never sees."""
    declared = {name for p in NOTEBOOKS for name in inspect_parameters(p).declared}
    assert set(load_profile("demo")) <= declared


def test_a_renamed_parameter_fails_naming_its_new_name(tmp_path):
    """A user's profile written before freeze_max_eval_samples became freeze_max_dev_test_samples."""
    from nbutils.core.errors import NbutilsError
    from nbutils.pipeline.runner import RENAMED_PARAMETERS

    inspected = [inspect_parameters(p) for p in NOTEBOOKS]
    declared = set().union(*(nb.declared for nb in inspected))
    for old, (new, _why) in RENAMED_PARAMETERS.items():
        assert old not in declared and new in declared  # the new name is the one the notebooks use
        profile = tmp_path / "mine.yaml"
        profile.write_text(f"seed: 1\n{old}: 32\n", encoding="utf-8")
        with pytest.raises(NbutilsError, match=f"{old} is now {new}") as err:
            plan_parameters(inspected, load_profile(str(profile)), tmp_path)
        assert "profile" in err.value.fix
    assert "freeze_max_eval_samples" in RENAMED_PARAMETERS


@pytest.mark.parametrize("profile", PROFILES)
def test_configs_take_every_stage_parameter_by_name(profile):
    """from_params() reads each `<stage prefix><field>` parameter into the config field of that
    name: a parameter the notebook declares reaches the config without copying it by hand."""
    from nbutils.pretraining.electra import ElectraConfig
    from nbutils.training.finetune import FinetuneConfig

    values = {name: spec["default"] for p in NOTEBOOKS for name, spec in inspect_parameters(p).declared.items()}
    values = {name: eval(text) for name, text in values.items()}  # literals (checked above)
    values.update(load_profile(profile))
    values["mlm_whole_word_masking"] = False  # ELECTRA refuses whole-word masking
    for cls, prefixes in ((FinetuneConfig, ("finetune_",)), (ElectraConfig, ("mlm_", "electra_"))):
        config = cls.from_params(values, max_length=40) if cls is FinetuneConfig else cls.from_params(values)
        fed = {f: getattr(config, f) for f in vars(config)}
        for field_name, value in fed.items():
            for prefix in prefixes:
                if prefix + field_name in values and not (cls is FinetuneConfig and field_name == "max_length"):
                    assert value == values[prefix + field_name], (cls.__name__, field_name)
        for shared in ("seed", "device", "precision"):
            assert fed[shared] == values[shared]
    assert config.mlm_probability == values["mlm_probability"]  # a field that carries its prefix
    assert FinetuneConfig.from_params(values, max_length=40).max_length == 40
    smoothing = FinetuneConfig.from_params({**values, "finetune_label_smoothing": 0.1}, max_length=40)
    assert smoothing.extra_training_args == {"label_smoothing_factor": 0.1}
