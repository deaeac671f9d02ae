"""Fine-tuning: truncation on token ids, the files of the run-directory contract, resume after an
interruption, the hooks the freezing notebook uses, live curves, and errors a user can fix.

Runs a tiny random BERT of the real vocabulary on a few dozen real THUCNews titles: this checks
the plumbing and exact reproducibility, not accuracy.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from transformers import TrainerCallback

from nbutils.checkpoints.random_bert import make_random_bert
from nbutils.core.errors import NbutilsError
from nbutils.data.dataset import Dataset, load_dataset
from nbutils.text.tokenization import Truncator
from nbutils.text.vocab import build_tokenizer
from nbutils.training.finetune import FinetuneConfig, finetune, load_result
from nbutils.training.live import LiveCurves, QuietProgress, history_frame
from nbutils.training.metrics import classification_metrics, expected_calibration_error
from nbutils.training.tensorboard_logs import read_scalars, read_texts

TINY = dict(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory, vocab_dir):
    return make_random_bert(vocab_dir / "vocab.txt", tmp_path_factory.mktemp("m") / "tiny", **TINY)


@pytest.fixture(scope="module")
def small_data(titles_dir):
    return load_dataset(titles_dir).subsample({"train": 48, "dev": 24, "test": 24}, seed=1)


@pytest.fixture(scope="module")
def tokenizer(vocab_dir):
    return build_tokenizer(vocab_dir / "vocab.txt")


def quick(**overrides) -> FinetuneConfig:
    base = dict(max_length=24, epochs=1, batch_size=8, eval_batch_size=16, learning_rate=5e-4,
                eval_steps=2, max_steps=6, early_stopping_patience=0, logging_steps=1, seed=3,
                group_by_length=True)  # resume must also reproduce the bucketed order
    return FinetuneConfig(**{**base, **overrides})


# ---------------------------------------------------------------------------- truncation

LONG = "".join(chr(0x4E00 + (i * 37) % 2000) for i in range(3000))  # 3,000 distinct-ish CJK chars


@pytest.mark.parametrize("strategy", ["head", "tail", "head+tail"])
def test_long_text_is_cut_to_max_length(tokenizer, strategy):
    cut = Truncator(tokenizer, 64, strategy)
    full = tokenizer(LONG, add_special_tokens=False)["input_ids"]
    assert len(full) == 3000  # one token per Chinese character: far past 512 positions
    ids = cut([LONG])[0]
    assert len(ids) == 64
    assert ids[0] == tokenizer.cls_token_id and ids[-1] == tokenizer.sep_token_id
    body = ids[1:-1]
    if strategy == "head":
        assert body == full[:62]
    elif strategy == "tail":
        assert body == full[-62:]
    else:
        head = round(62 * 128 / 510)
        assert cut.head == head
        assert body == full[:head] + full[-(62 - head):]


def test_short_and_empty_texts_are_untouched(tokenizer):
    cut = Truncator(tokenizer, 32, "head+tail", head_tokens=5)
    short, empty = cut(["体育新闻", ""])
    assert short == tokenizer("体育新闻")["input_ids"]
    assert empty == [tokenizer.cls_token_id, tokenizer.sep_token_id]


def test_bad_truncation_settings(tokenizer):
    with pytest.raises(NbutilsError, match="unknown truncation"):
        FinetuneConfig(truncation="middle")
    with pytest.raises(NbutilsError, match="longer than the model accepts"):
        Truncator(tokenizer, 1024)


# ---------------------------------------------------------------------------- a full run


@pytest.fixture(scope="module")
def finished(tiny_model, small_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("ft") / "finetune"
    return finetune(small_data, tiny_model, out, quick(), curves_png=out.parent / "curves.png",
                    title="tiny run")


def test_run_writes_the_contract_files(finished, small_data):
    out = finished.out_dir
    for name in ("metrics.json", "history.csv", "test_predictions.csv"):
        assert (out / name).is_file()
    assert not (out / "checkpoints").exists()  # removed after success
    assert (out.parent / "curves.png").stat().st_size > 1000
    saved = json.loads((out / "model" / "config.json").read_text())
    assert saved["id2label"] == {str(i): n for i, n in enumerate(small_data.label_names)}
    assert json.loads((out / "model" / "finetune_config.json").read_text())["max_length"] == 24

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["label_names"] == small_data.label_names
    for split, n in (("dev", 24), ("test", 24)):
        m = metrics[split]
        assert m["n"] == n and sum(m["per_class"][c]["support"] for c in m["per_class"]) == n
        assert {"accuracy", "macro_f1", "weighted_f1", "confusion_matrix"} <= m.keys()
    assert metrics["train"]["global_step"] == 6 and metrics["train"]["steps"] == 6
    assert metrics["train"]["samples_per_second"] > 0
    # the steps alone take less time than train() with its evaluations and checkpoints
    assert metrics["train"]["step_samples_per_second"] > metrics["train"]["samples_per_second"]
    assert metrics["device"]["device"] == "cpu"
    # tiny_model is make_random_bert's: metrics.json must say these were never pre-trained weights
    assert metrics["model_weights"]["pretrained"] is False
    card = finished.model_dir / "README.md"  # a Hugging Face model card, from the same metrics
    from huggingface_hub import ModelCard

    data = ModelCard.load(card).data
    assert data.labels == small_data.label_names and data.pipeline_tag == "text-classification"
    scores = {(r.dataset_split, r.metric_type): r.metric_value for r in data.eval_results}
    assert scores[("test", "accuracy")] == pytest.approx(metrics["test"]["accuracy"], abs=1e-6)
    assert scores[("dev", "f1")] == pytest.approx(metrics["dev"]["macro_f1"], abs=1e-6)
    assert data.training_parameters["max_length"] == 24 and data.training_data["sizes"]["train"] == 48
    text = card.read_text(encoding="utf-8")
    assert "random weights" in text and "Texts longer than 24 tokens" in text
    fit = metrics["length_fit"]  # how many train texts max_length cut, measured on all 48
    assert (fit["max_length"], fit["texts_measured"]) == (24, 48)
    assert 0 <= fit["truncated_share"] <= 1 and fit["longest_tokens"] > 0
    assert "random initialisation" in metrics["model_weights"]["how"]

    history = pd.read_csv(out / "history.csv")
    assert list(history.columns[:7]) == ["step", "epoch", "loss", "learning_rate", "eval_loss",
                                         "eval_accuracy", "eval_macro_f1"]
    assert history["step"].tolist() == [1, 2, 3, 4, 5, 6]
    assert history["eval_macro_f1"].notna().sum() == 3  # evaluated at steps 2, 4, 6
    lr = history["learning_rate"].tolist()
    assert max(lr) <= 5e-4 and lr[-1] < max(lr)  # warmup then linear decay


def test_run_writes_tensorboard_events(finished):
    """One TensorBoard run named by the stage (<run>/tensorboard/finetune, not .../tensorboard):
    the classification loss under finetune/, the dev curve in the one eval/ family, the final
    test scores under test/; every logged point of history.csv, read with TensorBoard's reader."""
    events = finished.out_dir.parent / "tensorboard" / "finetune"
    assert list(events.glob("events.out.tfevents.*"))
    assert not (finished.out_dir / "tensorboard").exists()
    scalars = read_scalars(events)
    assert {"finetune/loss", "finetune/learning_rate", "eval/finetune_loss", "eval/accuracy", "eval/macro_f1",
            "test/accuracy", "test/macro_f1"} <= scalars.keys()
    assert not [t for t in scalars if t.startswith(("train/", "dev/", "mlm/")) or t.endswith(("_runtime", "_per_second"))]
    history = pd.read_csv(finished.out_dir / "history.csv")
    assert [step for step, _ in scalars["finetune/loss"]] == history["step"].tolist()
    assert [v for _, v in scalars["finetune/loss"]] == pytest.approx(history["loss"].tolist(), rel=1e-6)
    assert [step for step, _ in scalars["eval/accuracy"]] == [2, 4, 6]
    metrics = json.loads((finished.out_dir / "metrics.json").read_text())
    assert scalars["test/accuracy"] == [(6, pytest.approx(metrics["test"]["accuracy"]))]
    assert read_texts(events)["run"] == "tiny run"


def test_tensorboard_tags_are_namespaced_by_task():
    from nbutils.training.tensorboard_logs import log_dir, tag

    assert [tag("mlm", k) for k in ("loss", "learning_rate", "eval_loss", "train_runtime")] == \
        ["mlm/loss", "mlm/learning_rate", "eval/mlm_loss", None]
    assert [tag("finetune", k) for k in ("loss", "eval_loss", "eval_accuracy", "eval_samples_per_second")] == \
        ["finetune/loss", "eval/finetune_loss", "eval/accuracy", None]
    assert tag("electra", "loss") == "electra/loss"
    assert log_dir(Path("runs/x/finetune")) == Path("runs/x/tensorboard/finetune")


def test_saved_metrics_match_saved_predictions(finished, small_data):
    preds = pd.read_csv(finished.out_dir / "test_predictions.csv")
    names = small_data.label_names
    assert list(preds.columns) == ["text", "label", "pred", "confidence", *[f"prob_{n}" for n in names]]
    probs = preds[[f"prob_{n}" for n in names]].to_numpy()
    assert probs.sum(1) == pytest.approx(1.0)
    assert preds["confidence"].to_numpy() == pytest.approx(probs.max(1))
    recomputed = classification_metrics(preds["label"], preds["pred"], names)
    saved = json.loads((finished.out_dir / "metrics.json").read_text())["test"]
    assert recomputed == saved
    assert sorted(preds["text"]) == sorted(small_data.texts("test"))


def test_finished_run_is_not_overwritten(finished, tiny_model, small_data):
    before = (finished.out_dir / "metrics.json").read_bytes()
    with pytest.raises(NbutilsError, match="already holds a finished"):
        finetune(small_data, tiny_model, finished.out_dir, quick())
    assert (finished.out_dir / "metrics.json").read_bytes() == before
    loaded = load_result(finished.out_dir)
    assert loaded["metrics"]["test"] == finished.metrics["test"]


# ---------------------------------------------------------------------------- resume


class StopAt(TrainerCallback):
    """Simulates Ctrl-C mid-epoch, after a checkpoint was written."""

    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise KeyboardInterrupt


def test_interrupted_run_resumes_to_the_same_result(finished, tiny_model, small_data, tmp_path):
    out = tmp_path / "finetune"
    with pytest.raises(KeyboardInterrupt):
        finetune(small_data, tiny_model, out, quick(), extra_callbacks=[StopAt(5)])
    assert not (out / "metrics.json").exists() and not (out / "model").exists()
    assert (out / "checkpoints" / "checkpoint-4").is_dir()

    resumed = finetune(small_data, tiny_model, out, quick())
    assert resumed.metrics["train"]["resumed_from"].endswith("checkpoint-4")
    assert resumed.metrics["train"]["steps"] == 2  # only steps 5 and 6 were trained again
    assert resumed.metrics["dev"] == finished.metrics["dev"]
    assert resumed.metrics["test"] == finished.metrics["test"]
    a = pd.read_csv(finished.out_dir / "test_predictions.csv")
    b = pd.read_csv(out / "test_predictions.csv")
    pd.testing.assert_frame_equal(a, b, rtol=1e-5)
    ha, hb = pd.read_csv(finished.out_dir / "history.csv"), pd.read_csv(out / "history.csv")
    pd.testing.assert_series_equal(ha["loss"], hb["loss"], rtol=1e-5)  # history kept across resume


def test_resume_refuses_checkpoints_of_a_different_run(tiny_model, small_data, tmp_path, monkeypatch):
    out = tmp_path / "finetune"
    with pytest.raises(KeyboardInterrupt):
        finetune(small_data, tiny_model, out, quick(), extra_callbacks=[StopAt(3)])
    saved = json.loads((out / "checkpoints" / "run_fingerprint.json").read_text())
    assert saved["split_sizes"] == {"train": 48, "dev": 24, "test": 24}
    assert saved["config"]["learning_rate"] == 5e-4 and "headless" not in saved["config"]

    with pytest.raises(NbutilsError, match=r"learning_rate: 0.0005 -> 0.0001") as err:
        finetune(small_data, tiny_model, out, quick(learning_rate=1e-4))
    assert "new out_dir" in str(err.value) and "delete" in str(err.value)
    fewer = small_data.subsample({"train": 40, "dev": 24, "test": 24}, seed=1)
    with pytest.raises(NbutilsError, match="split_sizes.train: 48 -> 40"):
        finetune(fewer, tiny_model, out, quick())
    other_model = make_random_bert(tiny_model / "vocab.txt", tmp_path / "other", **TINY)
    with pytest.raises(NbutilsError, match="model_dir"):
        finetune(small_data, other_model, out, quick())
    # the same settings with other layers frozen, or another optimizer grouping, is another run
    def freeze_embeddings(model):
        model.bert.embeddings.requires_grad_(False)

    with pytest.raises(NbutilsError, match="training_setup.trainable"):
        finetune(small_data, tiny_model, out, quick(), prepare_model=freeze_embeddings)
    with pytest.raises(NbutilsError, match="training_setup"):
        finetune(small_data, tiny_model, out, quick(),
                 param_groups=lambda model: [{"params": list(model.parameters()), "lr": 1e-3}])
    # the same settings on a host whose CPU decides precision="auto" the other way
    import nbutils.runtime.device

    native = nbutils.runtime.device.cpu_has_native_bf16()
    with monkeypatch.context() as patch:
        patch.setattr(nbutils.runtime.device, "cpu_has_native_bf16", lambda: not native)
        with pytest.raises(NbutilsError, match="device.precision"):
            finetune(small_data, tiny_model, out, quick())
    # a fingerprint from before training_setup was recorded cannot be checked
    fingerprint = out / "checkpoints" / "run_fingerprint.json"
    current = fingerprint.read_text()
    fingerprint.write_text(json.dumps({k: v for k, v in json.loads(current).items() if k != "training_setup"}))
    with pytest.raises(NbutilsError, match="older nbutils"):
        finetune(small_data, tiny_model, out, quick())
    fingerprint.write_text(current)

    # A cosmetic setting may change; the run resumes and keeps its checkpoints as asked.
    resumed = finetune(small_data, tiny_model, out, quick(keep_checkpoints=True))
    assert resumed.metrics["train"]["resumed_from"].endswith("checkpoint-2")
    assert resumed.metrics["train"]["steps"] == 4
    assert (out / "checkpoints" / "checkpoint-6").is_dir()

    # overwrite=True starts afresh rather than "resuming" the finished run into 0 steps.
    again = finetune(small_data, tiny_model, out, quick(), overwrite=True)
    assert again.metrics["train"]["resumed_from"] is None
    assert again.metrics["train"]["steps"] == 6


def test_random_weights_are_announced_loudly_where_the_model_is_loaded(tiny_model, small_data, tmp_path, capsys):
    finetune(small_data, tiny_model, tmp_path / "ft", quick(max_steps=1, eval_steps=1), save_model=False)
    out = capsys.readouterr().out
    assert "WARNING" in out and "RANDOM weights that were never pre-trained" in out and "notebook 03" in out


def test_overwrite_resumes_an_interrupted_run_and_replaces_a_finished_one(tiny_model, small_data, tmp_path):
    """What a notebook re-run does (its `overwrite` defaults to True in JupyterLab): Run All after
    Kernel > Interrupt continues; Run All after a finished run trains again; a changed setting
    starts over instead of failing."""
    out = tmp_path / "finetune"
    with pytest.raises(KeyboardInterrupt):
        finetune(small_data, tiny_model, out, quick(), extra_callbacks=[StopAt(3)], overwrite=True)
    resumed = finetune(small_data, tiny_model, out, quick(), overwrite=True)
    assert resumed.metrics["train"]["resumed_from"].endswith("checkpoint-2")
    assert resumed.metrics["train"]["steps"] == 4

    # A finished run is replaced, and an interrupted replacement is not mistaken for finished.
    with pytest.raises(KeyboardInterrupt):
        finetune(small_data, tiny_model, out, quick(), extra_callbacks=[StopAt(3)], overwrite=True)
    assert not (out / "metrics.json").exists()
    again = finetune(small_data, tiny_model, out, quick(), overwrite=True)
    assert again.metrics["train"]["resumed_from"].endswith("checkpoint-2")
    replaced = finetune(small_data, tiny_model, out, quick(), overwrite=True)
    assert replaced.metrics["train"]["resumed_from"] is None and replaced.metrics["train"]["steps"] == 6

    # Checkpoints of other settings are discarded, not resumed and not an error.
    with pytest.raises(KeyboardInterrupt):
        finetune(small_data, tiny_model, out, quick(), extra_callbacks=[StopAt(3)], overwrite=True)
    changed = finetune(small_data, tiny_model, out, quick(learning_rate=1e-4), overwrite=True)
    assert changed.metrics["train"]["resumed_from"] is None and changed.metrics["train"]["steps"] == 6
    assert json.loads((out / "metrics.json").read_text())["config"]["learning_rate"] == 1e-4


def test_existing_model_folder_is_refused_before_training(tiny_model, small_data, tmp_path):
    started = []

    class Spy(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            started.append(True)

    out = tmp_path / "finetune"
    (out / "model").mkdir(parents=True)
    with pytest.raises(NbutilsError, match="model already exists") as err:
        finetune(small_data, tiny_model, out, quick(), extra_callbacks=[Spy()])
    assert "overwrite=True" in str(err.value)
    assert not started and not (out / "checkpoints").exists()


def test_steps_per_epoch_count_every_process():
    from nbutils.training.finetune import _schedule

    config = quick(max_steps=-1, epochs=2, eval_steps=0, logging_steps=0, gradient_accumulation_steps=2)
    one = _schedule(960, config, world_size=1)
    two = _schedule(960, config, world_size=2)
    assert one["steps_per_epoch"] == 60 and two["steps_per_epoch"] == 30  # 960 / (8 x 2 x ranks)
    assert two["eval_steps"] == 30 and two["total_steps"] == 60 and two["logging_steps"] == 1
    assert one["total_steps"] == 120 and one["logging_steps"] == 2


# ---------------------------------------------------------------------------- hooks


def test_prepare_model_and_param_groups_hooks(tiny_model, small_data, tokenizer, tmp_path):
    seen = {}

    def freeze_embeddings(model):
        for p in model.bert.embeddings.parameters():
            p.requires_grad = False

    def groups(model):
        seen["called"] = True
        return [{"params": [p for p in model.parameters() if p.requires_grad], "weight_decay": 0.0}]

    result = finetune(small_data, tiny_model, tmp_path / "ft", quick(max_steps=2, eval_steps=2),
                      prepare_model=freeze_embeddings, param_groups=groups, save_model=False)
    assert seen["called"]
    assert 0 < result.trainable_params < result.total_params
    assert not (tmp_path / "ft" / "model").exists()
    assert result.total_params - result.trainable_params > len(tokenizer) * 32  # word embeddings frozen


# ---------------------------------------------------------------------------- errors


def test_user_errors(tiny_model, small_data, tmp_path, monkeypatch):
    with pytest.raises(NbutilsError, match="model folder not found"):
        finetune(small_data, tmp_path / "nope", tmp_path / "a", quick())

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text((tiny_model / "config.json").read_text())
    with pytest.raises(NbutilsError, match="no weights"):
        finetune(small_data, broken, tmp_path / "b", quick())

    frame = small_data.subsample({"train": 8, "dev": 8, "test": 8}).frame.copy()
    frame.loc[frame.index[0], "label"] = 99
    bad = Dataset(frame, small_data.label_names, source="bad", format="titles")
    with pytest.raises(NbutilsError, match="label id 99"):
        finetune(bad, tiny_model, tmp_path / "c", quick())

    def oom(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr("transformers.Trainer.train", oom)
    with pytest.raises(NbutilsError, match="out of memory.*batch_size=8") as err:
        finetune(small_data, tiny_model, tmp_path / "d", quick())
    assert "gradient_accumulation_steps" in str(err.value)


# ---------------------------------------------------------------------------- live output


def test_history_merges_train_and_eval_rows():
    log = [
        {"loss": 2.0, "learning_rate": 1e-4, "epoch": 0.5, "step": 5},
        {"eval_loss": 1.9, "eval_accuracy": 0.3, "eval_macro_f1": 0.2, "eval_runtime": 0.1, "epoch": 0.5, "step": 5},
        {"loss": 1.5, "learning_rate": 5e-5, "epoch": 1.0, "step": 10},
        {"train_runtime": 3.0, "train_loss": 1.7, "epoch": 1.0, "step": 10},
    ]
    h = history_frame(log)
    assert h["step"].tolist() == [5, 10]
    assert h.loc[0, "eval_macro_f1"] == 0.2 and pd.isna(h.loc[1, "eval_macro_f1"])
    assert "eval_runtime" not in h and "train_runtime" not in h


def test_quiet_progress_prints_a_few_lines(finished):
    class State:
        max_steps, global_step, epoch, is_world_process_zero = 100, 0, 0.0, True

    lines = []
    progress = QuietProgress(lines=4, print_fn=lines.append)
    state = State()
    progress.on_train_begin(None, state, None)
    for step in range(1, 101):
        state.global_step = step
        progress.on_log(None, state, None, logs={"loss": 1.0 / step})
        progress.on_step_end(None, state, None)
    assert len(lines) == 1 + 4
    assert lines[1].startswith("step 25/100 (25%) loss 0.0400")
    assert lines[-1].startswith("step 100/100 (100%)")


def test_live_curves_headless_writes_png(tmp_path):
    class State:
        is_world_process_zero = True
        log_history = [{"loss": 2.0, "step": 1, "epoch": 0.1},
                       {"eval_accuracy": 0.5, "eval_macro_f1": 0.4, "step": 1, "epoch": 0.1}]

    curves = LiveCurves(tmp_path / "c.png", headless=True)
    curves.on_log(None, State(), None, logs={})
    curves.on_train_end(None, State(), None)
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"
    assert curves.history["eval_accuracy"].tolist() == [0.5]


def test_length_buckets_cover_everything_in_random_batch_order():
    from nbutils.training.finetune import LengthBucketSampler

    torch.manual_seed(0)
    lengths = torch.randint(5, 40, (1000,)).tolist()
    order = list(LengthBucketSampler(lengths, batch_size=10, mega_batches=20))
    assert sorted(order) == list(range(1000))  # every example once per epoch
    batches = [order[i:i + 10] for i in range(0, 1000, 10)]
    spread = [max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches]
    assert sum(spread) / len(spread) <= 2  # a batch holds similar lengths: little padding
    longest = [max(lengths[i] for i in b) for b in batches]
    drops = sum(a > b for a, b in zip(longest, longest[1:], strict=False))
    assert 30 < drops < 70  # batch order is shuffled, not a sweep from long to short
    assert list(LengthBucketSampler(lengths, 10, 20)) != order  # a new order each epoch


def test_config_round_trips_through_the_cli_flags():
    import dataclasses

    from nbutils.training.launch import build_parser, config_argv

    config = FinetuneConfig(max_length=40, truncation="head+tail", group_by_length=False,
                            learning_rate=3e-5, epochs=2.5, eval_steps=7)
    args = build_parser().parse_args(["--model", "m", "--data", "d", "--out", "o", *config_argv(config)])
    for f in dataclasses.fields(FinetuneConfig):
        if f.name not in ("extra_training_args", "headless"):
            assert getattr(args, f.name) == getattr(config, f.name), f.name


def test_live_curves_interactive_updates_one_display(tmp_path, monkeypatch):
    import IPython.display

    shown, updated = [], []

    class Handle:
        def update(self, fig):
            updated.append(fig)

    def fake_display(obj, display_id=False):
        shown.append(obj)
        return Handle()

    monkeypatch.setattr(IPython.display, "display", fake_display)

    class State:
        is_world_process_zero = True
        log_history = [{"loss": 2.0, "step": 1, "epoch": 0.1}]

    curves = LiveCurves(tmp_path / "c.png", headless=False, min_interval_s=0)
    state = State()
    curves.on_log(None, state, None, logs={"loss": 2.0})
    state.log_history = state.log_history + [{"eval_accuracy": 0.4, "eval_macro_f1": 0.3, "step": 1, "epoch": 0.1}]
    curves.on_log(None, state, None, logs={"eval_accuracy": 0.4})
    curves.on_train_end(None, state, None)
    assert len(shown) == 1 and len(updated) == 2  # one figure, redrawn in place
    assert (tmp_path / "c.png").is_file()


def test_temperature_fitted_on_dev_is_saved_with_the_model_and_applied(finished, small_data):
    """metrics.json's calibration: T fitted on dev, ECE before/after on test; the model folder's
    calibration.json holds the same T, and test_predictions.csv's confidences use it."""
    metrics = json.loads((finished.out_dir / "metrics.json").read_text())
    cal = metrics["calibration"]
    assert cal["fitted_on"] == "dev" and cal["temperature"] > 0
    assert {"ece_before", "ece_after", "bins_before", "bins_after"} <= cal["test"].keys()
    saved = json.loads((finished.out_dir / "model" / "calibration.json").read_text())
    assert saved["temperature"] == pytest.approx(cal["temperature"])
    preds = pd.read_csv(finished.out_dir / "test_predictions.csv")
    probs = preds[[f"prob_{n}" for n in small_data.label_names]].to_numpy()
    labels = [small_data.label_names.index(n) for n in preds["label"]]
    assert expected_calibration_error(probs, labels, cal["n_bins"]) == pytest.approx(cal["test"]["ece_after"])
