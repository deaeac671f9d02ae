"""End to end: the smoke profile through papermill, then checks on what each stage wrote.

One run (a few minutes on 2 cores) shared by the tests below; data and vocabulary come from the
``titles_dir`` / ``vocab_dir`` fixtures (the real mirror where there is one, see conftest.py).
"""

from __future__ import annotations

import importlib.util
import json
import re

import pandas as pd
import pytest

from nbutils.core.paths import REPO_ROOT, RunPaths
from nbutils.pipeline.runner import discover_notebooks, load_profile, run_pipeline

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def gpu_check_rehearsal(tmp_path_factory, titles_dir, vocab_dir) -> dict:
    """The smoke run, made by the GPU check's CPU rehearsal (``make gpu-check DEVICE=cpu``: the
    gpu-check profile with every smoke value over it, then the tiny MFU benchmark and the results
    file), so CI rehearses the GPU check without running the notebooks a second time."""
    spec = importlib.util.spec_from_file_location("gpu_check", REPO_ROOT / "benchmarks" / "gpu_check.py")
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    params = {"data_dir": titles_dir, "demo_vocab_dir": vocab_dir, "explore_vocab_dir": vocab_dir}
    assert set(params) == {k for k in load_profile("smoke") if k == "data_dir" or k.endswith("vocab_dir")}
    runs = tmp_path_factory.mktemp("runs")
    argv = ["--device", "cpu", "--runs-dir", str(runs), *(a for k, v in params.items() for a in ("-p", f"{k}={v}"))]
    return gpu_check.main(argv)


@pytest.fixture(scope="module")
def smoke_run(gpu_check_rehearsal) -> RunPaths:
    return RunPaths(gpu_check_rehearsal["notebooks"]["run_dir"])


def test_the_gpu_check_rehearsal_wrote_its_results_file(gpu_check_rehearsal, smoke_run: RunPaths):
    results = json.loads(gpu_check_rehearsal["path"].read_text())
    assert gpu_check_rehearsal["path"].parent == smoke_run.root  # the rehearsal leaves the repository alone
    assert results["ok"] and results["machine"]["device"] == "cpu" and results["machine"]["torch"]
    manifest = json.loads(smoke_run.manifest.read_text())
    assert manifest["profile"] == "gpu-check"
    # the rehearsal is the smoke run: the two profiles set the same keys, and every smoke value won
    smoke = load_profile("smoke")
    assert set(load_profile("gpu-check")) == set(smoke)
    first_run = manifest["notebooks"][:len(discover_notebooks())]  # as each notebook received them
    for entry in first_run:
        given = entry["parameters"]
        assert given.get("device", "cpu") == "cpu"
        assert all(given[k] == v for k, v in smoke.items()
                   if k in given and not (k in ("data_dir", "device") or k.endswith("vocab_dir")))
    stages = results["notebooks"]["stages"]
    assert [s["notebook"] for s in stages] == [p.stem for p in discover_notebooks()]
    assert all(s["status"] == "ok" and s["seconds"] > 0 for s in stages)
    report = results["benchmark"]["report"]
    assert report["tiny"] and report["batch_size"] in (4, 8) and len(report["sweep"]) == 2
    arms = {arm["arm"]: arm for arm in report["arms"]}
    assert list(arms) == ["fp32-eager", "tf32-sdpa", "bf16-sdpa", "bf16-sdpa-compiled", "bf16-packed-compiled"]
    assert all(arm["samples_per_s"] > 0 and arm["model_tflops"] > 0 for arm in arms.values())
    # labels as run: a CPU has no TF32, and no peak means no MFU claim
    assert all(arm["matmul_fp32_as"] == "ieee fp32" and arm["mfu_bf16_peak"] is None for arm in arms.values())
    # the rehearsal runs the compiled arms uncompiled, and their results say so
    assert arms["bf16-packed-compiled"]["packed"] and not any(arm["compiled"] for arm in arms.values())
    assert arms["fp32-eager"]["attention"] == "eager" and arms["fp32-eager"]["optimizer"] == "adamw_torch"
    assert results["total_seconds"] >= sum(s["seconds"] for s in stages)


def test_every_notebook_ran(smoke_run: RunPaths):
    manifest = json.loads(smoke_run.manifest.read_text())
    assert manifest["status"] == "ok"
    assert [n["name"] for n in manifest["notebooks"]] == [p.stem for p in discover_notebooks()]
    assert all(n["status"] == "ok" and n["duration_s"] > 0 for n in manifest["notebooks"])
    for entry in manifest["notebooks"]:
        assert (smoke_run.root / entry["executed_path"]).is_file()


def test_conversion_wrote_a_loadable_model(smoke_run: RunPaths, vocab_dir):
    from transformers import AutoConfig

    from nbutils.text.vocab import read_vocab

    model = smoke_run.converted_model
    assert (model / "model.safetensors").is_file() and (model / "config.json").is_file()
    config = AutoConfig.from_pretrained(model)
    assert config.vocab_size == len(read_vocab(vocab_dir / "vocab.txt"))  # the real vocab: 21,128
    report = json.loads((smoke_run.convert / "conversion_report.json").read_text())
    # the smoke profile goes through Google's layout: every tensor mapped and CRC-checked
    assert report["source_kind"] == "TensorFlow checkpoint"
    assert report["tensor_count"] == report["checkpoint_tensor_count"] == len(report["mapped"]) > 0
    assert report["crc32c_verified"] == report["tensor_count"]
    assert report["skipped"] == [] and report["initialized_fresh"] == []
    assert report["verification"]["ok"] and report["verification"]["mismatched"] == []


def test_exploration_stats(smoke_run: RunPaths):
    stats = json.loads((smoke_run.explore / "stats.json").read_text())
    recommended = stats["recommended_max_length"]
    # titles are at most 38 characters: a multiple of 8 well under 512, covering >= 99% of train
    assert recommended % 8 == 0 and 8 <= recommended <= 64
    assert stats["recommended_fit_share"]["train"] >= 0.99
    assert any(smoke_run.figures.glob("explore_*.png"))


def test_finetune_outputs_are_consistent(smoke_run: RunPaths):
    metrics = json.loads((smoke_run.finetune / "metrics.json").read_text())
    preds = pd.read_csv(smoke_run.finetune / "test_predictions.csv")
    assert len(preds) > 0
    accuracy = float((preds["label"] == preds["pred"]).mean())
    assert metrics["test"]["accuracy"] == pytest.approx(accuracy, abs=1e-9)
    prob_columns = [c for c in preds.columns if c.startswith("prob_")]
    assert len(prob_columns) == len(metrics["label_names"]) == 10
    assert preds[prob_columns].sum(axis=1).to_numpy() == pytest.approx(1.0, abs=1e-4)
    history = pd.read_csv(smoke_run.finetune / "history.csv")
    assert {"step", "loss"} <= set(history.columns)


def test_freezing_results(smoke_run: RunPaths):
    results = pd.read_csv(smoke_run.freezing / "results.csv")
    assert {"strategy", "seed", "trainable_params", "test_accuracy"} <= set(results.columns)
    full = results[results.strategy == "full"].trainable_params.iloc[0]
    assert (results.trainable_params <= full).all()
    assert (results.trainable_params > 0).all()  # the head always trains


def test_report_is_self_contained(smoke_run: RunPaths):
    html = (smoke_run.report / "report.html").read_text(encoding="utf-8")
    assert re.search(r'<img[^>]+src="data:image/png;base64,', html)
    assert not re.search(r'<img[^>]+src="(?!data:)', html), "every image is embedded"
    assert (smoke_run.report / "summary.md").is_file()


def test_running_the_stages_again_in_the_same_run_dir_replaces_them(smoke_run: RunPaths, titles_dir, vocab_dir):
    """Run All a second time (JupyterLab's `overwrite = True`) in the notebooks that keep finished
    results unless told otherwise (01, 03, 04, 05: test_profiles.py): none refuses, each stage's
    results are replaced. 02 and 06 have no such switch: they rewrite their files on every run
    (a report rebuilt over an earlier one: test_report.py). Runs last in this module: it rewrites
    what the tests above inspected."""
    before = json.loads((smoke_run.finetune / "metrics.json").read_text())
    results_files = [smoke_run.convert / "conversion_report.json", smoke_run.pretrain / "metrics.json",
                     smoke_run.finetune / "metrics.json", smoke_run.freezing / "results.csv"]
    written = [f.stat().st_mtime_ns for f in results_files]
    # the second pass checks that every stage runs again and replaces its results; what the stages
    # compute was checked above, so it runs one of the three freezing strategies
    overrides = {"data_dir": str(titles_dir), "demo_vocab_dir": str(vocab_dir), "explore_vocab_dir": str(vocab_dir),
                 "freeze_strategies": ["full"]}
    stages = "01,03,04,05"
    run_pipeline("smoke", overrides, only=stages, run_dir=smoke_run.root, cell_timeout=600,
                 overwrite=True, log=lambda *_: None)
    manifest = json.loads(smoke_run.manifest.read_text())
    assert manifest["status"] == "ok"
    second = manifest["notebooks"][len(discover_notebooks()):]
    assert [n["name"][:2] for n in second] == stages.split(",")
    assert [n["status"] for n in second] == ["ok"] * len(second)
    assert all(n["parameters"]["overwrite"] is True for n in second)
    after = json.loads((smoke_run.finetune / "metrics.json").read_text())
    assert after["train"]["resumed_from"] is None and after["train"]["steps"] == before["train"]["steps"]
    assert after["test"]["accuracy"] == before["test"]["accuracy"]  # same seed, same run again
    assert all(f.stat().st_mtime_ns > then for f, then in zip(results_files, written, strict=True))
    results = pd.read_csv(smoke_run.freezing / "results.csv")
    assert results["strategy"].tolist() == ["full"]  # the three-strategy table was replaced
