"""Are the character attributions faithful? ERASER comprehensiveness on the test split.

For test titles (a seeded random sample), each method scores every character for the predicted
class (``nbutils.explain.attributions``): integrated gradients (the torch default), occlusion (the
ONNX default) and, as the control, last-layer attention from [CLS]. Then, per method and per k,
the k highest-scored characters are deleted from each text, and k random characters of the same
text in another copy; the mean drop of the predicted class's (calibrated) probability of the two
is compared (``nbutils.explain.faithfulness.comprehensiveness``; DeYoung et al. 2020). A ratio
above 1 means the method's characters matter more to the model than random ones.

    python benchmarks/bench_faithfulness.py --model runs/<run>/finetune/model
    python benchmarks/bench_faithfulness.py --model M --n 1000 --k 1 3 5 --out benchmarks/results/faithfulness.json
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

from nbutils.core.paths import REPO_ROOT
from nbutils.data.dataset import load_dataset
from nbutils.explain.attributions import MAX_TEXTS, explain
from nbutils.explain.faithfulness import comprehensiveness
from nbutils.inference.predict import load_predictor
from nbutils.runtime.machine import cpu_name

METHODS = ("integrated-gradients", "occlusion", "attention")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="fine-tuned model folder")
    parser.add_argument("--data", default=str(REPO_ROOT / "data/raw/thucnews-titles"))
    parser.add_argument("--n", type=int, default=1000, help="test texts (a seeded random sample)")
    parser.add_argument("--k", type=int, nargs="+", default=[1, 3, 5], help="characters deleted")
    parser.add_argument("--n-steps", type=int, default=32, help="integrated-gradients steps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="", help="write the results as JSON here")
    args = parser.parse_args()

    texts = load_dataset(args.data).texts("test")
    rng = np.random.default_rng(args.seed)
    sample = [texts[int(i)] for i in rng.choice(len(texts), size=min(args.n, len(texts)), replace=False)]
    predictor = load_predictor(str(Path(args.model).resolve()), "cpu", "torch")
    rows, seconds = [], {}
    for method in METHODS:
        t0 = time.perf_counter()
        attributions = []
        for start in range(0, len(sample), MAX_TEXTS):
            attributions += explain(sample[start:start + MAX_TEXTS], predictor=predictor, method=method,
                                    n_steps=args.n_steps)
        seconds[method] = time.perf_counter() - t0
        for k in args.k:
            result = comprehensiveness(predictor, attributions, k, seed=args.seed)
            rows.append(result.as_dict())
            print(f"{method:>21}  k={k}: probability drop {result.drop_top:.4f} (top-k) vs "
                  f"{result.drop_random:.4f} (random k) -> ratio {result.ratio:.2f} "
                  f"over {result.texts} texts", flush=True)
        print(f"{method:>21}  {seconds[method] / len(sample) * 1000:.1f} ms per text", flush=True)
    config = json.loads((Path(args.model) / "config.json").read_text(encoding="utf-8"))
    model = os.path.relpath(args.model, REPO_ROOT)  # repository-relative where it is inside it
    summary = {
        "command": f"python benchmarks/bench_faithfulness.py --model {model} --n {args.n} "
                   f"--k {' '.join(map(str, args.k))} --n-steps {args.n_steps} --seed {args.seed}",
        "model": {"folder": model, "hidden_size": config.get("hidden_size"),
                  "num_hidden_layers": config.get("num_hidden_layers"),
                  "temperature": predictor.temperature},
        "test_texts": len(sample), "rows": rows,
        "ms_per_text": {m: s / len(sample) * 1000 for m, s in seconds.items()},
        "cpu": cpu_name(), "load_average_at_end": list(os.getloadavg()),
    }
    if args.out:
        Path(args.out).write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        print("wrote", args.out)


if __name__ == "__main__":
    main()
