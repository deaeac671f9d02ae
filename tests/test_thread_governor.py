"""The adaptive thread governor (nbutils.runtime.governor) and its Trainer callback.

The decisions are checked with made-up step times (no machine speed involved): a quiet 2-core
CPU where 2 threads take 27 ms a step and 1 thread 42 ms (as bench_threads.py measured), and a
contended one where 2 threads take 136 ms (one busy process) or 2 s (heavy load) and 1 thread
42 ms. The callback is checked in a tiny real Trainer run with a clock that makes 2 threads slow.
"""

from __future__ import annotations

import json
import re

import pytest
import torch

from nbutils.runtime import threads
from nbutils.runtime.governor import ThreadGovernor

QUIET = {2: 0.027, 1: 0.042}
ONE_BUSY = {2: 0.136, 1: 0.042}
HEAVY = {2: 2.0, 1: 0.042}


def jitter(step: int) -> float:
    """Deterministic +-3% noise, so medians and thresholds meet realistic spread."""
    return 1.0 + 0.03 * ((step * 7919) % 13 - 6) / 6


def run(governor: ThreadGovernor, steps: int, costs, start: int = 0) -> float:
    """Feed ``steps`` steps whose time depends on the count the governor chose; returns the time."""
    total = 0.0
    for i in range(start, start + steps):
        table = costs(i) if callable(costs) else costs
        seconds = table[governor.threads] * jitter(i)
        total += seconds
        governor.observe(seconds)
    return total


def test_quiet_stays_on_all_threads_and_probing_costs_little():
    for steps, bound in ((300, 0.015), (3000, 0.005)):
        governor = ThreadGovernor(2)
        spent = run(governor, steps, QUIET)
        best = sum(QUIET[2] * jitter(i) for i in range(steps))
        assert governor.home == 2 and governor.switch_count == 0
        assert governor.probe_count >= 2  # it did look
        assert spent / best - 1 < bound, (steps, spent / best)


def test_slow_first_steps_of_a_quiet_run_do_not_move_it():
    # measured: the first ~30 two-thread steps 31 ms, later 26 ms; one thread 29 ms throughout
    warming = lambda i: {2: 0.031, 1: 0.029} if i < 30 else {2: 0.026, 1: 0.029}  # noqa: E731
    governor = ThreadGovernor(2)
    run(governor, 300, warming)
    assert governor.switch_count == 0 and governor.steps_at[2] > 290
    # with the old rule (5% from the first probe) it moved to one thread
    eager = ThreadGovernor(2, early_gain=0.05)
    run(eager, 300, warming)
    assert eager.switches and eager.switches[0]["step"] < 30


def test_contention_moves_to_fewer_threads_within_a_few_windows():
    governor = ThreadGovernor(2)
    run(governor, 400, lambda i: QUIET if i < 200 else ONE_BUSY)
    assert governor.home == 1
    first = governor.switches[0]
    assert (first["from"], first["to"]) == (2, 1)
    assert 200 < first["step"] <= 200 + 3 * governor.window_size + governor.probe_steps


def test_contention_from_the_start_moves_before_the_first_probe_interval():
    governor = ThreadGovernor(2)
    run(governor, 100, HEAVY)
    assert governor.home == 1
    assert governor.switches[0]["step"] <= governor.settle_steps + governor.window_size + governor.probe_steps + 1


def test_a_probe_aborts_after_one_very_slow_step_and_backs_off():
    governor = ThreadGovernor(2)
    run(governor, 6000, HEAVY)
    probes_of_two = [p for p in governor.probes if p["threads"] == 2]
    assert probes_of_two and all(p["aborted"] and p["steps"] == 1 and not p["won"] for p in probes_of_two)
    gaps = [b["step"] - a["step"] for a, b in zip(probes_of_two, probes_of_two[1:], strict=False)]
    assert gaps and all(gap >= 2 * governor.first_interval for gap in gaps)
    # each 2 s probe step is paid back by enough 42 ms steps to keep probing near the budget
    probe_seconds = sum(p["steps"] for p in probes_of_two) * HEAVY[2]
    assert probe_seconds / (6000 * HEAVY[1]) < 1.5 * governor.probe_budget
    assert governor.steps_at[2] < 20


def test_backoff_doubles_between_lost_probes_up_to_the_cap():
    governor = ThreadGovernor(2, first_interval=10, max_interval=80, probe_budget=1.0)
    run(governor, 1500, QUIET)
    steps = [p["step"] for p in governor.probes]
    gaps = [b - a for a, b in zip(steps, steps[1:], strict=False)]
    # interval + the steps of the probe and the one settling step after it
    assert [min(gap, 100) // 10 for gap in gaps[:4]] == [2, 4, 8, 8]
    assert max(gaps) < 80 + 10


def test_returns_to_all_threads_when_the_load_goes():
    governor = ThreadGovernor(2, max_interval=200)
    run(governor, 1500, lambda i: ONE_BUSY if i < 500 else QUIET)
    assert [(s["from"], s["to"]) for s in governor.switches] == [(2, 1), (1, 2)]
    assert governor.switches[1]["step"] > 500 and governor.home == 2


def test_steps_are_compared_per_unit_of_work():
    # batches of 16 and 64 tokens at the same cost per token: not a slowdown, no switch
    governor = ThreadGovernor(2)
    for i in range(600):
        tokens = 16 if (i * 31) % 5 < 2 else 64
        governor.observe(tokens * QUIET[governor.threads] / 32 * jitter(i), work=tokens)
    assert governor.home == 2 and governor.switch_count == 0


def test_hill_climbs_one_thread_at_a_time_on_more_cores():
    # 8 cores, load makes 6 threads best
    cost = {n: 0.1 / n + 0.05 * max(0, n - 6) for n in range(1, 9)}
    governor = ThreadGovernor(8)
    run(governor, 2000, cost)
    assert governor.home == 6
    assert all(abs(s["from"] - s["to"]) == 1 for s in governor.switches)


def test_the_schedule_record():
    governor = ThreadGovernor(2)
    run(governor, 400, lambda i: QUIET if i < 200 else ONE_BUSY)
    record = json.loads(json.dumps(governor.record()))  # what metrics.json gets
    assert record["policy"] == "adaptive" and record["candidates"] == [1, 2] and record["final_threads"] == 1
    assert sum(record["steps_at"].values()) == record["steps"] == 400
    assert record["switch_count"] == len(record["switches"]) >= 1
    assert record["probe_count"] == len(record["probes"]) and record["probe_steps"] >= record["probe_count"]
    assert all({"step", "from", "to"} <= set(s) for s in record["switches"])
    summary = governor.summary()
    assert summary.startswith("CPU threads (adaptive): 400 steps") and "2->1" in summary


def test_step_timing_uses_the_injected_clock():
    now = [0.0]
    governor = ThreadGovernor(2, clock=lambda: now[0])
    for _ in range(30):
        governor.step_begin()
        now[0] += 0.136 if governor.threads == 2 else 0.042
        governor.step_end()
    assert governor.home == 1


def test_one_cpu_or_a_pinned_count_has_no_governor(monkeypatch):
    from nbutils.runtime.governor_callback import make_governor

    def policy(**kw):
        return threads.ThreadPolicy(cpus=2, applied_before_torch=True, **kw)

    monkeypatch.setattr(threads, "_applied", policy(threads=2, source="policy", mode="adaptive"))
    assert make_governor().max_threads == 2
    for pinned in (policy(threads=2, source="OMP_NUM_THREADS"), policy(threads=1, source="torch_threads"),
                   policy(threads=None, source="off"), policy(threads=1, source="policy", mode="adaptive"),
                   policy(threads=1, source="policy"), policy(threads=2, source="policy", mode="fixed")):
        monkeypatch.setattr(threads, "_applied", pinned)
        assert make_governor() is None, pinned
    # a governor with a single candidate never probes or switches
    governor = ThreadGovernor(1)
    run(governor, 500, HEAVY)
    assert governor.probe_count == 0 and governor.steps_at == {1: 500}


class TinyClassifier(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(50, 8)
        self.head = torch.nn.Linear(8, 2)

    def forward(self, input_ids, labels=None):
        logits = self.head(self.embed(input_ids).mean(1))
        return {"loss": torch.nn.functional.cross_entropy(logits, labels), "logits": logits}


def test_callback_sets_torch_threads_in_a_real_trainer(tmp_path, monkeypatch):
    from transformers import Trainer, TrainingArguments

    from nbutils.runtime import governor_callback as thread_callback
    from nbutils.runtime.governor_callback import (
        ThreadGovernorCallback,
        govern_threads,
        thread_schedule,
    )

    monkeypatch.setattr(thread_callback, "_last_count", None)  # the run below sets it

    rows = [{"input_ids": [i % 50] * (4 + i % 3 * 4), "labels": i % 2} for i in range(64)]

    def collate(batch):
        width = max(len(r["input_ids"]) for r in batch)
        return {"input_ids": torch.tensor([r["input_ids"] + [0] * (width - len(r["input_ids"])) for r in batch]),
                "labels": torch.tensor([r["labels"] for r in batch])}

    now = [0.0]

    def clock():  # 2 threads look 3x slower than 1: the governor must move to 1
        now[0] += 0.3 if torch.get_num_threads() >= 2 else 0.1
        return now[0]

    governor = ThreadGovernor(2, window=2, settle_steps=0, probe_steps=1, clock=clock)
    works: list[float] = []
    observe = governor.observe
    governor.observe = lambda seconds, work=1.0: works.append(work) or observe(seconds, work)
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=12, per_device_train_batch_size=4,
                             report_to="none", save_strategy="no", use_cpu=True, logging_steps=100)
    trainer = Trainer(model=TinyClassifier(), args=args, train_dataset=rows, data_collator=collate)
    before = torch.get_num_threads()
    try:
        callback = govern_threads(trainer, governor)
        assert isinstance(callback, ThreadGovernorCallback)
        trainer.train()
        assert torch.get_num_threads() == 1  # left at the count the governor chose
    finally:
        torch.set_num_threads(before)
    record = thread_schedule(trainer)
    assert record["policy"] == "adaptive" and record["switches"][0]["to"] == 1
    assert record["steps"] == 12 and record["steps_at"]["1"] >= 8
    # the work of each step is the padded tokens of its batch (4 texts of 4, 8 or 12 tokens)
    assert len(works) == 12 and all(w in (16, 32, 48) for w in works)
    # the bits were compared at 1 and 2 threads on the first batch (nbutils.runtime.thread_check)
    assert record["bits"]["counts"] == [1, 2] and record["bits"]["batches_checked"] == 1
    assert record["bits"]["case"] in ("invariant", "held") and record["bits"]["reason"]


def test_a_held_count_stays_whatever_the_step_times():
    governor = ThreadGovernor(2)
    run(governor, 100, HEAVY)
    assert governor.home == 1
    assert governor.hold(2) == 2 and governor.held_from == 101
    run(governor, 300, HEAVY, start=100)  # two threads are 50x slower: it still stays
    assert governor.threads == governor.home == 2 and governor.switch_count == 1
    assert governor.steps_at[2] >= 300 and governor.record()["held_from_step"] == 101
    assert "held at 2 from step 101" in governor.summary()
    assert governor.hold(1) == 2  # the first hold stands


def test_the_next_training_starts_where_the_last_one_ended(monkeypatch):
    from nbutils.runtime import governor_callback as thread_callback

    monkeypatch.setattr(threads, "_applied", threads.ThreadPolicy(threads=2, source="policy", cpus=2,
                                                                  applied_before_torch=True, mode="adaptive"))
    monkeypatch.setattr(thread_callback, "_last_count", None)
    assert thread_callback.make_governor().threads == 2
    governor = ThreadGovernor(2)
    run(governor, 50, HEAVY)
    thread_callback.ThreadGovernorCallback(governor, verbose=False).on_train_end(None, None, None)
    follower = thread_callback.make_governor()
    assert follower.threads == 1
    run(follower, 100, QUIET)  # the load has gone: it probes 2 threads as soon as its window is full
    assert follower.home == 2 and follower.switches[0]["step"] <= 12


def test_every_training_path_adds_the_callback():
    """Fine-tuning (and the freezing comparison through it), masked-LM and ELECTRA pre-training
    build their Trainers through the one assembly, which hands each to govern_threads; each path
    records the schedule in its metrics."""
    from nbutils.core.paths import REPO_ROOT

    package = REPO_ROOT / "nbutils"
    for module in ("training/finetune.py", "pretraining/mlm.py", "pretraining/electra.py"):
        source = (package / module).read_text(encoding="utf-8")
        assert re.findall(r"=\s*\w*Trainer\(", source) == [], f"{module} builds a Trainer by hand"
        assert "assemble_trainer(" in source and "thread_schedule(trainer)" in source, module
    assembly = (package / "training/assembly.py").read_text(encoding="utf-8")
    assert "governor_callback.govern_threads(trainer" in assembly


@pytest.mark.parametrize("bad", [0, -1])
def test_bad_limits_are_refused(bad):
    with pytest.raises(ValueError, match="min_threads"):
        ThreadGovernor(bad)


def test_manifest_collects_each_trainings_schedule(tmp_path):
    governor = ThreadGovernor(2)
    run(governor, 100, HEAVY)
    (tmp_path / "finetune").mkdir()
    bits = {"case": "held", "reason": "linear ... gave different bits at 1 and 2 threads", "seconds": 0.5,
            "products": ["linear [32, 40, 128] float32 x [512, 128] float32 x [512] float32"]}
    governor.hold(1)
    (tmp_path / "finetune/metrics.json").write_text(json.dumps({"threads": {"source": "policy", **governor.record(),
                                                                            "bits": bits}}))
    (tmp_path / "pretrain").mkdir()
    (tmp_path / "pretrain/metrics.json").write_text(json.dumps({"threads": {"source": "torch_threads",
                                                                            "policy": "fixed"}}))
    (tmp_path / "report").mkdir()
    (tmp_path / "report/metrics.json").write_text('{"half-written')  # skipped, not fatal
    schedules = threads.thread_schedules(tmp_path)
    assert schedules == {
        "finetune": {"policy": "adaptive", "source": "policy", "final_threads": 1, "steps": 100,
                     "steps_at": governor.record()["steps_at"], "switch_count": 1,
                     "probe_count": governor.probe_count, "held_from_step": 101,
                     "bits": {"case": "held", "reason": bits["reason"], "seconds": 0.5}},
        "pretrain": {"policy": "fixed", "source": "torch_threads"},
    }


def test_the_report_says_whether_the_count_could_change_the_bits():
    from nbutils.reporting.report import run_overview

    schedules = {"finetune": {"policy": "adaptive", "bits": {"case": "held", "reason": "linear ... differ: held at 1"}},
                 "pretrain": {"policy": "adaptive", "bits": {"case": "invariant", "reason": "same bits at 1 and 2"}},
                 "freezing": {"policy": "fixed"}}
    table = run_overview({"thread_schedules": schedules})
    assert table.loc["CPU threads and bits", "value"] == ("finetune: held, linear ... differ: held at 1; "
                                                          "pretrain: invariant, same bits at 1 and 2")
    assert "CPU threads and bits" not in run_overview({}).index  # nothing recorded: no row
