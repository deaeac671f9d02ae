"""The notebooks as a researcher uses them: JupyterLab in a real (headless) Chromium.

The test starts its own JupyterLab on 127.0.0.1 (a free port, a random token), opens notebook 04
with smoke-sized parameters, runs it with Run > Run All Cells and checks what a person sees:
one live figure that redraws in place while training (several different images, always in the
same single output, not a pile of figures), a class under the prediction box after typing a
headline, and a second Run All that ends without an error. Then notebook 06 writes report.html.

It drives Debian's Chromium (`/usr/bin/chromium`, or NBUTILS_CHROMIUM) with Playwright for
Python; Playwright's own browser download is not used. Without the browser or Playwright the
test fails and says how to install them: it is never skipped. With NBUTILS_SCREENSHOT=path.png it
also saves a screenshot of notebook 04 while training (the README's figure).
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from nbutils.paths import REPO_ROOT, RunPaths

pytestmark = [pytest.mark.slow, pytest.mark.browser]

CHROMIUM = os.environ.get("NBUTILS_CHROMIUM", "/usr/bin/chromium")
INSTALL = ("install them with:\n"
           "    apt-get update && apt-get install -y chromium fonts-noto-cjk   # Debian/Ubuntu, as root\n"
           "    pip install playwright   (or: pip install -e '.[dev]')\n"
           "Playwright's own browser download (`playwright install`) is not needed: the test drives "
           "the system Chromium (set NBUTILS_CHROMIUM to use another Chromium binary).")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-default-apps"]
PLACEHOLDER = "输入新闻标题，回车分类"  # notebook 04's prediction box
TIMEOUT_MS = 240_000  # one Run All on a busy 2-core machine


def _require_browser():
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.fail(f"Playwright for Python is not installed; {INSTALL}")
    if not (Path(CHROMIUM).is_file() and os.access(CHROMIUM, os.X_OK)):
        pytest.fail(f"no Chromium at {CHROMIUM}; {INSTALL}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _prepare(notebook: str, out: Path, parameters: dict) -> Path:
    """The repository's notebook with smoke-sized parameters injected (papermill, not executed)."""
    import papermill

    papermill.execute_notebook(str(REPO_ROOT / "notebooks" / notebook), str(out), parameters=parameters,
                               prepare_only=True, kernel_name="python3", progress_bar=False)
    return out


def _start_jupyterlab(root: Path, home: Path):
    home.mkdir(parents=True, exist_ok=True)
    # A fresh user: start the notebook's kernel without asking, and no "Jupyter news?" toast.
    for plugin, settings in (("notebook-extension/tracker", '{"autoStartDefaultKernel": true}'),
                             ("apputils-extension/notification", '{"fetchNews": "false"}')):
        path = home / "settings" / "@jupyterlab" / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(settings, encoding="utf-8")
    port, token = _free_port(), secrets.token_hex(16)
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
           "JUPYTERLAB_SETTINGS_DIR": str(home / "settings"),
           "JUPYTERLAB_WORKSPACES_DIR": str(home / "workspaces"), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
               f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
               "--ServerApp.terminals_enabled=False"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        command.append("--allow-root")
    log = open(home / "jupyterlab.log", "wb")  # noqa: SIM115 - closed by the caller
    proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"JupyterLab exited with {proc.returncode}: "
                                 + (home / "jupyterlab.log").read_text(errors="replace")[-2000:])
        try:
            with urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2) as response:
                if response.status == 200:
                    return proc, log, url, token
        except OSError:
            time.sleep(0.5)
    raise AssertionError("JupyterLab did not answer within 120 s")


def _stop(proc, log):
    """Stop the JupyterLab this test started (its process group: the server and its kernels)."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=10)
    finally:
        log.close()


def _run_all(page):
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
    page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()


def _prompts(page) -> list[str]:
    # text_content, not inner_text: cells scrolled out of view are not rendered but are in the DOM
    return [p.strip() for p in page.locator(".jp-CodeCell .jp-InputPrompt").all_text_contents()]


def _wait_until_done(page, previous_last_prompt: str, timeout_s: float = TIMEOUT_MS / 1000):
    """Every queued cell has run: no `[*]` prompt, and the last cell's count has moved on."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        prompts = _prompts(page)
        last = prompts[-1] if prompts else ""
        if prompts and not any("*" in p for p in prompts) and last not in (previous_last_prompt, "[ ]:"):
            return last
        time.sleep(0.5)
    raise AssertionError(f"the notebook did not finish within {timeout_s:.0f} s (last prompt {last!r})")


def _errors(page) -> list[str]:
    return [t[:500] for t in page.locator(".jp-OutputArea-output").all_text_contents() if "Traceback" in t]


def _open(page, url: str, token: str, name: str):
    page.goto(f"{url}/lab/tree/{name}?token={token}")
    page.locator(".jp-Notebook .jp-CodeCell").first.wait_for(timeout=120_000)
    # The kernel is up when the status bar names it and says Idle; Run All before that is lost.
    page.locator(".jp-StatusBar-TextItem", has_text=re.compile(r"Python 3.*Idle")).wait_for(timeout=120_000)
    time.sleep(1)


def test_notebooks_04_and_06_in_jupyterlab(tmp_path, titles_dir, vocab_dir):
    _require_browser()
    from playwright.sync_api import sync_playwright

    from nbutils.random_bert import make_random_bert

    run = RunPaths(tmp_path / "run")
    make_random_bert(vocab_dir / "vocab.txt", run.converted_model, hidden_size=32, num_layers=2, num_heads=2,
                     intermediate_size=64, max_position_embeddings=64, seed=1)
    lab = tmp_path / "lab"
    lab.mkdir()
    # Smoke size: 30 steps with an evaluation every 10, so the live figure redraws several times.
    _prepare("04_finetune.ipynb", lab / "04_finetune.ipynb", {
        "run_dir": str(run.root), "data_dir": str(titles_dir), "finetune_max_length": 32,
        "finetune_epochs": 1.0, "finetune_batch_size": 16, "finetune_eval_batch_size": 64,
        "finetune_learning_rate": 1e-3, "finetune_eval_steps": 10, "finetune_max_train_samples": 480,
        "finetune_max_eval_samples": 64, "finetune_max_test_samples": 64})
    _prepare("06_report.ipynb", lab / "06_report.ipynb", {
        "run_dir": str(run.root), "data_dir": str(titles_dir), "report_baseline": False,
        "report_title": "Browser test"})
    class_names = (titles_dir / "class.txt").read_text(encoding="utf-8").split()
    screenshot = os.environ.get("NBUTILS_SCREENSHOT")

    proc, log, url, token = _start_jupyterlab(lab, tmp_path / "jupyter")
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch_persistent_context(
                str(tmp_path / "chromium-profile"), executable_path=CHROMIUM, headless=True,
                args=CHROMIUM_ARGS, viewport={"width": 1280, "height": 900})
            try:
                page = browser.new_page()
                page.set_default_timeout(TIMEOUT_MS)
                _open(page, url, token, "04_finetune.ipynb")

                # --- first Run All: the live figure updates in place while training
                _run_all(page)
                training = page.locator(".jp-CodeCell").filter(has_text="curves_png = paths.figure")
                seen, most = [], 0
                deadline = time.monotonic() + TIMEOUT_MS / 1000
                while time.monotonic() < deadline:
                    sources = training.locator(".jp-OutputArea-output img").evaluate_all(
                        "imgs => imgs.map(i => i.getAttribute('src') || '')")
                    most = max(most, len(sources))
                    if sources and (not seen or sources[0] != seen[-1]):
                        seen.append(sources[0])
                        if screenshot and len(seen) == 3:  # the README's picture of 04 training
                            training.locator(".jp-OutputArea-output img").scroll_into_view_if_needed()
                            page.mouse.wheel(0, 250)
                            page.screenshot(path=screenshot)
                    if training.locator(".jp-InputPrompt").text_content().strip() not in ("[*]:", "[ ]:"):
                        break  # the training cell has finished
                    time.sleep(0.15)
                assert len(set(seen)) >= 2, f"the live figure never changed ({len(seen)} image seen)"
                assert most == 1, f"{most} figures stacked in the training output instead of one updated in place"
                first = _wait_until_done(page, previous_last_prompt="[ ]:")
                assert not _errors(page), _errors(page)
                assert (run.finetune / "metrics.json").is_file()

                # --- the prediction box answers with a class
                box = page.get_by_placeholder(PLACEHOLDER)
                box.fill("国足世预赛客场战平对手 出线形势仍不明朗")
                box.press("Enter")
                answer = page.locator(".widget-output").filter(has_text=re.compile(r"\(\d\.\d{3}\)")).last
                answer.wait_for(timeout=120_000)
                assert any(answer.inner_text().strip().startswith(name) for name in class_names), answer.inner_text()

                # --- a second Run All replaces the first without an error
                _run_all(page)
                _wait_until_done(page, previous_last_prompt=first)
                assert not _errors(page), _errors(page)
                assert page.locator(".jp-OutputArea-output").filter(
                    has_text="replacing the finished run").count() == 1

                # --- notebook 06 in JupyterLab writes report.html
                _open(page, url, token, "06_report.ipynb")
                _run_all(page)
                _wait_until_done(page, previous_last_prompt="[ ]:")
                assert not _errors(page), _errors(page)
                assert page.locator(".jp-OutputArea-output").filter(has_text="report.html").count() >= 1
                html = (run.report / "report.html").read_text(encoding="utf-8")
                assert "Browser test" in html and "RANDOM" in html  # the random-weights warning too
            finally:
                browser.close()
    finally:
        _stop(proc, log)
