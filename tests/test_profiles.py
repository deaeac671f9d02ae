"""Profiles and notebooks agree: every key is declared by a notebook, with a matching type."""

from __future__ import annotations

import nbformat
import pytest

from nbutils.runner import (
    PARAMS_DIR,
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
