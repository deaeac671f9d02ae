"""End to end on a user's own CSV (tests/fixtures/own-data-mini/news.csv: columns ``headline`` and
``topic``, duplicates, a conflicting label): `nbutils data split`, then the runner with the smoke
profile's sizes and the column parameters, then checks on what every stage wrote.

Masked-LM pre-training (03) and layer freezing (05) read the data the same way and are covered
by test_e2e_smoke.py, as are notebook 02's likely label errors; leaving them out here keeps this
run short.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nbutils.cli import main as cli
from nbutils.core.errors import NbutilsError
from nbutils.core.paths import RunPaths
from nbutils.pipeline.runner import RunFailed, load_profile, run_pipeline

pytestmark = pytest.mark.slow

NEWS = Path(__file__).parent / "fixtures" / "own-data-mini" / "news.csv"
TOPICS = ["体育", "娱乐", "房产", "教育", "游戏", "财经"]


def overrides(vocab_dir, data: Path, **more) -> dict:
    values = {key: str(vocab_dir) for key in load_profile("smoke") if key.endswith("vocab_dir")}
    return {**values, "data_dir": str(data), **more}


@pytest.fixture(scope="module")
def split_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("data") / "news"
    assert cli(["data", "split", str(NEWS), str(out), "--text-column", "headline", "--label-column", "topic",
                "--ignore-whitespace"]) == 0
    return out


@pytest.fixture(scope="module")
def own_run(tmp_path_factory, split_dir, vocab_dir) -> RunPaths:
    # max_length 16 cuts most headlines: fine-tuning and the report must say so; demo_max_position 0:
    # the demo BERT gets the positions the headlines need
    values = overrides(vocab_dir, split_dir, data_text_column="headline", data_label_column="topic",
                       mlm_enabled=False, finetune_max_length=16, demo_max_position=0, explore_label_error_folds=0)
    root = run_pipeline("smoke", values, only="01,02,04,06", runs_dir=tmp_path_factory.mktemp("runs"),
                        cell_timeout=600, log=lambda *_: None)
    return RunPaths(root)


def test_the_default_columns_fail_naming_the_runner_s_parameters(tmp_path, split_dir, vocab_dir):
    with pytest.raises(RunFailed) as err:
        run_pipeline("smoke", overrides(vocab_dir, split_dir), only="02", runs_dir=tmp_path, log=lambda *_: None)
    assert "FAILED 02_explore_data" in err.value.message
    assert "no text column 'text' and no label column 'label'; the columns are: id, headline, topic" in err.value.message
    assert "-p data_text_column=<column> and -p data_label_column=<column>" in err.value.message


def test_the_retired_exploration_columns_name_the_new_parameter(tmp_path, split_dir, vocab_dir):
    with pytest.raises(NbutilsError, match="explore_text_column is now data_text_column"):
        run_pipeline("smoke", overrides(vocab_dir, split_dir, explore_text_column="headline"), runs_dir=tmp_path,
                     log=lambda *_: None)
    assert list(tmp_path.iterdir()) == []  # nothing ran, no run directory left


def test_every_stage_read_the_custom_columns(own_run: RunPaths):
    manifest = json.loads(own_run.manifest.read_text(encoding="utf-8"))
    assert manifest["status"] == "ok"
    assert [n["name"] for n in manifest["notebooks"]] == ["01_convert_checkpoint", "02_explore_data",
                                                         "04_finetune", "06_report"]
    stats = json.loads(own_run.file("explore_stats").read_text(encoding="utf-8"))
    assert stats["dataset"]["label_names"] == TOPICS
    assert stats["quality"]["leakage"]["count"] == 0  # the split kept each text on one side
    metrics = json.loads(own_run.file("finetune_metrics").read_text(encoding="utf-8"))
    assert metrics["label_names"] == TOPICS and metrics["data"]["source"].endswith("news")
    assert metrics["distillation"]["grouped_by_text"]
    baseline = json.loads(own_run.file("baseline").read_text(encoding="utf-8"))  # the report read the data too
    assert baseline["test_examples"] == metrics["test"]["n"]


def test_a_max_length_that_cuts_is_said_in_fine_tuning_and_in_the_report(own_run: RunPaths):
    fit = json.loads(own_run.file("finetune_metrics").read_text(encoding="utf-8"))["length_fit"]
    assert fit["max_length"] == 16 and fit["truncated_share"] > 0.05
    assert f"-p finetune_max_length={fit['recommended_max_length']}" in fit["warning"]
    executed = (own_run.notebooks / "04_finetune.ipynb").read_text(encoding="utf-8")
    assert f"max_length 16 cuts {fit['truncated_share']:.1%} of the train texts" in executed
    summary = own_run.file("summary").read_text(encoding="utf-8")
    assert "news" in summary.splitlines()[0]  # the title names the data read
    assert "do not fit the data" in summary and fit["warning"] in summary


def test_the_demo_bert_has_the_positions_the_data_needs(own_run: RunPaths):
    config = json.loads((own_run.converted_model / "config.json").read_text(encoding="utf-8"))
    stats = json.loads(own_run.file("explore_stats").read_text(encoding="utf-8"))
    assert config["max_position_embeddings"] == stats["recommended_max_length"]  # the same 99% rule
    executed = (own_run.notebooks / "01_convert_checkpoint.ipynb").read_text(encoding="utf-8")
    assert f"demo BERT: {config['max_position_embeddings']} positions" in executed


def test_the_model_folder_is_shareable_with_its_card(own_run: RunPaths):
    from huggingface_hub import ModelCard

    card = ModelCard.load(own_run.finetuned_model / "README.md").data
    assert card.labels == TOPICS
    assert {r.dataset_split for r in card.eval_results} == {"dev", "test"}
