"""The notebooks as a researcher uses them: JupyterLab in a real (headless) Chromium.

The test starts its own JupyterLab on 127.0.0.1 (a free port, a random token), opens notebook 04
with smoke-sized parameters (a tiny random BERT built by the library, not by notebook 01) and
uses it as a person would, with Run > Run All Cells and Kernel > Interrupt Kernel:

1. Run All: one live figure redraws in place while training (several different images, always
   in the same single output, not a pile of figures); once a checkpoint is saved, Kernel >
   Interrupt Kernel stops it (KeyboardInterrupt, no metrics.json).
2. Run All again: training resumes from that checkpoint (the notebook says so, metrics.json
   records it and counts only the remaining steps) and the notebook ends without an error.
3. A headline typed into the prediction box gets a class.
4. Run All a third time: the finished run is replaced, without an error.
5. Notebook 06 writes report.html (from a headless copy of itself; no temporary file left).
6. report.html, opened at 1280x800, shows the verdict (model and baseline side by side) in its
   first screen, nothing is wider than the page, every image has alt text.
Opening 04 and 06 leaves them unchanged (not "dirty"): their committed metadata is what
JupyterLab writes.

One server, one browser and one kernel per notebook serve all checks; the page is polled (0.1 s),
never slept on. Phase timings are printed (`pytest -s`). Without Chromium or Playwright the test
fails and says how to install them: it is never skipped. With NBUTILS_SCREENSHOT=path.png it also
saves a screenshot of notebook 04 while training (the README's figure).
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import pytest

from nbutils.core.paths import REPO_ROOT, RunPaths

pytestmark = [pytest.mark.slow, pytest.mark.browser]

PLACEHOLDER = "输入新闻标题，回车分类"  # notebook 04's prediction box
TIMEOUT_S = 240  # one Run All on a busy 2-core machine
# Smoke size: 80 optimizer steps (1,280 titles, batch 16) with an evaluation and checkpoint every
# 20, so the live figure redraws several times (also once a second from the loss log) and an
# interrupt after the first checkpoint leaves most of the training to resume.
TRAIN_SAMPLES, BATCH, EVAL_STEPS = 1280, 16, 20
TOTAL_STEPS = TRAIN_SAMPLES // BATCH


def _driver():
    import jupyterlab_driver

    return jupyterlab_driver


def _prepare(notebook: str, out: Path, parameters: dict) -> Path:
    """The repository's notebook with smoke-sized parameters in a cell after its parameters cell,
    as papermill injects them (plain JSON: importing papermill here would cost seconds)."""
    nb = json.loads((REPO_ROOT / "notebooks" / notebook).read_text(encoding="utf-8"))
    at = next(i for i, c in enumerate(nb["cells"]) if "parameters" in c["metadata"].get("tags", []))
    source = "".join(f"{name} = {value!r}\n" for name, value in parameters.items())
    nb["cells"].insert(at + 1, {"cell_type": "code", "execution_count": None, "id": "injected-parameters",
                                "metadata": {"tags": ["injected-parameters"]}, "outputs": [], "source": source})
    out.write_text(json.dumps(nb, ensure_ascii=False, indent=1), encoding="utf-8")
    return out


def _complete_checkpoint(ckpt_dir: Path) -> str | None:
    from nbutils.training.resume import last_checkpoint

    return last_checkpoint(ckpt_dir)


def test_notebooks_04_and_06_in_jupyterlab(tmp_path, titles_dir, vocab_dir, monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    jl = _driver()
    problem = jl.missing_browser()
    if problem:
        pytest.fail(problem)
    from playwright.sync_api import sync_playwright

    from nbutils.checkpoints.random_bert import make_random_bert

    phases = jl.Phases()
    run = RunPaths(tmp_path / "run")
    with phases("notebooks prepared"):
        lab_dir = tmp_path / "lab"
        lab_dir.mkdir()
        _prepare("04_finetune.ipynb", lab_dir / "04_finetune.ipynb", {
            "run_dir": str(run.root), "data_dir": str(titles_dir), "finetune_max_length": 32,
            "finetune_epochs": 1.0, "finetune_batch_size": BATCH, "finetune_eval_batch_size": 64,
            "finetune_learning_rate": 1e-3, "finetune_eval_steps": EVAL_STEPS,
            "finetune_max_train_samples": TRAIN_SAMPLES, "finetune_max_eval_samples": 64,
            "finetune_max_test_samples": 64})
        _prepare("06_report.ipynb", lab_dir / "06_report.ipynb", {
            "run_dir": str(run.root), "data_dir": str(titles_dir), "report_baseline_full_split": False,
            "report_title": "Browser test"})
    class_names = (titles_dir / "class.txt").read_text(encoding="utf-8").split()
    screenshot = os.environ.get("NBUTILS_SCREENSHOT")
    ckpt_dir = run.finetune / "checkpoints"
    metrics_file = run.finetune / "metrics.json"

    lab = jl.start_jupyterlab(lab_dir, tmp_path / "jupyter", wait=False)
    try:
        with phases("tiny random BERT (library), JupyterLab starting meanwhile"):
            make_random_bert(vocab_dir / "vocab.txt", run.converted_model, hidden_size=32, num_layers=2,
                             num_heads=2, intermediate_size=64, max_position_embeddings=64, seed=1)
        with phases("JupyterLab ready"):
            lab.wait_ready()
        with sync_playwright() as p:
            with phases("Chromium start"):
                browser = jl.launch_chromium(p, tmp_path / "chromium-profile")
            try:
                page = browser.new_page()
                page.set_default_timeout(TIMEOUT_S * 1000)
                with phases("open 04 (kernel start)"):
                    jl.open_notebook(page, lab, "04_finetune.ipynb")
                    time.sleep(1)  # the status bar may say Idle a moment before Run All is accepted
                    # JupyterLab writes the kernel's metadata into the notebook on open: the committed
                    # metadata is what it writes, so opening leaves the notebook unchanged (no "save?")
                    assert not jl.dirty_tabs(page), f"opening made {jl.dirty_tabs(page)} dirty"

                # --- 1. Run All: the live figure updates in place; Kernel > Interrupt after a checkpoint
                with phases("04 Run All 1: live figure, then Kernel > Interrupt"):
                    jl.run_all(page)
                    training = page.locator(".jp-CodeCell").filter(has_text="metrics = stage.train(")
                    images = training.locator(".jp-OutputArea-output img")
                    seen, most, interrupted_at = [], 0, None
                    deadline = time.monotonic() + TIMEOUT_S
                    while time.monotonic() < deadline:
                        sources = images.evaluate_all("imgs => imgs.map(i => i.getAttribute('src') || '')")
                        most = max(most, len(sources))
                        if sources and (not seen or sources[0] != seen[-1]):
                            seen.append(sources[0])
                            if screenshot and len(seen) == 3:  # the README's picture of 04 training
                                images.first.scroll_into_view_if_needed()
                                page.mouse.wheel(0, 250)
                                page.screenshot(path=screenshot)
                        interrupted_at = _complete_checkpoint(ckpt_dir)
                        if interrupted_at and len(set(seen)) >= (3 if screenshot else 2):
                            jl.interrupt_kernel(page)
                            break
                        if training.locator(".jp-InputPrompt").text_content().strip() not in ("[*]:", "[ ]:"):
                            break  # the training cell ended before it could be interrupted
                        time.sleep(jl.POLL_S)
                    assert len(set(seen)) >= 2, \
                        f"the live figure never changed ({len(seen)} image seen); errors shown: {jl.errors(page)}"
                    assert most == 1, f"{most} figures stacked in the training output instead of one updated in place"
                    assert interrupted_at, "training ended before a checkpoint was saved and it could be interrupted"
                    jl.wait_until_idle(page, timeout_s=TIMEOUT_S)
                    shown = jl.errors(page)
                    assert any("KeyboardInterrupt" in e for e in shown), f"no KeyboardInterrupt shown: {shown}"
                    assert not metrics_file.exists(), "the interrupted run was written as finished"

                # --- 2. Run All again: resumes from the last checkpoint and finishes
                with phases("04 Run All 2: resume from the checkpoint"):
                    jl.run_all(page)
                    # 06 opens in a second tab now: its kernel starts while 04 trains (one thread)
                    report_page = browser.new_page()
                    report_page.set_default_timeout(TIMEOUT_S * 1000)
                    jl.open_notebook(report_page, lab, "06_report.ipynb", workspace="report", wait=False)
                    jl.wait_for_kernel(report_page)
                    assert not jl.dirty_tabs(report_page), f"opening made {jl.dirty_tabs(report_page)} dirty"
                    # the interrupted run's prompts stay until the cells run again: wait for a fresh count
                    first = jl.wait_until_done(page, previous_last_prompt="[ ]:", timeout_s=TIMEOUT_S)
                    assert not jl.errors(page), jl.errors(page)
                    resumed = json.loads(metrics_file.read_text(encoding="utf-8"))["train"]
                    resumed_from = resumed["resumed_from"]
                    assert resumed_from and Path(resumed_from).parent == ckpt_dir, resumed
                    step = int(Path(resumed_from).name.split("-")[1])
                    assert EVAL_STEPS <= step < TOTAL_STEPS, f"resumed at step {step} of {TOTAL_STEPS}: not mid-training"
                    assert resumed["global_step"] == TOTAL_STEPS, resumed
                    assert resumed["steps"] == TOTAL_STEPS - step, f"trained {resumed['steps']} steps after resuming at {step}"
                    assert page.locator(".jp-OutputArea-output").filter(
                        has_text=f"resuming from {resumed_from}").count() == 1

                # --- 3. the prediction box answers with a class
                with phases("04 prediction box"):
                    box = page.get_by_placeholder(PLACEHOLDER)
                    box.fill("国足世预赛客场战平对手 出线形势仍不明朗")
                    box.press("Enter")
                    answer = page.locator(".widget-output").filter(has_text=re.compile(r"\(\d\.\d{3}\)")).last
                    answer.wait_for(timeout=120_000)
                    assert any(answer.inner_text().strip().startswith(name) for name in class_names), \
                        answer.inner_text()

                # --- 4. Run All a third time replaces the finished run without an error
                with phases("04 Run All 3: replace the finished run"):
                    jl.run_all(page)
                    jl.wait_until_done(page, previous_last_prompt=first, timeout_s=TIMEOUT_S)
                    assert not jl.errors(page), jl.errors(page)
                    assert page.locator(".jp-OutputArea-output").filter(
                        has_text="replacing the finished run").count() == 1
                    replaced = json.loads(metrics_file.read_text(encoding="utf-8"))["train"]
                    assert replaced["resumed_from"] is None and replaced["steps"] == TOTAL_STEPS, replaced

                # --- 5. notebook 06 in JupyterLab writes report.html
                with phases("06 kernel (started during 04 Run All 2)"):
                    page.close()
                    page = report_page
                    jl.wait_for_kernel(page)
                with phases("06 Run All (report.html via a headless re-run)"):
                    jl.run_all(page)
                    jl.wait_until_done(page, previous_last_prompt="[ ]:", timeout_s=TIMEOUT_S)
                    assert not jl.errors(page), jl.errors(page)
                    assert page.locator(".jp-OutputArea-output").filter(has_text="report.html").count() >= 1
                    html = (run.report / "report.html").read_text(encoding="utf-8")
                    assert "Browser test" in html and "RANDOM" in html  # the random-weights warning too
                    # made from the headless copy of 06, without the notebook's introduction or
                    # a temporary file in its file list, and with nothing temporary left behind
                    assert (run.report / "06_report.ipynb").is_file()
                    intro = json.loads((lab_dir / "06_report.ipynb").read_text(encoding="utf-8"))["cells"][0]["source"]
                    assert "".join(intro).splitlines()[2] not in html
                    assert ".06_report-" not in html
                    assert not [p.name for p in run.report.iterdir() if p.name.startswith(".")]

                # --- 6. report.html as a reader opens it: the verdict in the first screen, nothing wider
                with phases("report.html in Chromium: first screen, overflow, alt text"):
                    layout = jl.report_layout(browser, run.report / "report.html")
                    screen = jl.FIRST_SCREEN["height"]
                    assert layout["verdict_bottom"] and layout["verdict_bottom"] <= screen, layout
                    assert layout["table_bottom"] and layout["table_bottom"] <= screen, layout  # model vs baseline
                    assert layout["scroll_width"] <= layout["client_width"], layout
                    assert not layout["wide"], layout["wide"]
                    assert layout["images"] >= 3 and not layout["no_alt"], layout["alts"]
            finally:
                browser.close()
    finally:
        with phases("JupyterLab stop"):
            lab.stop()
        print("\nbrowser test phases:\n" + phases.table())
        if metrics_file.exists():  # the last fine-tuning's own clock, evaluations included
            print(f"(last 04 training: {json.loads(metrics_file.read_text())['train']['runtime_s']:.1f} s)")
