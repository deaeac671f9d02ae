"""Long articles, big corpora: wall time and peak RSS per step and size, old code vs this tree.

Builds cnews-shaped data itself from the real THUCNews titles (``data/raw/thucnews-titles``,
``make data``): per size N, ``cnews.train.txt`` (N pseudo-articles), ``cnews.val.txt`` (N/10)
and ``cnews.test.txt`` (N/5) of ``label_name<TAB>article``, each article random titles of one
class joined until a length drawn around ~900 characters (log-normal, some far longer), and a
raw-corpus folder (one ``.txt`` per train article, one sub-folder per class). Everything goes to
``--work`` (default: a fresh folder in /tmp) and is deleted at the end unless ``--keep``.

Each step runs in its own process under ``/usr/bin/time``; wall time and peak RSS are what it
reports (the kernel's ``ru_maxrss`` of the process and of the children it waited for, e.g. the
notebook kernel):

- ``check``         ``nbutils data check`` of the cnews folder
- ``check-corpus``  ``nbutils data check --format corpus`` of the corpus folder
- ``check-csv``     ``nbutils data check`` of the same articles as one CSV file (``text,label,split``;
  every 10th article has a quoted line break, a comma and a doubled quote, so multi-line quoted
  fields are read), written once per size into ``--work``
- ``train128``/``train512``  ``finetune`` of a random 128x2 BERT (real vocabulary), head+tail
  truncation, 5 optimizer steps of 32, dev/test limited to 2,000 articles each (prediction at
  scale is the ``predict`` step); also prints the seconds from process start to the end of the
  first optimizer step
- ``explore``       notebook 02 through papermill with its default parameters (sampling)
- ``predict``       ``nbutils.predict`` of every test article (N/5: 100k at N=500k), max_length 128, in
  chunks; then the first 1,000 articles again the plain way (each whole article tokenized, cut,
  and run alone, no padding) and the agreement of the two label lists
- ``hf-datasets``   the Hugging Face ``datasets`` way to the same ids: ``load_dataset("csv")`` of the
  train file (Arrow cache in the step's folder), then a batched ``map`` tokenizing every article
  (max_length 512, the tokenizer's own truncation); against ``train512``'s time to first step
- ``tokenize``      the choice behind per-batch tokenization, three ways of producing the train
  split's ids at max_length 512, head+tail, each in its own process: ``whole`` (the old way:
  every article tokenized whole, then cut), ``windowed`` (every article, only its kept ends
  tokenized), ``per-batch`` (what training now does before its first step: one batch of 32)

The "old" arm is the same step run on another commit's code (``--old-ref``, default the commit
before this work), extracted with ``git archive`` and put first on PYTHONPATH; it runs only at
the sizes in ``--old-sizes`` (its fine-tuning needs ~10 GB at 50k articles). Both arms see the
same files. The ratio columns are old / new. Labels predicted by both arms are compared.

    python benchmarks/bench_scale.py                       # sizes 50000 and 500000 (~1.7 GB in /tmp)
    python benchmarks/bench_scale.py --sizes 5000 --old-sizes 5000 --steps check,train128
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
STEPS = ("check", "check-corpus", "check-csv", "train128", "train512", "explore", "predict", "tokenize",
         "hf-datasets")
_T0 = time.perf_counter()  # process start, for the driver sub-commands


# --- data -----------------------------------------------------------------------------------


def read_titles(titles_dir: Path) -> tuple[list[str], list[list[str]]]:
    names = (titles_dir / "class.txt").read_text(encoding="utf-8").split("\n")
    names = [n.strip() for n in names if n.strip()]
    per_class: list[list[str]] = [[] for _ in names]
    for split in ("train", "dev", "test"):
        for line in (titles_dir / f"{split}.txt").read_text(encoding="utf-8").split("\n"):
            text, _, label = line.rpartition("\t")
            if text.strip() and label.strip().isdigit():
                per_class[int(label)].append(text.strip())
    return names, per_class


def write_articles(path: Path, n: int, names, per_class, rng: np.random.Generator, corpus: Path | None) -> int:
    """``n`` pseudo-articles, classes balanced; returns characters written."""
    labels = rng.permutation(np.arange(n) % len(names))
    # ~900 characters on average (median ~780), a long tail up to 20,000
    lengths = np.clip(rng.lognormal(mean=np.log(780), sigma=0.55, size=n), 120, 20000).astype(int)
    written = 0
    with open(path, "w", encoding="utf-8", newline="\n") as out:
        for i, (label, length) in enumerate(zip(labels, lengths, strict=True)):
            pool = per_class[label]
            # enough titles in one draw (titles average ~20 characters), topped up if short
            parts = [pool[j] for j in rng.integers(len(pool), size=length // 12 + 2)]
            article = "。".join(parts)
            while len(article) < length:
                article += "。" + pool[rng.integers(len(pool))]
            article = article[:length] + "。"
            line = f"{names[label]}\t{article}\n"
            written += out.write(line)
            if corpus is not None:
                folder = corpus / names[label]
                folder.mkdir(parents=True, exist_ok=True)
                # the raw corpus keeps paragraphs on separate lines
                (folder / f"{i}.txt").write_text(article.replace("。", "。\n", 3), encoding="utf-8")
    return written


def make_data(titles_dir: Path, out: Path, n: int, seed: int) -> dict:
    names, per_class = read_titles(titles_dir)
    out.mkdir(parents=True)
    rng = np.random.default_rng([seed, n])
    t0 = time.perf_counter()
    sizes = {}
    for split, count, corpus in (("train", n, out.parent / f"{out.name}-corpus"), ("val", n // 10, None),
                                 ("test", n // 5, None)):
        write_articles(out / f"cnews.{split}.txt", count, names, per_class, rng, corpus)
        sizes[split] = (out / f"cnews.{split}.txt").stat().st_size
    return {"seconds": time.perf_counter() - t0, "bytes": sizes}


def make_table(data: Path, out: Path) -> int:
    """The cnews files as one CSV (``text,label,split``); returns its size in bytes. Every 10th
    article gets a line break, a comma and a quote inside its (quoted) text."""
    import csv

    tmp = out.with_suffix(".partial")
    with open(tmp, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["text", "label", "split"])
        for split, stem in (("train", "train"), ("dev", "val"), ("test", "test")):
            with open(data / f"cnews.{stem}.txt", encoding="utf-8") as lines:
                for i, line in enumerate(lines):
                    label, _, text = line.rstrip("\n").partition("\t")
                    if i % 10 == 0:
                        text = text[:40] + '\n他说，"好"' + text[40:]
                    writer.writerow([text, label, split])
    tmp.rename(out)
    return out.stat().st_size


def make_model(vocab: Path, names, out: Path) -> Path:
    from nbutils.checkpoints.random_bert import make_random_classifier

    return make_random_classifier(vocab, names, out, hidden_size=128, num_layers=2, num_heads=2,
                                  intermediate_size=512)


# --- measuring ------------------------------------------------------------------------------


def measured(cmd: list[str], env: dict, log: Path, cwd: str) -> dict:
    """Run ``cmd``; wall seconds, peak RSS (MB) of it and its waited-for children, load average."""
    load_before = os.getloadavg()
    # /usr/bin/time forks the step from its own small image: a child forked from this process
    # would report this process's peak RSS as its own (Linux keeps the high-water mark across exec).
    timing = log.with_suffix(".time")
    with open(log, "w") as out:
        rc = subprocess.run(["/usr/bin/time", "-f", "%e %M", "-o", str(timing), *cmd], env=env, stdout=out,
                            stderr=subprocess.STDOUT, cwd=cwd).returncode
    wall, max_kb = timing.read_text().split()[-2:]
    result = {"wall_s": float(wall), "peak_rss_mb": int(max_kb) / 1024, "rc": rc,
              "load_before": load_before[0], "load_after": os.getloadavg()[0]}
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("BENCH_SCALE "):
            result.update(json.loads(line[len("BENCH_SCALE "):]))
    return result


def step_command(step: str, data: Path, model: Path, out: Path, vocab: Path, table: Path) -> list[str]:
    me = [sys.executable, str(Path(__file__).resolve())]
    if step == "check":
        return [sys.executable, "-m", "nbutils.cli", "data", "check", str(data)]
    if step == "check-csv":
        return [sys.executable, "-m", "nbutils.cli", "data", "check", str(table)]
    if step == "check-corpus":
        return [sys.executable, "-m", "nbutils.cli", "data", "check", str(data.parent / f"{data.name}-corpus"),
                "--format", "corpus"]
    if step.startswith("train"):
        return [*me, "_train", str(data), str(model), str(out), step.removeprefix("train")]
    if step == "explore":
        return [*me, "_explore", str(data), str(out), str(vocab.parent)]
    if step == "predict":
        return [*me, "_predict", str(data), str(model), str(out)]
    if step == "hf-datasets":
        return [*me, "_hf_datasets", str(data), str(model), str(out)]
    if step.startswith("tokenize-"):
        return [*me, "_tokenize", str(data), str(model), step.removeprefix("tokenize-")]
    raise ValueError(step)


def old_tree(ref: str, dest: Path) -> Path:
    dest.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", ref], cwd=REPO, check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest


# --- driver sub-commands (run inside the measured process, with that arm's nbutils) -----------


def driver_train(data: str, model: str, out: str, max_length: str) -> None:
    from transformers import TrainerCallback

    from nbutils.data.dataset import load_dataset
    from nbutils.training.finetune import FinetuneConfig, finetune

    first = {}

    class FirstStep(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            first.setdefault("first_step_s", time.perf_counter() - _T0)

    t_load = time.perf_counter()
    ds = load_dataset(data, "cnews")
    load_s = time.perf_counter() - t_load
    config = FinetuneConfig(max_length=int(max_length), truncation="head+tail", max_steps=5, batch_size=32,
                            eval_batch_size=64, max_eval_samples=2000, max_test_samples=2000,
                            early_stopping_patience=0, device="cpu", precision="fp32")
    finetune(ds, model, Path(out) / f"train{max_length}", config, extra_callbacks=[FirstStep()],
             save_model=False)
    print("BENCH_SCALE " + json.dumps({**first, "load_s": load_s}), flush=True)


def driver_explore(data: str, out: str, vocab_dir: str) -> None:
    import papermill

    nb = Path(os.environ.get("PYTHONPATH", str(REPO)).split(":")[0]) / "notebooks" / "02_explore_data.ipynb"
    run_dir = Path(out) / "explore-run"
    run_dir.mkdir(parents=True, exist_ok=True)
    papermill.execute_notebook(
        str(nb), str(run_dir / "02.ipynb"), kernel_name="python3", cwd=str(nb.parent), progress_bar=False,
        parameters={"run_dir": str(run_dir), "headless": True, "data_dir": data, "data_format": "cnews",
                    "explore_vocab_dir": vocab_dir})
    stats = json.loads((run_dir / "explore" / "stats.json").read_text(encoding="utf-8"))
    print("BENCH_SCALE " + json.dumps({"recommended_max_length": stats.get("recommended_max_length"),
                                       "sampled_texts": stats.get("length_sample", {}).get("texts")}), flush=True)


def driver_tokenize(data: str, model: str, way: str) -> None:
    from nbutils.data.dataset import load_dataset
    from nbutils.text.tokenization import Truncator, load_tokenizer

    texts = load_dataset(data, "cnews").text_column("train")
    tokenizer = load_tokenizer(model)
    cut = Truncator(tokenizer, 512, "head+tail")
    t0 = time.perf_counter()
    if way == "whole":
        full = tokenizer(list(texts), add_special_tokens=True, truncation=False, verbose=False)["input_ids"]
        ids = [cut.cut(x) for x in full]
    elif way == "windowed":
        ids = [x for a in range(0, len(texts), 4096) for x in cut(list(texts[a:a + 4096]))]
    else:
        ids = cut(list(texts[:32]))
    seconds = time.perf_counter() - t0
    print("BENCH_SCALE " + json.dumps({"tokenize_s": seconds, "texts": len(ids),
                                       "tokens": sum(map(len, ids))}), flush=True)


def driver_predict(data: str, model: str, out: str) -> None:
    from nbutils import predict

    path = Path(data) / "cnews.test.txt"
    with open(path, encoding="utf-8") as f:  # read as a user would pass a file of texts
        texts = [line.rstrip("\n").partition("\t")[2] for line in f]
    t0 = time.perf_counter()
    frame = predict(texts, model, batch_size=64, max_length=128, device="cpu")
    predict_s = time.perf_counter() - t0
    labels = np.asarray(frame["label"].astype(str))
    np.save(Path(out) / "labels.npy", labels)
    # the reference: one article at a time, tokenized whole and then cut, no batching or padding
    import torch

    from nbutils.inference.predict import load_predictor

    predictor = load_predictor(model, "cpu")
    cut = predictor.truncator(128, None)
    subset = texts[:1000]
    reference = []
    with torch.inference_mode():
        for text in subset:
            ids = cut.cut(predictor.tokenizer(text, add_special_tokens=True, truncation=False)["input_ids"])
            logits = predictor.model(input_ids=torch.tensor([ids])).logits
            reference.append(predictor.label_names[int(logits.argmax())])
    same = int((labels[:len(subset)] == np.asarray(reference)).sum())
    print(f"predict: chunked and one-at-a-time labels agree on {same:,} of {len(subset):,} texts", flush=True)
    print("BENCH_SCALE " + json.dumps({"texts": len(texts), "predict_s": predict_s,
                                       "agree": f"{same}/{len(subset)}"}), flush=True)


def driver_hf_datasets(data: str, model: str, out: str) -> None:
    import datasets
    from transformers import AutoTokenizer

    datasets.disable_progress_bars()
    tokenizer = AutoTokenizer.from_pretrained(model)
    t0 = time.perf_counter()
    ds = datasets.load_dataset("csv", data_files=str(Path(data) / "cnews.train.txt"), delimiter="\t",
                               column_names=["label", "text"], quoting=3, split="train",
                               cache_dir=str(Path(out) / "hf-cache"))
    load_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    ds = ds.map(lambda batch: tokenizer(batch["text"], truncation=True, max_length=512), batched=True,
                batch_size=1000)
    map_s = time.perf_counter() - t1
    print("BENCH_SCALE " + json.dumps({"texts": len(ds), "load_s": load_s, "map_s": map_s,
                                       "ready_s": time.perf_counter() - _T0}), flush=True)


# --- main -----------------------------------------------------------------------------------


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1].startswith("_"):
        drivers = {"_train": driver_train, "_explore": driver_explore, "_predict": driver_predict,
                   "_tokenize": driver_tokenize, "_hf_datasets": driver_hf_datasets,
                   "_model": lambda vocab, titles, out: make_model(Path(vocab), read_titles(Path(titles))[0], Path(out))}
        drivers[sys.argv[1]](*sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="50000,500000", help="train articles per size, comma-separated")
    parser.add_argument("--old-sizes", default="50000", help="sizes at which the old code also runs")
    parser.add_argument("--old-ref", default="aac2b1a", help="commit whose code is the old arm")
    parser.add_argument("--old-code", default="", help="a folder holding the old code (instead of --old-ref)")
    parser.add_argument("--old-steps", default="check,check-corpus,train128,explore,predict",
                        help="steps the old arm runs (train512 tokenizes like train128: same memory growth)")
    parser.add_argument("--steps", default=",".join(STEPS), help=f"comma-separated subset of {STEPS}")
    parser.add_argument("--titles", default=str(REPO / "data/raw/thucnews-titles"))
    parser.add_argument("--vocab", default=str(REPO / "data/raw/bert-base-chinese-vocab/vocab.txt"))
    parser.add_argument("--work", default="", help="folder for the generated data (default: new /tmp folder)")
    parser.add_argument("--keep", action="store_true", help="keep the generated data")
    parser.add_argument("--data-dir", default="", help="use this cnews folder (its N train articles, one size) "
                        "instead of generating one; a sibling DIR-corpus folder is the corpus")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    old_sizes = {int(s) for s in args.old_sizes.split(",") if s}
    steps = [s for s in args.steps.split(",") if s]
    unknown = set(steps) - set(STEPS)
    if unknown:
        parser.error(f"unknown steps {sorted(unknown)}")
    if "tokenize" in steps:  # three ways, each measured in its own process (new code only)
        i = steps.index("tokenize")
        steps[i:i + 1] = ["tokenize-whole", "tokenize-windowed", "tokenize-per-batch"]
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="bench_scale_"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"work folder {work}; {os.cpu_count()} CPUs; load average {os.getloadavg()}", flush=True)
    try:
        run(args, sizes, old_sizes, steps, work)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def run(args, sizes, old_sizes, steps, work: Path) -> None:
    names, _ = read_titles(Path(args.titles))
    # in a child process: this one stays small (torch is never imported here)
    subprocess.run([sys.executable, str(Path(__file__).resolve()), "_model", args.vocab, args.titles,
                    str(work / "model")], check=True)
    model = work / "model" / "clf"
    arms = {"new": str(REPO)}
    if old_sizes & set(sizes):
        arms["old"] = args.old_code or str(old_tree(args.old_ref, work / "old-code"))
    results = []
    for n in sizes:
        data = Path(args.data_dir) if args.data_dir else work / f"cnews-{n}"
        made = ({"seconds": 0.0, "bytes": {f: (data / f"cnews.{f}.txt").stat().st_size for f in ("train", "val", "test")}}
                if args.data_dir else make_data(Path(args.titles), data, n, args.seed))
        print(f"\n== size {n:,} train articles: {made['bytes']['train'] / 1e6:.0f} MB train, "
              f"{sum(made['bytes'].values()) / 1e6:.0f} MB in all (made in {made['seconds']:.0f} s)", flush=True)
        table = work / f"table-{n}.csv"
        if "check-csv" in steps and not table.exists():
            t0 = time.perf_counter()
            size = make_table(data, table)
            print(f"CSV of the same articles: {size / 1e6:.0f} MB (made in {time.perf_counter() - t0:.0f} s)",
                  flush=True)
        for step in steps:
            for arm, code in arms.items():
                if arm == "old" and (n not in old_sizes or step not in args.old_steps.split(",")
                                     or step.startswith("tokenize-")):
                    continue
                out = work / f"out-{n}-{step}-{arm}"
                out.mkdir()
                env = {**os.environ, "PYTHONPATH": code, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2"),
                       "TOKENIZERS_PARALLELISM": "true"}
                # cwd = the arm's code: `python -m` puts the working directory first on sys.path
                r = measured(step_command(step, data, model, out, Path(args.vocab), table), env, out / "log.txt", code)
                r.update(size=n, step=step, arm=arm)
                if step == "predict" and (out / "labels.npy").exists():
                    r["labels_file"] = str(out / "labels.npy")
                results.append(r)
                extra = {k: v for k, v in r.items() if k in ("first_step_s", "load_s", "texts", "sampled_texts",
                                                             "recommended_max_length", "tokenize_s", "tokens",
                                                             "predict_s", "agree", "map_s", "ready_s")}
                print(f"{step:>13} {arm:>3}: wall {r['wall_s']:7.1f} s  peak RSS {r['peak_rss_mb']:8.0f} MB  "
                      f"rc {r['rc']}  load {r['load_before']:.2f}->{r['load_after']:.2f}  "
                      + " ".join(f"{k}={v:.1f}" if isinstance(v, float) else f"{k}={v}" for k, v in extra.items()),
                      flush=True)
                if r["rc"]:
                    print((out / "log.txt").read_text(errors="replace")[-3000:], flush=True)
        if "predict" in steps and n in old_sizes:
            files = [r.get("labels_file") for r in results if r["size"] == n and r["step"] == "predict"]
            if len(files) == 2 and all(files):
                a, b = (np.load(f, allow_pickle=True) for f in files)
                print(f"predict: old and new labels identical for {int((a == b).sum()):,} of {len(a):,} texts",
                      flush=True)
        if not args.data_dir:  # a folder we were given is not ours to delete
            shutil.rmtree(data.parent / f"{data.name}-corpus", ignore_errors=True)
            shutil.rmtree(data, ignore_errors=True)
        table.unlink(missing_ok=True)
    summary(results, sizes)


def summary(results, sizes) -> None:
    by = {(r["size"], r["step"], r["arm"]): r for r in results}
    print("\nold / new at the same size (time and peak RSS ratios; > 1: the new code is cheaper)")
    for (n, step, arm), r in by.items():
        if arm == "old" and (n, step, "new") in by:
            new = by[(n, step, "new")]
            fs = (f", first step {r['first_step_s']:.1f} s vs {new['first_step_s']:.1f} s"
                  if "first_step_s" in r and "first_step_s" in new else "")
            print(f"  {n:>7,} {step:>13}: time {r['wall_s'] / new['wall_s']:.2f}x, "
                  f"peak RSS {r['peak_rss_mb'] / new['peak_rss_mb']:.2f}x{fs}")
    if len(sizes) > 1:
        small, big = min(sizes), max(sizes)
        print(f"\nnew code, {big:,} vs {small:,} articles ({big / small:.0f}x the data)")
        for (n, step, arm), r in by.items():
            if n == big and arm == "new" and (small, step, "new") in by:
                s = by[(small, step, "new")]
                fs = (f", time to first step {r['first_step_s'] / s['first_step_s']:.2f}x"
                      if "first_step_s" in r and "first_step_s" in s else "")
                print(f"  {step:>13}: time {r['wall_s'] / s['wall_s']:.2f}x, "
                      f"peak RSS {r['peak_rss_mb'] / s['peak_rss_mb']:.2f}x{fs}")
    for n in sizes:
        ways = {w: by.get((n, f"tokenize-{w}", "new")) for w in ("whole", "windowed", "per-batch")}
        if all(ways.values()):
            whole, windowed, batch = ways["whole"], ways["windowed"], ways["per-batch"]
            print(f"\ntrain split of {n:,} articles to ids (max_length 512, head+tail): whole-text "
                  f"{whole['tokenize_s']:.1f} s / {whole['peak_rss_mb']:.0f} MB, windowed {windowed['tokenize_s']:.1f} s / "
                  f"{windowed['peak_rss_mb']:.0f} MB ({whole['tokenize_s'] / windowed['tokenize_s']:.2f}x faster, "
                  f"{whole['peak_rss_mb'] / windowed['peak_rss_mb']:.2f}x less memory, same {windowed['tokens']:,} "
                  f"tokens: {whole['tokens'] == windowed['tokens']}), one batch of 32 {batch['tokenize_s'] * 1000:.0f} ms")
    for n in sizes:
        hf, ours = by.get((n, "hf-datasets", "new")), by.get((n, "train512", "new"))
        if hf and ours and "ready_s" in hf and "first_step_s" in ours:
            print(f"\n{n:,} articles, max_length 512: datasets load + map ready after {hf['ready_s']:.1f} s "
                  f"(load {hf['load_s']:.1f} s, map {hf['map_s']:.1f} s), peak RSS {hf['peak_rss_mb']:.0f} MB; "
                  f"TextStore + per-batch tokenization: first optimizer step after {ours['first_step_s']:.1f} s, "
                  f"peak RSS {ours['peak_rss_mb']:.0f} MB (training included); "
                  f"{hf['ready_s'] / ours['first_step_s']:.2f}x the time to start")
    print("\nBENCH_SCALE_RESULTS " + json.dumps(results, default=str))


if __name__ == "__main__":
    main()
