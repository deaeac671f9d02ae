"""The browser that tests/test_browser.py needs: `make setup` installs one, `make test` stops at once
without one, with one line that says what is missing and the command that installs it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).parent
REPO = TESTS.parent


@pytest.fixture
def driver(monkeypatch):
    monkeypatch.syspath_prepend(str(TESTS))
    import jupyterlab_driver

    return jupyterlab_driver


def test_check_stops_with_one_line_naming_the_fix(tmp_path):
    missing = tmp_path / "no-chromium"
    env = {"PATH": "/usr/bin:/bin", "NBUTILS_CHROMIUM": str(missing), "HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, str(TESTS / "jupyterlab_driver.py"), "check"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert str(missing) in lines[0] and "make browser" in lines[0]
    assert "apt-get install" in lines[0] or "playwright install chromium" in lines[0]


def test_without_any_chromium_the_line_names_the_install_command(driver, monkeypatch):
    monkeypatch.delenv("NBUTILS_CHROMIUM", raising=False)
    monkeypatch.setattr(driver.shutil, "which", lambda name: None)
    monkeypatch.setattr(driver, "SYSTEM_CHROMIUM", "/nonexistent/chromium")
    monkeypatch.setattr(driver, "_playwright_chromium_installed", lambda: False)
    assert driver.system_chromium() is None  # then Playwright's own would be driven
    for root, command in ((True, "apt-get install -y chromium fonts-noto-cjk"),
                          (False, "python -m playwright install chromium")):
        monkeypatch.setattr(driver, "_apt_usable", lambda root=root: root)
        problem = driver.missing_browser()
        assert problem is not None and command in problem and "\n" not in problem, problem


def test_playwright_chromium_is_used_where_there_is_no_system_one(driver, monkeypatch):
    monkeypatch.delenv("NBUTILS_CHROMIUM", raising=False)
    monkeypatch.setattr(driver.shutil, "which", lambda name: None)
    monkeypatch.setattr(driver, "SYSTEM_CHROMIUM", "/nonexistent/chromium")
    monkeypatch.setattr(driver, "_playwright_chromium_installed", lambda: True)
    assert driver.missing_browser() is None  # launch_chromium passes executable_path=None: Playwright's


def test_make_test_checks_the_browser_before_anything_else():
    planned = subprocess.run(["make", "-n", "test"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert planned.returncode == 0, planned.stderr
    # "make[1]: Entering directory ..." lines appear when the suite itself runs under make
    commands = [line for line in planned.stdout.splitlines() if line.strip() and not line.startswith("make[")]
    assert "jupyterlab_driver.py check" in commands[0], commands
    setup = subprocess.run(["make", "-n", "setup"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert "jupyterlab_driver.py install" in setup.stdout, setup.stdout
