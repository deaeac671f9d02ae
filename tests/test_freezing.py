"""Layer freezing: each strategy freezes exactly what it claims, the head always trains, and
layer-wise LR decay gives every layer its decayed LR and every trainable parameter one group."""

from __future__ import annotations

import re

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from nbutils import freezing  # noqa: E402
from nbutils.errors import NbutilsError  # noqa: E402
from nbutils.freezing import (  # noqa: E402
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
    """The rule each strategy claims, written independently of nbutils.freezing, by name."""
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
