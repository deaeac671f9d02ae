"""Layer freezing: each strategy freezes exactly what it claims, the head always trains, and
layer-wise LR decay gives every layer its decayed LR and every trainable parameter one group."""

from __future__ import annotations

import re

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from nbutils.core.errors import NbutilsError  # noqa: E402
from nbutils.reporting import findings, plots  # noqa: E402
from nbutils.training import freezing  # noqa: E402
from nbutils.training.freezing import (  # noqa: E402
    Strategy,
    apply_strategy,
    default_ks,
    llrd_param_groups,
    select_strategies,
    strategies_for,
)

LAYERS = 4
HIDDEN = 32
LABELS = 3
LAYER_RE = re.compile(r"^bert\.encoder\.layer\.(\d+)\.")


@pytest.fixture
def model():
    config = transformers.BertConfig(
        vocab_size=100, hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=64, num_labels=LABELS,
    )
    torch.manual_seed(0)
    return transformers.BertForSequenceClassification(config)


def expected_frozen(name: str, strategy: Strategy) -> bool:
    """The rule each strategy claims, written independently of nbutils.training.freezing, by name."""
    if name.startswith("classifier."):
        return False
    if strategy.classifier_only:
        return True
    if name.startswith("bert.embeddings."):
        return strategy.freeze_embeddings or strategy.frozen_layers > 0
    if match := LAYER_RE.match(name):
        return int(match.group(1)) < strategy.frozen_layers
    assert name.startswith("bert.pooler."), name
    return False


def count(model, names) -> int:
    params = dict(model.named_parameters())
    return sum(params[n].numel() for n in names)


def test_default_ks_scale_with_depth():
    assert default_ks(12) == [3, 6, 9]
    assert default_ks(4) == [1, 2, 3]
    assert default_ks(24) == [6, 12, 18]
    assert default_ks(2) == [1]
    assert default_ks(1) == []


def test_strategies_cover_the_issue_list():
    names = [s.name for s in strategies_for(12)]
    assert names == [
        "full", "frozen_embeddings", "frozen_bottom_3", "frozen_bottom_6", "frozen_bottom_9",
        "classifier_only", "llrd",
    ]
    assert [s.name for s in strategies_for(4, ks=[2, 2, 4])][2:4] == ["frozen_bottom_2", "frozen_bottom_4"]
    with pytest.raises(NbutilsError, match="bottom 5 of 4"):
        strategies_for(4, ks=[5])


@pytest.mark.parametrize("strategy", strategies_for(LAYERS, ks=[1, 2, 3, 4]), ids=lambda s: s.name)
def test_each_strategy_freezes_exactly_what_it_claims(model, strategy):
    summary = apply_strategy(model, strategy)
    names = [n for n, _ in model.named_parameters()]
    want_frozen = [n for n in names if expected_frozen(n, strategy)]
    got_frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert got_frozen == want_frozen
    assert summary.frozen_names == want_frozen
    assert summary.total_params == count(model, names)
    assert summary.trainable_params == count(model, names) - count(model, want_frozen)
    # the head always trains, whatever the strategy
    assert model.classifier.weight.requires_grad and model.classifier.bias.requires_grad


def test_strategy_counts_by_name(model):
    """Spot-check the rule itself with counts computed from the architecture, not the code."""
    embeddings = sum(p.numel() for p in model.bert.embeddings.parameters())
    layer = sum(p.numel() for p in model.bert.encoder.layer[0].parameters())
    pooler = HIDDEN * HIDDEN + HIDDEN
    head = HIDDEN * LABELS + LABELS
    total = embeddings + LAYERS * layer + pooler + head
    by_name = {s.name: s for s in strategies_for(LAYERS)}
    assert apply_strategy(model, by_name["full"]).trainable_params == total
    assert apply_strategy(model, by_name["frozen_embeddings"]).trainable_params == total - embeddings
    assert apply_strategy(model, by_name["frozen_bottom_2"]).trainable_params == 2 * layer + pooler + head
    assert apply_strategy(model, by_name["classifier_only"]).trainable_params == head
    assert apply_strategy(model, by_name["llrd"]).trainable_params == total


def test_apply_strategy_starts_from_all_trainable(model):
    classifier_only = select_strategies(["classifier_only"], LAYERS)[0]
    apply_strategy(model, classifier_only)
    summary = apply_strategy(model, select_strategies(["full"], LAYERS)[0])
    assert summary.frozen_names == []
    assert all(p.requires_grad for p in model.parameters())


def test_a_frozen_head_is_caught(model, monkeypatch):
    """If the freezing rule ever swallowed the head, apply_strategy must refuse, not train nothing."""
    real = freezing.frozen_blocks
    monkeypatch.setattr(freezing, "frozen_blocks", lambda s, n: [*real(s, n), "head"])
    with pytest.raises(AssertionError, match="classifier head"):
        apply_strategy(model, Strategy("full"))


def test_frozen_layers_get_no_gradient(model):
    apply_strategy(model, select_strategies(["frozen_bottom_2"], LAYERS)[0])
    ids = torch.randint(0, 100, (2, 8))
    model(input_ids=ids, labels=torch.tensor([0, 2])).loss.backward()
    for name, param in model.named_parameters():
        assert (param.grad is None) == expected_frozen(name, Strategy("x", 2, True)), name


def test_select_strategies_by_name():
    assert [s.name for s in select_strategies(["all"], 12)] == [s.name for s in strategies_for(12)]
    picked = select_strategies(["llrd", "frozen_bottom_7", "full", "llrd"], 12, llrd_decay=0.8)
    assert [s.name for s in picked] == ["llrd", "frozen_bottom_7", "full"]
    assert picked[0].llrd_decay == 0.8 and picked[1].frozen_layers == 7
    assert [s.name for s in select_strategies("full, llrd", 12)] == ["full", "llrd"]  # papermill -p a,b
    assert [s.name for s in select_strategies("all", 4)] == [s.name for s in strategies_for(4)]
    assert freezing.as_list("1,2", int) == [1, 2] and freezing.as_list([3], int) == [3]
    assert freezing.as_list(5, int) == [5]
    with pytest.raises(NbutilsError, match="unknown freezing strategy 'frozen_top_2'"):
        select_strategies(["frozen_top_2"], 12)
    with pytest.raises(NbutilsError, match="no freezing strategies"):
        select_strategies([], 12)
    with pytest.raises(NbutilsError, match=r"outside \(0, 1\]"):
        select_strategies(["llrd"], 12, llrd_decay=1.5)


def expected_lr(name: str, base: float, decay: float) -> float:
    if name.startswith("bert.embeddings."):
        return base * decay**LAYERS
    if match := LAYER_RE.match(name):
        return base * decay ** (LAYERS - 1 - int(match.group(1)))
    return base  # pooler and classifier


@pytest.mark.parametrize("strategy_name", ["llrd", "frozen_bottom_2"])
def test_llrd_groups_decay_per_layer_and_cover_each_trainable_param_once(model, strategy_name):
    apply_strategy(model, select_strategies([strategy_name], LAYERS)[0])
    base, decay, wd = 1e-3, 0.5, 0.01
    groups = llrd_param_groups(model, base, decay, wd)
    name_of = {id(p): n for n, p in model.named_parameters()}
    seen = [name_of[id(p)] for g in groups for p in g["params"]]
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert sorted(seen) == sorted(trainable)  # each trainable parameter exactly once
    assert len(seen) == len(set(seen))
    for group in groups:
        for p in group["params"]:
            name = name_of[id(p)]
            assert group["lr"] == pytest.approx(expected_lr(name, base, decay)), name
            no_decay = name.endswith(".bias") or "LayerNorm" in name
            assert group["weight_decay"] == (0.0 if no_decay else wd), name
    lrs = {g["lr"] for g in groups}
    if strategy_name == "llrd":  # embeddings + 4 layers (top one shares the base LR with the head)
        assert len(lrs) == LAYERS + 1


def test_llrd_groups_work_with_adamw(model):
    groups = llrd_param_groups(model, 1e-3, 0.9, 0.01)
    optimizer = torch.optim.AdamW(groups, lr=1.0)  # the groups' own LRs must win
    assert max(g["lr"] for g in optimizer.param_groups) == pytest.approx(1e-3)
    with pytest.raises(NbutilsError, match="decay"):
        llrd_param_groups(model, 1e-3, 0.0, 0.01)


def test_not_a_bert_classifier_is_a_clear_error():
    with pytest.raises(NbutilsError, match="BERT-style"):
        apply_strategy(torch.nn.Linear(2, 2), Strategy("full"))


# --- the comparison --------------------------------------------------------------------------

pd = pytest.importorskip("pandas")


class FakeResult:
    """What finetune returns, with the numbers a fake run was told to produce."""

    def __init__(self, model, accuracy):
        self.trainable_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
        self.total_params = sum(p.numel() for p in model.parameters())
        scores = {"accuracy": accuracy, "macro_f1": accuracy / 2}
        self.metrics = {"dev": scores, "test": scores}
        self.history = pd.DataFrame({"step": [1, 2], "loss": [2.0, 1.5], "eval_accuracy": [None, accuracy],
                                     "eval_macro_f1": [None, accuracy / 2], "epoch": [0.5, 1.0]})


def test_run_comparison_wires_strategies_seeds_and_control(model, tmp_path, monkeypatch):
    """Without training: each run gets its strategy's freezing, LLRD groups, its seed, no early stop."""
    from nbutils.training import finetune as train

    calls = []

    def fake_finetune(dataset, model_dir, out_dir, config, *, prepare_model, param_groups,
                      extra_callbacks, save_model, **kwargs):
        fresh = transformers.BertForSequenceClassification(model.config)
        summary = prepare_model(fresh)
        groups = param_groups(fresh) if param_groups else None
        calls.append(dict(model_dir=model_dir, seed=config.seed, patience=config.early_stopping_patience,
                          frozen=len(summary.frozen_names), groups=groups, save_model=save_model))
        return FakeResult(fresh, accuracy=0.5 + config.seed / 100)

    monkeypatch.setattr(train, "finetune", fake_finetune)
    base = train.FinetuneConfig(learning_rate=1e-3, early_stopping_patience=2)
    strategies = select_strategies(["full", "classifier_only", "llrd"], LAYERS, llrd_decay=0.5)
    out = tmp_path / "freezing"
    model.save_pretrained(tmp_path / "enc")
    results = freezing.run_comparison(None, tmp_path / "enc", out, strategies, [1, 2], base,
                                      random_init_control=True, warmup=False, log=lambda *_: None)
    assert list(results.columns[: len(freezing.RESULT_COLUMNS)]) == list(freezing.RESULT_COLUMNS)
    assert list(zip(results.strategy, results.seed, strict=True)) == [
        ("full", 1), ("full", 2), ("classifier_only", 1), ("classifier_only", 2), ("llrd", 1), ("llrd", 2),
        ("full_random_init", 1), ("full_random_init", 2)]
    assert [c["model_dir"] for c in calls] == [tmp_path / "enc"] * 6 + [c["model_dir"] for c in calls[6:]]
    assert all(c["model_dir"].name == "random_init_model" for c in calls[6:])
    assert not any(out.rglob("random_init_model"))  # the throwaway control weights are gone
    assert all(c["patience"] == 0 and not c["save_model"] for c in calls)  # same budget for all
    assert [c["frozen"] > 0 for c in calls] == [False, False, True, True, False, False, False, False]
    llrd_lrs = {g["lr"] for g in calls[4]["groups"]}
    assert min(llrd_lrs) == pytest.approx(1e-3 * 0.5**LAYERS) and max(llrd_lrs) == pytest.approx(1e-3)
    assert calls[0]["groups"] is None
    assert results.test_accuracy.tolist() == [0.51, 0.52] * 4
    on_disk = pd.read_csv(out / "results.csv")
    assert on_disk[list(freezing.RESULT_COLUMNS)].equals(results[list(freezing.RESULT_COLUMNS)])
    history = pd.read_csv(out / "history.csv")
    assert list(history.columns) == list(freezing.HISTORY_COLUMNS) and len(history) == 16
    # an earlier result is never overwritten
    with pytest.raises(NbutilsError, match="already exists"):
        freezing.run_comparison(None, "enc", out, strategies, [1], base, warmup=False, log=lambda *_: None)


def test_a_failed_comparison_leaves_nothing_behind(model, tmp_path, monkeypatch):
    from nbutils.training import finetune as train

    def failing(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(train, "finetune", failing)
    out = tmp_path / "freezing"
    with pytest.raises(RuntimeError):
        freezing.run_comparison(None, "enc", out, strategies_for(LAYERS), [1], train.FinetuneConfig(),
                                warmup=False, log=lambda *_: None)
    assert not out.exists() and list(tmp_path.iterdir()) == []


def fake_results(gap_classifier: float, seeds=(1, 2, 3)):
    rows = []
    for seed in seeds:
        for name, params, acc, secs in (("full", 1000, 0.90, 10.0), ("classifier_only", 10, 0.90 - gap_classifier, 2.0),
                                        ("frozen_bottom_2", 400, 0.895, 6.0), ("full_random_init", 1000, 0.60, 10.0)):
            jitter = 0.001 * seed
            rows.append(dict(strategy=name, seed=seed, trainable_params=params, total_params=1000,
                             train_time_s=secs + seed, samples_per_second=100 / secs, peak_memory_mb=params / 10,
                             dev_accuracy=acc, dev_macro_f1=acc, test_accuracy=acc + jitter,
                             test_macro_f1=acc + jitter, peak_memory_kind="cpu rss, growth during training"))
    return pd.DataFrame(rows)


def test_summarise_mean_and_std_per_strategy():
    summary = findings.summarise(fake_results(0.2))
    assert list(summary.index) == ["full", "classifier_only", "frozen_bottom_2", "full_random_init"]
    assert summary.loc["full", "test_accuracy_mean"] == pytest.approx(0.902)
    assert summary.loc["full", "test_accuracy_std"] == pytest.approx(0.001)
    assert summary.loc["classifier_only", "trainable_fraction"] == pytest.approx(0.01)
    assert (summary.seeds == 3).all()
    one_seed = findings.summarise(fake_results(0.2, seeds=(1,)))
    assert one_seed.test_accuracy_std.isna().all()
    with pytest.raises(NbutilsError, match="lack columns"):
        findings.summarise(fake_results(0.2).drop(columns="train_time_s"))


def test_findings_follow_the_numbers():
    big_gap = findings.describe_findings(fake_results(0.2))
    assert "classifier (1% of the parameters, the feature-based way) trails full by 20.0 points" in big_gap
    assert "beyond 2 sd" in big_gap
    assert "Fastest freezing strategy to train: **classifier_only**, 4.0 s of training steps vs 12.0 s for full (33% of its time)" in big_gap
    assert "Highest mean test accuracy: **full** with 90.2% ± 0.1" in big_gap
    assert "within 1 point of full: **frozen_bottom_2**" in big_gap
    assert "the starting encoder beats random weights by 30.0 points" in big_gap
    no_gap = findings.describe_findings(fake_results(0.0))
    assert "classifier (1% of the parameters, the feature-based way) ties full" in no_gap
    assert "within 1 point of full: **classifier_only**" in no_gap
    assert "2 strategies tie for the highest mean test accuracy" in no_gap
    single = findings.describe_findings(fake_results(0.2, seeds=(1,)))
    assert "spread is unknown" in single


def test_figures_are_written(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    results = fake_results(0.1)
    history = pd.DataFrame({"strategy": ["full"] * 3 + ["classifier_only"] * 3, "seed": 1,
                            "step": [1, 2, 3] * 2, "loss": [2, 1.5, 1.0, 2, 1.9, 1.8],
                            "eval_accuracy": [None, 0.5, 0.8, None, 0.3, 0.4], "eval_macro_f1": None})
    for name, fig in (("params", plots.accuracy_vs_params(results)),
                      ("time", plots.accuracy_vs_time(results)),
                      ("curves", plots.strategy_curves(history))):
        path = plots.save_figure(fig, tmp_path / f"{name}.png")
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_tiny_comparison_end_to_end(tmp_path, vocab_dir, titles_dir, capsys):
    """Real fine-tuning runs (tiny random BERT, a few dozen titles): the files and their schema;
    headless, a line per run and the encoder's load message once, no step lines."""
    from nbutils.checkpoints.random_bert import make_random_bert
    from nbutils.data.dataset import load_dataset
    from nbutils.training.finetune import FinetuneConfig
    from nbutils.training.tensorboard_logs import read_scalars, read_texts

    model_dir = make_random_bert(vocab_dir / "vocab.txt", tmp_path / "tiny", hidden_size=32, num_layers=2,
                                 num_heads=2, intermediate_size=64, max_position_embeddings=64)
    data = load_dataset(titles_dir).subsample({"train": 32, "dev": 16, "test": 16}, seed=1)
    config = FinetuneConfig(max_length=24, epochs=1, batch_size=8, eval_batch_size=16, learning_rate=5e-4,
                            eval_steps=2, logging_steps=1)
    strategies = select_strategies(["full", "frozen_bottom_1", "classifier_only", "llrd"], 2)
    out = tmp_path / "freezing"
    capsys.readouterr()
    results = freezing.run_comparison(data, model_dir, out, strategies, [7], config, log=print)
    printed = capsys.readouterr().out
    assert printed.count("new classifier head") == 1, printed
    assert not [line for line in printed.splitlines() if line.startswith(("step ", "training:", "CPU threads"))], printed
    assert printed.count("test accuracy") == len(strategies)

    on_disk = pd.read_csv(out / "results.csv")
    assert list(on_disk.columns[: len(freezing.RESULT_COLUMNS)]) == list(freezing.RESULT_COLUMNS)
    assert on_disk.strategy.tolist() == ["full", "frozen_bottom_1", "classifier_only", "llrd"]
    assert on_disk[list(freezing.RESULT_COLUMNS)].notna().all().all()
    full, bottom, head_only, llrd = (on_disk.iloc[i] for i in range(4))
    assert full.trainable_params == full.total_params == llrd.trainable_params
    assert head_only.trainable_params == 32 * len(data.label_names) + len(data.label_names)
    assert head_only.trainable_params < bottom.trainable_params < full.trainable_params
    assert (on_disk.train_time_s > 0).all() and (on_disk.samples_per_second > 0).all()
    assert (on_disk.train_time_s < on_disk.run_wall_s).all()  # steps only, not loading or evaluation
    assert (on_disk.samples_per_second * on_disk.train_time_s).round().eq(32).all()  # 1 epoch of 32
    assert (on_disk.peak_memory_mb >= 0).all()
    assert full.peak_memory_mb > 0  # gradients + AdamW state of the word embeddings at least
    assert on_disk.peak_memory_kind.eq("cpu rss, growth during training steps").all()
    assert on_disk[["dev_accuracy", "test_accuracy"]].apply(lambda c: c.between(0, 1)).all().all()
    history = pd.read_csv(out / "history.csv")
    assert list(history.columns) == list(freezing.HISTORY_COLUMNS)
    assert set(history.strategy) == set(on_disk.strategy) and history.eval_accuracy.notna().any()
    for name in on_disk.strategy:  # each run's own files, from nbutils.training.finetune
        assert (out / "runs" / f"{name}-seed7" / "metrics.json").is_file()
        # TensorBoard: one run per strategy and seed under freezing/tensorboard, a root of their own
        events = out / "tensorboard" / f"{name}-seed7"
        assert read_texts(events)["run"] == f"{name}, seed 7"
        scalars = read_scalars(events)
        assert {"finetune/loss", "eval/accuracy", "test/accuracy"} <= scalars.keys()
        row = on_disk[on_disk.strategy == name].iloc[0]
        assert scalars["test/accuracy"][-1][1] == pytest.approx(row.test_accuracy)
    assert not (out / "warmup").exists()
    runs = sorted(p.name for p in (out / "tensorboard").iterdir())
    assert runs == sorted(f"{n}-seed7" for n in on_disk.strategy), runs  # no warm-up run among them
    assert not (tmp_path / "tensorboard").exists()  # nothing outside freezing/
    assert results.strategy.tolist() == on_disk.strategy.tolist()


def test_random_init_copy_has_the_architecture_but_fresh_weights(model, tmp_path, vocab_dir):
    from safetensors.torch import load_file

    model.save_pretrained(tmp_path / "enc")
    (tmp_path / "enc" / "vocab.txt").write_bytes((vocab_dir / "vocab.txt").read_bytes())
    copy = freezing.write_random_init_copy(tmp_path / "enc", tmp_path / "random", seed=1)  # fixture: seed 0
    assert (copy / "vocab.txt").read_bytes() == (vocab_dir / "vocab.txt").read_bytes()
    assert transformers.AutoConfig.from_pretrained(copy).num_hidden_layers == LAYERS
    original = load_file(tmp_path / "enc" / "model.safetensors")
    fresh = load_file(copy / "model.safetensors")
    name = "encoder.layer.0.attention.self.query.weight"
    assert fresh[name].shape == original["bert." + name].shape
    assert not torch.equal(fresh[name], original["bert." + name])
    again = freezing.write_random_init_copy(tmp_path / "enc", tmp_path / "random2", seed=1)
    assert torch.equal(load_file(again / "model.safetensors")[name], fresh[name])  # seeded


def test_comparison_config_spaces_evaluations_over_the_run():
    config = freezing.comparison_config(1000, evals_per_run=4, batch_size=32, epochs=2, learning_rate=1e-4)
    assert config.eval_steps == 16  # 32 steps per epoch x 2 epochs / 4
    assert config.early_stopping_patience == 0 and config.learning_rate == 1e-4
    assert freezing.comparison_config(10, evals_per_run=5, batch_size=32, epochs=1).eval_steps == 1
    with pytest.raises(NbutilsError):
        freezing.comparison_config(0, batch_size=32)


def test_comparison_data_from_one_file_of_duplicates_keeps_each_text_on_one_side(tmp_path):
    """One CSV, custom columns, every headline three times: the split is grouped by text and the
    subsamples draw within a split, so no text reaches two of train/dev/test."""
    import csv

    rows = [(f"第{i}条新闻标题", "体育" if i % 2 else "财经") for i in range(120)] * 3
    path = tmp_path / "news.csv"
    with path.open("w", encoding="utf-8", newline="") as f:
        csv.writer(f).writerows([("headline", "topic"), *rows])
    ds = freezing.comparison_data(path, text_column="headline", label_column="topic",
                                  max_train_samples=100, max_dev_test_samples=20, seed=3)
    sides = {split: set(ds.texts(split)) for split in ("train", "dev", "test")}
    assert ds.sizes() == {"train": 100, "dev": 20, "test": 20}
    assert not sides["train"] & sides["dev"] and not sides["train"] & sides["test"]
    assert not sides["dev"] & sides["test"]
