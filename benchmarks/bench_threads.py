"""CPU thread policies on a quiet and on a contended CPU: time of a real training step.

One training step of the demo-sized BERT (params/demo.yaml: hidden 128, 2 layers, 2 heads,
the real 21,128-token vocabulary; batch 32 x 24 tokens, forward + backward + fused AdamW, as
Trainer runs it) is timed in a fresh worker process per (policy, condition), because OpenMP
reads its settings once, when torch loads. Conditions: "quiet" (whatever else runs on the
machine; the load average is printed) and "contended": this script starts ``--hogs`` busy-loop
processes of its own (each stops by itself after ``--hog-seconds`` and is killed in a
``finally``). Policies, A/B interleaved over ``--rounds`` rounds in a rotating order:

- ``old``: what the project did before nbutils.runtime.threads (torch's defaults: one OpenMP thread per
  core, libgomp spinning ~300,000 rounds before a waiting thread sleeps);
- ``new``: what runs by default now: the environment nbutils.runtime.threads applies before torch loads,
  and, where that policy is adaptive, the thread governor around the steps exactly as the Trainer
  callback (nbutils.runtime.governor_callback) runs it in training, from the first step; the model made
  thread-invariant (``nbutils.runtime.invariant``: its LayerNorm, attention and small fp32
  products, and MKL's reproducible mode) as every CPU training does now;
- ``adaptive``: the governor whatever the environment says (all usable CPUs in the pool), with
  the thread-invariant model;
- ``1thread``: the previous policy on 2 cores (all usable CPUs but one, fixed; stock kernels);
- a ``-inv`` suffix on a count (``2thread-inv``) adds the thread-invariant model to it: the price
  of the invariant numerics alone, against ``2thread``;
- candidates, to choose the policy by measurement: ``Nthread`` (OMP_NUM_THREADS=N), ``passive``
  (OMP_WAIT_POLICY=PASSIVE), ``spinN`` (GOMP_SPINCOUNT=N: libgomp's spin rounds), e.g.
  ``--policies old,new,2thread,passive,spin1000,spin10000``. (torch's pip builds link GNU
  libgomp, so the KMP_* settings of Intel/LLVM OpenMP do nothing here.)

Prints per policy the median and the mean step time quiet and contended (the mean includes the
governor's probes and the steps before it moves), contended/quiet, and the policy's quiet time
relative to ``old``; the governor's schedule per worker; then load averages before and after.
A worker stops timing after ``--max-worker-s`` seconds (a collapsed 2-thread run can take 2 s a
step) and says how many steps it timed.

    python benchmarks/bench_threads.py                                  # old vs new vs 1thread
    python benchmarks/bench_threads.py --nice -20                       # as root on a shared machine
    python benchmarks/bench_threads.py --policies old,new,passive,spin1000,spin3000,spin10000
    python benchmarks/bench_threads.py --task mlm --batch-size 64    # a masked-LM pre-training step
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

# Variables that decide OpenMP's behaviour, and torch's huge-page switch (read once, it changes a
# title step's time by up to ~10%: nbutils.runtime.memory): stripped from every worker, then set per policy.
WORKER_VARIABLES = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "MKL_NUM_THREADS", "MKL_CBWR",
                    "OMP_PROC_BIND", "OMP_PLACES", "NBUTILS_THREAD_POLICY", "NBUTILS_POLICY_THREADS",
                    "THP_MEM_ALLOC_ENABLE")


def policy_env(name: str) -> dict[str, str]:
    """Environment of one named policy (added to a worker's environment stripped of OpenMP settings)."""
    if name == "old":
        # nbutils would apply its policy on import; the worker never imports it, and this
        # switch keeps it off should anything the worker loads do so.
        return {"NBUTILS_THREAD_POLICY": "off"}
    if name in ("new", "adaptive"):
        from nbutils.runtime.threads import policy_environment, policy_threads

        if name == "adaptive":
            return {"OMP_NUM_THREADS": str(policy_threads()), "NBUTILS_THREAD_POLICY": "off"}
        return policy_environment(environ={})
    if name.endswith("thread-inv") and name[:-10].isdigit():
        return {"OMP_NUM_THREADS": name[:-10], "NBUTILS_THREAD_POLICY": "off"}
    if name.endswith("thread") and name[:-6].isdigit():
        return {"OMP_NUM_THREADS": name[:-6], "NBUTILS_THREAD_POLICY": "off"}
    if name == "passive":
        return {"OMP_WAIT_POLICY": "PASSIVE", "NBUTILS_THREAD_POLICY": "off"}
    if name.startswith("spin") and name[4:].isdigit():
        return {"GOMP_SPINCOUNT": name[4:], "NBUTILS_THREAD_POLICY": "off"}
    raise SystemExit(f"unknown policy {name!r}: use old, new, adaptive, Nthread, passive or spinN")


def invariant_numerics(policy: str) -> bool:
    """Whether a policy's worker trains the thread-invariant model (nbutils.runtime.invariant),
    as every CPU training now does: ``new``, ``adaptive`` and the ``-inv`` counts."""
    return policy in ("new", "adaptive") or policy.endswith("-inv")


def make_governor(policy: str):
    """The governor a worker runs: ``new`` gets what training gets by default (none where the
    policy is not adaptive), ``adaptive`` always one."""
    if policy == "new":
        from nbutils.runtime.governor_callback import make_governor as training_governor

        return training_governor()
    if policy == "adaptive":
        from nbutils.runtime.governor import ThreadGovernor
        from nbutils.runtime.threads import usable_cpus

        return ThreadGovernor(usable_cpus())
    return None


def worker(args) -> None:
    """Time ``--steps`` training steps after ``--warmup`` untimed ones; print one JSON line.

    With a governor it runs from the first step (the warm-up too), as in training: before each
    step the count it chose is applied with torch.set_num_threads, after it the step's time per
    token goes back to it."""
    invariant = invariant_numerics(args.policy)
    if invariant:
        import nbutils  # noqa: F401 -- its environment (MKL's reproducible mode) before torch loads
    governor = make_governor(args.policy)  # before torch loads, as nbutils is imported in training
    import torch

    if not invariant:
        # MKL starts now, before anything imports nbutils (whose MKL_CBWR would switch on MKL's
        # reproducible mode, read once when MKL starts): the stock kernels, as before
        torch.ones(64, 64) @ torch.ones(64, 64)
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    # the demo's dropout: 0.1 when fine-tuning, none in pre-training (params/demo.yaml)
    dropout = 0.0 if args.task == "mlm" else 0.1
    config = BertConfig(vocab_size=21128, hidden_size=128, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=512, max_position_embeddings=128, num_labels=10,
                        hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)
    config._attn_implementation = "sdpa"  # as nbutils.runtime.device chooses
    if args.task == "mlm":
        from nbutils.pretraining.mlm import _mlm_class

        model = _mlm_class()(config).train()  # the demo's pre-training model (head on masked tokens only)
    else:
        model = BertForSequenceClassification(config).train()
    if invariant:
        from nbutils.runtime.invariant import make_thread_invariant

        make_thread_invariant(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-4, fused=True)
    generator = torch.Generator().manual_seed(0)

    def labels(ids):
        if args.task == "classify":
            return torch.randint(0, 10, (args.batch_size,), generator=generator)
        masked = torch.rand(ids.shape, generator=generator) < 0.15  # the demo's mlm_probability
        return torch.where(masked, ids, torch.full_like(ids, -100))

    batches = []
    for _ in range(8):
        ids = torch.randint(1, 21128, (args.batch_size, args.tokens), generator=generator)
        batches.append({"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels(ids)})
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.precision == "bf16")
    if governor is not None:
        torch.set_num_threads(governor.threads)
    times = []
    deadline = None
    for i in range(args.warmup + args.steps):
        batch = batches[i % len(batches)]
        if i == args.warmup:
            deadline = time.perf_counter() + args.max_worker_s
        if governor is not None:
            governor.step_begin()
        start = time.perf_counter()
        with autocast:
            loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        seconds = time.perf_counter() - start
        if governor is not None:
            before = governor.threads
            after = governor.step_end(batch["input_ids"].numel())
            if after != before:
                torch.set_num_threads(after)
        if i >= args.warmup:
            times.append(seconds)
            if time.perf_counter() > deadline:
                break
    print(json.dumps({"median_ms": 1000 * statistics.median(times), "mean_ms": 1000 * statistics.fmean(times),
                      "timed_steps": len(times), "threads": torch.get_num_threads(),
                      "mkl_reproducible": _mkl_reproducible(),
                      "schedule": governor.summary() if governor is not None else None}))


def _mkl_reproducible() -> bool | None:
    """Whether MKL ran in its strict reproducible mode (None: no MKL in this torch)."""
    from nbutils.runtime.invariant import mkl_strict_reproducible

    return mkl_strict_reproducible()  # MKL has started by now, so this only reads the mode


def start_hogs(count: int, seconds: float, nice: int = 0) -> list[subprocess.Popen]:
    """``count`` busy loops, each bounded: it exits by itself after ``seconds``."""
    code = f"import time\nend = time.monotonic() + {seconds}\nwhile time.monotonic() < end:\n    pass\n"
    return [subprocess.Popen([sys.executable, "-c", code], preexec_fn=_niceness(nice)) for _ in range(count)]


def _niceness(nice: int):
    """``--nice``: run workers and busy loops at this priority (negative needs root).

    Linux autogroup scheduling weighs process groups (one per ``setsid``), not processes, against
    each other, so each process gets its own group and the priority is set on both."""
    if not nice:
        return None

    def set_priority():
        os.setsid()
        os.nice(nice)
        try:
            with open("/proc/self/autogroup", "w") as f:
                f.write(str(nice))
        except OSError:
            pass  # no autogroup scheduling: the process priority is all there is

    return set_priority


def stop_hogs(hogs: list[subprocess.Popen]) -> None:
    for hog in hogs:
        hog.kill()
    for hog in hogs:
        hog.wait()


def run_worker(policy: str, args) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in WORKER_VARIABLES}
    env.update(policy_env(policy))
    cmd = [sys.executable, __file__, "--worker", "--policy", policy, "--steps", str(args.steps),
           "--warmup", str(args.warmup), "--max-worker-s", str(args.max_worker_s),
           "--batch-size", str(args.batch_size), "--tokens", str(args.tokens), "--precision", args.precision,
           "--task", args.task]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False, preexec_fn=_niceness(args.nice))
    if out.returncode != 0:
        raise SystemExit(f"worker for policy {policy!r} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policies", default="old,new,1thread",
                        help="comma-separated: old, new, adaptive, Nthread, passive, spinN")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (one worker per policy, condition)")
    parser.add_argument("--steps", type=int, default=300,
                        help="timed steps per worker (enough for the governor's probes to count)")
    parser.add_argument("--max-worker-s", type=float, default=90,
                        help="a worker stops timing after this many seconds (a collapsed policy is slow)")
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps first (allocator, kernels)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=24, help="tokens per text (a demo title is ~20)")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                        help="bf16: autocast, as fine-tuning on a CPU with native bf16 (nbutils.runtime.device)")
    parser.add_argument("--task", choices=("classify", "mlm"), default="classify",
                        help="classify: a fine-tuning step; mlm: a masked-LM pre-training step")
    parser.add_argument("--hogs", type=int, default=1, help="busy-loop processes in the contended condition")
    parser.add_argument("--hog-seconds", type=float, default=600, help="each busy loop stops by itself after this")
    parser.add_argument("--nice", type=int, default=0,
                        help="priority of workers and busy loops (e.g. -20 as root: other processes on a shared "
                             "machine then take a small share of the CPU, so 'quiet' is nearly quiet)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--policy", default="old", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)

    policies = [p.strip() for p in args.policies.split(",") if p.strip()]
    for policy in policies:
        policy_env(policy)  # unknown names fail before any timing
    print(f"{args.task} training step of the demo BERT (128x2, vocab 21,128), batch {args.batch_size} x {args.tokens} tokens, "
          f"{args.precision}; {os.cpu_count()} CPUs; {args.rounds} rounds x {args.steps} timed steps per worker; "
          f"contended = {args.hogs} busy-loop process(es) of our own; workers and busy loops at nice {args.nice}")
    for policy in policies:
        numerics = "thread-invariant model" if invariant_numerics(policy) else "stock kernels"
        print(f"  {policy:<12} env {policy_env(policy)}, {numerics}")
    load_before = os.getloadavg()
    results: dict[tuple[str, str], list[float]] = {}
    means: dict[tuple[str, str], list[float]] = {}
    threads: dict[str, int] = {}
    for r in range(args.rounds):
        order = policies[r % len(policies):] + policies[:r % len(policies)]
        for condition in ("quiet", "contended") if r % 2 == 0 else ("contended", "quiet"):
            hogs = start_hogs(args.hogs, args.hog_seconds, args.nice) if condition == "contended" else []
            try:
                time.sleep(0.5 if hogs else 0)  # let the busy loops start spinning
                for policy in order:
                    out = run_worker(policy, args)
                    threads[policy] = out["threads"]
                    if out["mkl_reproducible"] is not None and out["mkl_reproducible"] != invariant_numerics(policy):
                        raise SystemExit(f"worker for {policy!r}: MKL's reproducible mode is "
                                         f"{'on' if out['mkl_reproducible'] else 'off'}, expected the opposite")
                    results.setdefault((policy, condition), []).append(out["median_ms"])
                    means.setdefault((policy, condition), []).append(out["mean_ms"])
                    cut = "" if out["timed_steps"] == args.steps else f", timing cut at {out['timed_steps']} steps"
                    print(f"round {r + 1} {condition:<9} {policy:<12} median {out['median_ms']:7.1f} mean "
                          f"{out['mean_ms']:7.1f} ms/step (load {os.getloadavg()[0]:.2f}{cut})"
                          + (f"\n    {out['schedule']}" if out["schedule"] else ""), flush=True)
            finally:
                stop_hogs(hogs)
    load_after = os.getloadavg()

    for title, table in (("median", results), ("mean (probes and the steps before a move included)", means)):
        def value(policy: str, condition: str, table=table) -> float:
            return statistics.median(table[(policy, condition)])

        base = value(policies[0], "quiet")
        print(f"\n{title} ms per training step, median over {args.rounds} rounds; "
              f"'quiet vs {policies[0]}' compares each policy's quiet time with {policies[0]}'s quiet time")
        print(f"{'policy':<12} {'threads':>7} {'quiet':>8} {'contended':>10} {'contended/quiet':>16} "
              f"{'quiet vs ' + policies[0]:>14} {'contended vs ' + policies[0] + ' quiet':>24}")
        for policy in policies:
            quiet, busy = value(policy, "quiet"), value(policy, "contended")
            print(f"{policy:<12} {threads[policy]:>7} {quiet:8.1f} {busy:10.1f} {busy / quiet:15.2f}x "
                  f"{quiet / base:13.2f}x {busy / base:23.2f}x")
    print(f"load average (1, 5, 15 min) before: {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}; "
          f"after: {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}")


if __name__ == "__main__":
    main()
