"""Convert Google's TensorFlow BERT checkpoints to Hugging Face folders, and back; turn any
model source (TF checkpoint, Hugging Face folder, hub id) into one Hugging Face folder
(:func:`resolve_model_source`).

transformers 5 no longer loads TensorFlow checkpoints, so this module reads them itself
(:mod:`nbutils.checkpoints.tfcheckpoint`) and maps Google's variable names onto Hugging Face BERT:

    bert/embeddings/...            -> bert.embeddings.*
    bert/encoder/layer_N/...       -> bert.encoder.layer.N.*   (kernels transposed)
    bert/pooler/dense/...          -> bert.pooler.dense.*
    cls/predictions/...            -> cls.predictions.*        (MLM head; decoder tied to embeddings)
    cls/seq_relationship/...       -> cls.seq_relationship.*   (NSP head)
    output_weights, output_bias    -> classifier.*             (run_classifier.py's head)

Nothing is initialised silently: every model parameter must come from the checkpoint and every
checkpoint tensor must be used or be training state (adam slots, global_step, ...), or the
conversion stops with a table of what is missing or unused. ``init_fresh`` names parameters
the user wants freshly initialised; ``ignore`` names checkpoint tensors to drop.

The conversion streams: tensors are read from the memory-mapped shards, CRC-checked,
transposed one at a time and written straight into model.safetensors (whose format is a JSON
header plus raw bytes), so peak memory stays near one tensor rather than the whole model, and
no torch model is built. Loadability is checked separately (:func:`verify_conversion`, tests).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import shutil
import struct
import tempfile
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import crc32c as _crc32c
import numpy as np

from nbutils.checkpoints.model_folder import check_model_dir, is_local_path
from nbutils.checkpoints.tfcheckpoint import TFCheckpoint, checkpoint_prefix, write_checkpoint
from nbutils.checkpoints.weights import quiet_weight_files
from nbutils.core.errors import NbutilsError
from nbutils.core.io import atomic_dir, write_json
from nbutils.core.run_contract import CONVERSION_REPORT
from nbutils.text.vocab import read_vocab, write_tokenizer_files

# Keys of Google's bert_config.json (what export writes and convert requires).
GOOGLE_CONFIG_KEYS = (
    "attention_probs_dropout_prob", "hidden_act", "hidden_dropout_prob", "hidden_size",
    "initializer_range", "intermediate_size", "max_position_embeddings", "num_attention_heads",
    "num_hidden_layers", "type_vocab_size", "vocab_size",
)
REQUIRED_CONFIG_KEYS = ("hidden_size", "intermediate_size", "max_position_embeddings",
                        "num_attention_heads", "num_hidden_layers", "type_vocab_size", "vocab_size")
MODEL_CLASSES = {"pretraining": "BertForPreTraining", "classification": "BertForSequenceClassification", "base": "BertModel"}

# Optimizer and bookkeeping state that TF training saves next to the weights.
TRAINING_STATE = re.compile(
    r"(^|/)(adam_m|adam_v|Adam|Adam_1|Momentum|lamb_m|lamb_v)$"
    r"|^(global_step|beta1_power|beta2_power|loss_scale|good_steps|current_loss_scale)$"
)
_SAFETENSORS_DTYPES = {"float32": "F32", "float16": "F16", "bfloat16": "BF16", "float64": "F64",
                       "int64": "I64", "int32": "I32", "int16": "I16", "int8": "I8", "uint8": "U8", "bool": "BOOL"}


@dataclass(frozen=True)
class Param:
    """One BERT parameter in both namings. ``tf_shape`` is Google's (kernels are [in, out])."""

    tf_name: str
    hf_name: str
    tf_shape: tuple[int, ...]
    transpose: bool = False

    @property
    def hf_shape(self) -> tuple[int, ...]:
        return self.tf_shape[::-1] if self.transpose else self.tf_shape


def bert_params(cfg: dict, *, prefix: str = "bert.", pooler: bool = True, mlm: bool = False,
                nsp: bool = False, num_labels: int = 0) -> list[Param]:
    """Every parameter of a Hugging Face BERT with the given heads, with Google's name and shape."""
    h, inter, vocab = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    out: list[Param] = []

    def dense(tf: str, hf: str, n_in: int, n_out: int) -> None:
        out.append(Param(f"{tf}/kernel", f"{hf}.weight", (n_in, n_out), transpose=True))
        out.append(Param(f"{tf}/bias", f"{hf}.bias", (n_out,)))

    def layer_norm(tf: str, hf: str) -> None:
        out.append(Param(f"{tf}/gamma", f"{hf}.weight", (h,)))
        out.append(Param(f"{tf}/beta", f"{hf}.bias", (h,)))

    emb = f"{prefix}embeddings"
    out.append(Param("bert/embeddings/word_embeddings", f"{emb}.word_embeddings.weight", (vocab, h)))
    out.append(Param("bert/embeddings/token_type_embeddings", f"{emb}.token_type_embeddings.weight", (cfg["type_vocab_size"], h)))
    out.append(Param("bert/embeddings/position_embeddings", f"{emb}.position_embeddings.weight", (cfg["max_position_embeddings"], h)))
    layer_norm("bert/embeddings/LayerNorm", f"{emb}.LayerNorm")
    for i in range(cfg["num_hidden_layers"]):
        tf, hf = f"bert/encoder/layer_{i}", f"{prefix}encoder.layer.{i}"
        for part in ("query", "key", "value"):
            dense(f"{tf}/attention/self/{part}", f"{hf}.attention.self.{part}", h, h)
        dense(f"{tf}/attention/output/dense", f"{hf}.attention.output.dense", h, h)
        layer_norm(f"{tf}/attention/output/LayerNorm", f"{hf}.attention.output.LayerNorm")
        dense(f"{tf}/intermediate/dense", f"{hf}.intermediate.dense", h, inter)
        dense(f"{tf}/output/dense", f"{hf}.output.dense", inter, h)
        layer_norm(f"{tf}/output/LayerNorm", f"{hf}.output.LayerNorm")
    if pooler:
        dense("bert/pooler/dense", f"{prefix}pooler.dense", h, h)
    if mlm:
        dense("cls/predictions/transform/dense", "cls.predictions.transform.dense", h, h)
        layer_norm("cls/predictions/transform/LayerNorm", "cls.predictions.transform.LayerNorm")
        out.append(Param("cls/predictions/output_bias", "cls.predictions.bias", (vocab,)))
    if nsp:  # output_weights is stored [out, in] already: no transpose
        out.append(Param("cls/seq_relationship/output_weights", "cls.seq_relationship.weight", (2, h)))
        out.append(Param("cls/seq_relationship/output_bias", "cls.seq_relationship.bias", (2,)))
    if num_labels:
        out.append(Param("output_weights", "classifier.weight", (num_labels, h)))
        out.append(Param("output_bias", "classifier.bias", (num_labels,)))
    return out


def _table(rows: Sequence[Sequence[object]], header: Sequence[str], limit: int = 40) -> str:
    rows = [[str(c) for c in r] for r in rows]
    shown = rows[:limit]
    widths = [max(len(h), *(len(r[i]) for r in shown)) if shown else len(h) for i, h in enumerate(header)]
    lines = ["  " + "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    lines += ["  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in shown]
    if len(rows) > limit:
        lines.append(f"  ... and {len(rows) - limit} more")
    return "\n".join(lines)


# --- finding the checkpoint and its config/vocab -------------------------------------------------


@dataclass
class Source:
    """A resolved checkpoint: its prefix and the config/vocab that go with it."""

    given: str
    prefix: Path
    config_path: Path
    vocab_path: Path
    unzipped: Path | None = None  # temporary folder a zip was unpacked into

    def shown(self, path: Path) -> str:
        """A path as the user can find it again: ``x.zip!/member`` for files inside a zip."""
        if self.unzipped is not None and path.is_relative_to(self.unzipped):
            return f"{self.given}!/{path.relative_to(self.unzipped).as_posix()}"
        return str(path)


@contextlib.contextmanager
def open_source(src: str | Path, *, config: str | Path | None = None, vocab: str | Path | None = None,
                work_dir: str | Path | None = None) -> Iterator[Source]:
    """Resolve SRC (folder, prefix, .index, .data-*, .meta or .zip) to one checkpoint.

    A zip is unpacked into a temporary folder (inside ``work_dir`` if given) for the duration.
    """
    src_path = Path(src).expanduser()
    unzipped = None
    with contextlib.ExitStack() as stack:
        if src_path.suffix == ".zip":
            if not src_path.is_file():
                raise NbutilsError(f"{src_path}: file not found", fix="check the path of the checkpoint zip")
            unzipped = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=".unzip-", dir=work_dir)))
        with _named_inside_zip(Path(src).expanduser(), unzipped):
            if unzipped is not None:
                src_path = _unzip_checkpoint(src_path, unzipped)
            yield _resolve_source(str(src), src_path, config, vocab, unzipped)


@contextlib.contextmanager
def _named_inside_zip(zip_path: Path, unzipped: Path | None):
    """Errors name files inside a zip as ``x.zip!/member``, never the temporary folder, which is
    gone by the time the user reads the message."""
    try:
        yield
    except NbutilsError as err:
        if unzipped is not None:
            err.message = err.message.replace(str(unzipped), f"{zip_path}!")
            err.fix = err.fix.replace(str(unzipped), f"{zip_path}!") if err.fix else err.fix
            err.args = (str(err),)
        raise


def _is_zip_junk(name: str) -> bool:
    """macOS's resource forks (``__MACOSX/``, ``._name``) and Finder files: not checkpoint data."""
    parts = Path(name).parts
    return "__MACOSX" in parts or any(p.startswith("._") or p == ".DS_Store" for p in parts)


def _unzip_checkpoint(zip_path: Path, tmp: Path) -> Path:
    """Unpack the zip (without macOS junk) into ``tmp``; the folder of its one checkpoint."""
    try:
        with zipfile.ZipFile(zip_path) as zf:
            members = [m for m in zf.namelist() if not _is_zip_junk(m)]
            zf.extractall(tmp, members)  # extractall drops absolute paths and "..": no writes outside tmp
    except (zipfile.BadZipFile, EOFError, OSError) as err:
        raise NbutilsError(f"{zip_path}: cannot unzip ({err})", fix="download the zip again") from None
    indexes = sorted(tmp.rglob("*.index"))
    if not indexes:
        raise NbutilsError(f"{zip_path}: no *.index file inside the zip", fix="this zip holds no TF checkpoint")
    folders = sorted({p.parent for p in indexes})
    if len(folders) > 1 or (len(indexes) > 1 and not (folders[0] / "checkpoint").is_file()):
        # Picking one would convert a checkpoint the user may not have meant, without a word.
        names = ", ".join(f"{zip_path}!/{p.relative_to(tmp).as_posix()}" for p in indexes)
        raise NbutilsError(f"{zip_path} holds {len(indexes)} checkpoints: {names}",
                           fix="unzip it and pass the prefix of the one you want "
                               "(e.g. .../bert_model.ckpt), or zip only that one")
    return folders[0]  # one checkpoint, or several with TF's `checkpoint` file naming the latest


def _resolve_source(given: str, src_path: Path, config, vocab, unzipped: Path | None) -> Source:
    if not src_path.exists() and not src_path.with_name(src_path.name + ".index").exists():
        raise NbutilsError(
            f"{src_path}: no such checkpoint (neither the path nor {src_path.name}.index exists)",
            fix="pass the checkpoint folder, its prefix (…/bert_model.ckpt), its .index or a .data-* file",
        )
    prefix = checkpoint_prefix(src_path)
    folder = prefix.parent
    config_path = Path(config) if config else folder / "bert_config.json"
    vocab_path = Path(vocab) if vocab else folder / "vocab.txt"
    for path, what, flag in ((config_path, "bert_config.json", "--config"), (vocab_path, "vocab.txt", "--vocab")):
        if not path.is_file():
            raise NbutilsError(
                f"{path}: {what} not found next to the checkpoint",
                fix=f"pass it with {flag} (run_classifier.py output folders hold no config/vocab: "
                "use the ones of the model you fine-tuned from)",
            )
    return Source(given, prefix, config_path, vocab_path, unzipped)


def read_bert_config(path: str | Path) -> dict:
    path = Path(path)
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise NbutilsError(f"{path}:{err.lineno}: invalid JSON ({err.msg})", fix="use the bert_config.json of the checkpoint") from None
    missing = [k for k in REQUIRED_CONFIG_KEYS if not isinstance(cfg.get(k), int)]
    if missing:
        raise NbutilsError(f"{path}: missing or non-integer keys {missing}", fix="use Google's bert_config.json for this checkpoint")
    check_attention_heads(cfg, path)
    return cfg


def check_attention_heads(cfg: dict, where: str | Path) -> None:
    """hidden_size must split evenly into num_attention_heads (each head gets hidden/heads
    dimensions); otherwise the written model cannot be loaded by transformers."""
    hidden, heads = cfg.get("hidden_size"), cfg.get("num_attention_heads")
    if isinstance(hidden, int) and isinstance(heads, int) and (heads < 1 or hidden % heads):
        raise NbutilsError(f"{where}: hidden_size={hidden} is not a multiple of num_attention_heads={heads}",
                           fix="use the bert_config.json of this checkpoint; each attention head needs "
                               "hidden_size / num_attention_heads dimensions (e.g. 768 / 12)")


# --- planning: which tensor goes where --------------------------------------------------------


@dataclass
class Plan:
    model_class: str  # key of MODEL_CLASSES
    params: list[Param]
    mapped: list[Param] = field(default_factory=list)
    fresh: list[Param] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # training state
    ignored: list[str] = field(default_factory=list)  # named by the user
    num_labels: int = 0


def _matches(name: str, patterns: Sequence[str], sep: str) -> bool:
    """``name`` equals a pattern or lies under it (``cls.seq_relationship`` covers its weight and bias)."""
    return any(name == p or name.startswith(p.rstrip(sep) + sep) for p in patterns if p)


def plan_conversion(ckpt: TFCheckpoint, cfg: dict, *, model_class: str = "auto",
                    init_fresh: Sequence[str] = (), ignore: Sequence[str] = (), source: str = "") -> Plan:
    """Match checkpoint tensors to model parameters; raise with a table if anything does not fit."""
    names = list(ckpt.infos)
    if model_class == "auto":
        if "output_weights" in ckpt:
            model_class = "classification"
        elif any(n.startswith("cls/") and not TRAINING_STATE.search(n) for n in names):
            model_class = "pretraining"
        else:
            model_class = "base"
    if model_class not in MODEL_CLASSES:
        raise NbutilsError(f"unknown model class {model_class!r}", fix=f"use one of auto, {', '.join(MODEL_CLASSES)}")
    num_labels = 0
    if model_class == "classification":
        if "output_weights" not in ckpt:
            raise NbutilsError(f"{ckpt.index_path}: no output_weights tensor: not a run_classifier.py checkpoint",
                               fix="use --model-class auto/pretraining/base")
        num_labels = ckpt.infos["output_weights"].shape[0]
    heads = {"pretraining": {"mlm": True, "nsp": True}, "classification": {"num_labels": num_labels}, "base": {}}[model_class]
    params = bert_params(cfg, prefix="" if model_class == "base" else "bert.", **heads)
    plan = Plan(model_class, params, num_labels=num_labels)

    by_tf = {p.tf_name: p for p in params}
    missing, bad_shape = [], []
    for p in params:
        if p.tf_name not in ckpt:
            if _matches(p.hf_name, init_fresh, "."):
                plan.fresh.append(p)
            else:
                missing.append(p)
        elif ckpt.infos[p.tf_name].shape != p.tf_shape:
            bad_shape.append((p.tf_name, ckpt.infos[p.tf_name].shape, p.tf_shape))
        else:
            plan.mapped.append(p)
    unused = []
    for name in names:
        if name in by_tf:
            continue
        if TRAINING_STATE.search(name):
            plan.skipped.append(name)
        elif _matches(name, ignore, "/"):
            plan.ignored.append(name)
        else:
            unused.append(name)
    problems = []
    if bad_shape:
        problems.append("shapes differ from what bert_config.json implies:\n"
                        + _table(bad_shape, ("checkpoint tensor", "checkpoint shape", "expected")))
    if missing:
        problems.append(f"{len(missing)} parameter(s) of {MODEL_CLASSES[model_class]} are not in the checkpoint "
                        "(they would be randomly initialised):\n"
                        + _table([(p.hf_name, p.tf_name, p.tf_shape) for p in missing], ("model parameter", "expected TF name", "shape")))
    if unused:
        problems.append(f"{len(unused)} checkpoint tensor(s) match no parameter (they would be dropped):\n"
                        + _table([(n, ckpt.infos[n].shape, ckpt.infos[n].dtype) for n in unused], ("checkpoint tensor", "shape", "dtype")))
    if problems:
        raise NbutilsError(
            f"{source or ckpt.prefix}: the checkpoint does not match a {MODEL_CLASSES[model_class]} "
            f"built from its bert_config.json\n" + "\n".join(problems),
            fix="use the bert_config.json that belongs to this checkpoint; to proceed anyway name parts "
            "with --init-fresh HF_PREFIX (e.g. cls.seq_relationship) or --ignore TF_PREFIX, "
            "or choose --model-class",
        )
    return plan


# --- writing ----------------------------------------------------------------------------------


def _fresh_value(p: Param, cfg: dict, rng: np.random.Generator) -> np.ndarray:
    """BERT's initialisation (normal(0, initializer_range), zero biases, unit LayerNorm scale)."""
    if p.tf_name.endswith(("/gamma",)):
        return np.ones(p.hf_shape, np.float32)
    if p.tf_name.endswith(("/beta", "/bias", "output_bias")):
        return np.zeros(p.hf_shape, np.float32)
    return rng.normal(0.0, cfg.get("initializer_range", 0.02), p.hf_shape).astype(np.float32)


def write_safetensors(path: Path, tensors: Sequence[tuple[str, str, tuple[int, ...], object]]) -> int:
    """Stream tensors into a .safetensors file; return the file's CRC32C.

    ``tensors``: (name, dtype, shape, get, done) where ``get()`` returns the C-contiguous array
    of storage bytes, called once just before writing it, and ``done()`` (or None) runs after.
    The header is fully known up front (names, dtypes, shapes), so each tensor can be
    produced, written and dropped in turn.
    """
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, dtype, shape, *_ in tensors:
        nbytes = int(np.prod(shape, dtype=np.int64)) * (2 if dtype in ("float16", "bfloat16") else np.dtype(dtype).itemsize)
        header[name] = {"dtype": _SAFETENSORS_DTYPES[dtype], "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    head = json.dumps(header, separators=(",", ":")).encode("utf-8")
    head += b" " * (-len(head) % 8)  # the format aligns the data to 8 bytes
    crc = 0
    with open(path, "wb") as fh:
        for chunk in (struct.pack("<Q", len(head)), head):
            fh.write(chunk)
            crc = _crc32c.crc32c(chunk, crc)
        for name, _, _, get, done in tensors:
            array = get()
            expected = header[name]["data_offsets"]
            if array.nbytes != expected[1] - expected[0]:
                raise AssertionError(f"{name}: {array.nbytes} bytes, header says {expected}")
            buf = memoryview(array).cast("B") if array.nbytes else b""
            fh.write(buf)
            crc = _crc32c.crc32c(buf, crc)
            del array, buf
            if done is not None:
                done()
    return crc


def hf_config(cfg: dict, model_class: str, num_labels: int = 0) -> dict:
    """config.json for transformers from Google's bert_config.json (extra Google keys kept)."""
    out = {"architectures": [MODEL_CLASSES[model_class]], "model_type": "bert", **cfg}
    out.setdefault("layer_norm_eps", 1e-12)
    out.setdefault("pad_token_id", 0)
    if num_labels:
        out["id2label"] = {str(i): f"LABEL_{i}" for i in range(num_labels)}
        out["label2id"] = {f"LABEL_{i}": i for i in range(num_labels)}
    return out


def _conversion_report(source, ckpt, plan, options: dict, vocab_size: int, tensor_count: int,
                       weights_file: Path, file_crc: int) -> dict:
    """conversion_report.json: where each tensor came from, what was skipped, and the checksums."""
    return {
        "source": source.given,
        "source_kind": "TensorFlow checkpoint",
        "checkpoint_prefix": source.shown(source.prefix),
        "checkpoint_files": [source.shown(p) for p in (ckpt.index_path, *ckpt.data_paths)],
        "bert_config": source.shown(source.config_path),
        "vocab": source.shown(source.vocab_path),
        "options": options,
        "vocab_size": vocab_size,
        "model_class": MODEL_CLASSES[plan.model_class],
        "num_labels": plan.num_labels or None,
        "checkpoint_tensor_count": len(ckpt),
        "checkpoint_bytes": ckpt.data_bytes,
        "tensor_count": tensor_count,
        "bytes": sum(ckpt.infos[p.tf_name].size for p in plan.mapped),
        "crc32c_verified": len(plan.mapped) + len(plan.skipped) + len(plan.ignored),
        "mapped": [
            {"tf_name": p.tf_name, "hf_name": p.hf_name, "shape": list(ckpt.infos[p.tf_name].shape),
             "dtype": ckpt.infos[p.tf_name].dtype, "transposed": p.transpose,
             "crc32c_masked": ckpt.infos[p.tf_name].crc32c}
            for p in plan.mapped
        ],
        "skipped_training_state": plan.skipped,
        "ignored": plan.ignored,
        "initialized_fresh": [p.hf_name for p in plan.fresh],
        "skipped": [
            {"tf_name": n, "shape": list(ckpt.infos[n].shape), "dtype": ckpt.infos[n].dtype,
             "reason": "training state" if n in plan.skipped else "ignored by request"}
            for n in plan.skipped + plan.ignored
        ],
        "output": {"model.safetensors": {"bytes": weights_file.stat().st_size, "crc32c": f"{file_crc:08x}"}},
    }


def convert(src: str | Path, out_dir: str | Path, *, config: str | Path | None = None, vocab: str | Path | None = None,
            model_class: str = "auto", init_fresh: Sequence[str] = (), ignore: Sequence[str] = (),
            do_lower_case: bool = True, overwrite: bool = False, seed: int = 0) -> dict:
    """Convert a Google TF BERT checkpoint into a Hugging Face folder ``out_dir``; return the report.

    The folder holds config.json, model.safetensors, a fast tokenizer (tokenizer.json +
    tokenizer_config.json + vocab.txt) and conversion_report.json. It appears only when
    everything succeeded; an existing folder is never replaced unless ``overwrite``.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise NbutilsError(f"{out_dir} already exists; refusing to overwrite it",
                           fix="choose a new output folder, or pass --overwrite / overwrite=True")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with open_source(src, config=config, vocab=vocab, work_dir=out_dir.parent) as source, \
            TFCheckpoint(source.prefix) as ckpt:
        cfg = read_bert_config(source.config_path)
        tokens = read_vocab(source.vocab_path)
        if len(tokens) != cfg["vocab_size"]:
            raise NbutilsError(
                f"{source.vocab_path} has {len(tokens)} tokens but {source.config_path} says vocab_size={cfg['vocab_size']}: "
                "they do not belong together (token ids would point at the wrong embeddings and the model learns nothing)",
                fix="use the vocab.txt and bert_config.json shipped with this checkpoint",
            )
        plan = plan_conversion(ckpt, cfg, model_class=model_class, init_fresh=init_fresh, ignore=ignore, source=str(src))
        rng = np.random.default_rng(seed)

        def read(p: Param) -> np.ndarray:
            array = ckpt.storage(p.tf_name)  # CRC-verified view of the mapped file
            return np.ascontiguousarray(array.T) if p.transpose else array

        # after writing, hand the tensor's mapped pages back: peak memory stays near one tensor
        tensors = [(p.hf_name, ckpt.infos[p.tf_name].dtype, p.hf_shape, lambda p=p: read(p),
                    lambda p=p: ckpt.release(p.tf_name)) for p in plan.mapped]
        fresh = {p.hf_name: _fresh_value(p, cfg, rng) for p in plan.fresh}
        tensors += [(name, "float32", value.shape, lambda v=value: v, None) for name, value in fresh.items()]
        tensors.sort(key=lambda t: t[0])
        for name in plan.skipped + plan.ignored:
            ckpt.storage(name)  # a corrupted optimizer slot still means a damaged download: say so
            ckpt.release(name)

        with atomic_dir(out_dir, overwrite=overwrite) as tmp:
            file_crc = write_safetensors(tmp / "model.safetensors", tensors)
            write_json(tmp / "config.json", hf_config(cfg, plan.model_class, plan.num_labels))
            write_tokenizer_files(source.vocab_path, tmp, do_lower_case=do_lower_case,
                                  model_max_length=cfg["max_position_embeddings"])
            options = {"config": str(config) if config else None, "vocab": str(vocab) if vocab else None,
                       "model_class": model_class, "init_fresh": list(init_fresh), "ignore": list(ignore),
                       "do_lower_case": do_lower_case}
            report = _conversion_report(source, ckpt, plan, options, len(tokens), len(tensors),
                                        tmp / "model.safetensors", file_crc)
            origin = _carry_weights_origin(source.prefix.parent, tmp)
            if origin is not None:
                report["weights_origin"] = origin
            write_json(tmp / CONVERSION_REPORT, report)
    return report


def variable_table(report: dict):
    """The checkpoint's variables as a DataFrame: TF name, shape, dtype, and where each went."""
    import pandas as pd

    rows = [(m["tf_name"], tuple(m["shape"]), m["dtype"], m["hf_name"] + ("  (transposed)" if m["transposed"] else ""))
            for m in report["mapped"]]
    rows += [(s["tf_name"], tuple(s["shape"]), s["dtype"], f"skipped: {s['reason']}") for s in report["skipped"]]
    rows += [("(none)", "", "", f"{name}: initialised fresh") for name in report["initialized_fresh"]]
    return pd.DataFrame(rows, columns=["tf_name", "shape", "dtype", "mapped_to"]).sort_values("tf_name", ignore_index=True)


@quiet_weight_files()  # notebook 01: a table, not a "Loading weights" bar
def verify_conversion(model_dir: str | Path, src: str | Path | None = None, *, config: str | Path | None = None,
                      vocab: str | Path | None = None) -> dict:
    """Load ``model_dir`` with transformers and compare every parameter with the checkpoint.

    Returns counts and lists; ``ok`` is True only when transformers reported no missing or
    unexpected keys and every converted parameter equals its checkpoint tensor exactly.
    """
    import transformers

    model_dir = Path(model_dir)
    check_model_dir(model_dir)
    report = json.loads((model_dir / CONVERSION_REPORT).read_text(encoding="utf-8"))
    model_cls = getattr(transformers, report["model_class"])
    model, info = model_cls.from_pretrained(model_dir, output_loading_info=True)
    state = model.state_dict()
    mismatched = []
    options = report.get("options", {})
    with open_source(src or report["source"], config=config or options.get("config"), vocab=vocab or options.get("vocab"),
                     work_dir=model_dir.parent) as source, TFCheckpoint(source.prefix) as ckpt:
        for m in report["mapped"]:
            expected = ckpt.get_tensor(m["tf_name"])
            expected = expected.T if m["transposed"] else expected
            actual = state[m["hf_name"]].detach().float().numpy()
            if actual.shape != expected.shape or not np.array_equal(actual, expected.astype(np.float32)):
                mismatched.append(m["hf_name"])
        tied = state.get("cls.predictions.decoder.weight")
        tied_ok = tied is None or bool((tied == state["bert.embeddings.word_embeddings.weight"]).all())
    missing, unexpected = list(info["missing_keys"]), list(info["unexpected_keys"])
    return {
        "model_class": type(model).__name__,
        "tensors_compared": len(report["mapped"]),
        "identical": len(report["mapped"]) - len(mismatched),
        "mismatched": mismatched,
        "missing_keys": missing,
        "unexpected_keys": unexpected,
        "mlm_decoder_tied_to_embeddings": tied_ok,
        "ok": not (mismatched or missing or unexpected) and tied_ok,
    }


# --- export: Hugging Face -> Google's layout -----------------------------------------------------


def _hf_state(model_dir: Path) -> dict[str, object]:
    """name -> callable returning a numpy array (or ("bfloat16", uint16 array)), loaded lazily."""
    import torch

    def to_numpy(t):
        t = t.detach().contiguous()
        if t.dtype == torch.bfloat16:
            return ("bfloat16", t.view(torch.int16).numpy().view(np.uint16))
        return t.numpy()

    single, index, legacy = model_dir / "model.safetensors", model_dir / "model.safetensors.index.json", model_dir / "pytorch_model.bin"
    if single.is_file() or index.is_file():
        from safetensors import safe_open

        files = [single] if single.is_file() else sorted({model_dir / f for f in json.loads(index.read_text())["weight_map"].values()})
        state = {}
        for f in files:
            handle = safe_open(f, framework="pt")
            for key in handle.keys():
                state[key] = lambda h=handle, k=key: to_numpy(h.get_tensor(k))
        return state
    if legacy.is_file():
        weights = torch.load(legacy, map_location="cpu", weights_only=True, mmap=True)
        return {k: (lambda t=t: to_numpy(t)) for k, t in weights.items()}
    raise NbutilsError(f"{model_dir}: no model.safetensors or pytorch_model.bin", fix="point at a Hugging Face model folder")


def _hf_vocab(model_dir: Path) -> list[str]:
    if (model_dir / "vocab.txt").is_file():
        return read_vocab(model_dir / "vocab.txt")
    tok = model_dir / "tokenizer.json"
    if not tok.is_file():
        raise NbutilsError(f"{model_dir}: no vocab.txt or tokenizer.json", fix="save the tokenizer into the model folder")
    vocab = json.loads(tok.read_text(encoding="utf-8")).get("model", {}).get("vocab")
    if not isinstance(vocab, dict) or sorted(vocab.values()) != list(range(len(vocab))):
        raise NbutilsError(f"{tok}: not a WordPiece vocabulary with ids 0..N-1", fix="export needs a BERT WordPiece tokenizer")
    return sorted(vocab, key=vocab.get)


def export(model_dir: str | Path, out_dir: str | Path, *, overwrite: bool = False) -> Path:
    """Write a Hugging Face BERT folder in Google's layout: bert_config.json, vocab.txt and
    bert_model.ckpt.{index,data-00000-of-00001} with Google's variable names (classifier head
    as run_classifier.py names it). Atomic; never overwrites unless asked."""
    model_dir = Path(model_dir)
    config_path = model_dir / "config.json"
    if not config_path.is_file():
        raise NbutilsError(f"{model_dir}: no config.json", fix="point at a Hugging Face BERT folder")
    cfg = json.loads(config_path.read_text(encoding="utf-8"))
    if cfg.get("model_type") != "bert":
        raise NbutilsError(f"{config_path}: model_type is {cfg.get('model_type')!r}, not 'bert'",
                           fix="Google's checkpoint layout exists only for BERT")
    tokens = _hf_vocab(model_dir)
    if len(tokens) != cfg["vocab_size"]:
        raise NbutilsError(f"{model_dir}: tokenizer has {len(tokens)} tokens but vocab_size={cfg['vocab_size']}",
                           fix="the tokenizer does not belong to these weights")
    state = _hf_state(model_dir)
    keys = set(state)
    prefix = "bert." if any(k.startswith("bert.") for k in keys) else ""
    num_labels = len(cfg.get("id2label") or {}) if "classifier.weight" in keys else 0
    params = bert_params(
        cfg, prefix=prefix, pooler=f"{prefix}pooler.dense.weight" in keys,
        mlm="cls.predictions.transform.dense.weight" in keys, nsp="cls.seq_relationship.weight" in keys,
        num_labels=num_labels,
    )
    expected = {p.hf_name for p in params}
    # tied copies of the embeddings / MLM bias and non-parameter buffers have no TF variable
    derived = re.compile(r"(^|\.)(position_ids|token_type_ids)$|^cls\.predictions\.decoder\.(weight|bias)$")
    unused = sorted(k for k in keys - expected if not derived.search(k))
    missing = sorted(expected - keys)
    if unused or missing:
        raise NbutilsError(
            f"{model_dir}: not a BERT this exporter knows: "
            + (f"unknown parameters {unused[:10]}" if unused else "") + (f" missing {missing[:10]}" if missing else ""),
            fix="export supports BertModel, BertForPreTraining, BertForMaskedLM and BertForSequenceClassification",
        )

    def tensors():
        for p in params:
            value = state[p.hf_name]()
            dtype, array = value if isinstance(value, tuple) else (None, value)
            if tuple(array.shape) != p.hf_shape:
                raise NbutilsError(f"{model_dir}: {p.hf_name} has shape {tuple(array.shape)}, config implies {p.hf_shape}",
                                   fix="config.json does not belong to these weights")
            array = np.ascontiguousarray(array.T) if p.transpose else array
            yield p.tf_name, ((dtype, array) if dtype else array)

    google_cfg = {k: cfg[k] for k in GOOGLE_CONFIG_KEYS if k in cfg}
    with atomic_dir(out_dir, overwrite=overwrite) as tmp:
        write_checkpoint(tmp / "bert_model.ckpt", tensors())
        write_json(tmp / "bert_config.json", google_cfg)
        with open(tmp / "vocab.txt", "w", encoding="utf-8", newline="\n") as fh:
            fh.write("".join(t + "\n" for t in tokens))
        _carry_weights_origin(model_dir, tmp)
    return Path(out_dir)


def _carry_weights_origin(src_folder: Path, dst_folder: Path) -> dict | None:
    """Random demo weights stay labelled as random through export and conversion."""
    from nbutils.checkpoints.weights import WEIGHTS_ORIGIN, weights_origin

    if not (src_folder / WEIGHTS_ORIGIN).is_file():
        return None
    shutil.copyfile(src_folder / WEIGHTS_ORIGIN, dst_folder / WEIGHTS_ORIGIN)
    return weights_origin(dst_folder)


# --- command line ---------------------------------------------------------------------------------


# --- any model source -> one Hugging Face folder ---------------------------------------------

_DTYPE_BYTES = {"F64": 8, "I64": 8, "F32": 4, "I32": 4, "F16": 2, "BF16": 2, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}


def _looks_like_tf_checkpoint(path: Path) -> bool:
    if path.suffix == ".zip":
        return True
    if path.is_dir():
        return any(path.glob("*.index")) and not (path / "config.json").exists()
    return path.name.endswith((".index", ".meta")) or ".data-" in path.name or path.with_name(path.name + ".index").exists()


def resolve_model_source(source: str | Path, out_dir: str | Path, *, overwrite: bool = False) -> Path:
    """Make ``out_dir`` a Hugging Face BERT folder from any source and return it.

    ``source``: a Google TF checkpoint (folder, prefix, .index, .data-*, .zip) -> converted;
    a Hugging Face folder -> checked and copied; otherwise a Hugging Face hub id -> downloaded
    (needs internet).
    """
    out_dir = Path(out_dir)
    path = Path(source).expanduser()
    if _looks_like_tf_checkpoint(path):
        convert(path, out_dir, overwrite=overwrite)
    elif path.is_dir():
        check_model_dir(path)
        with atomic_dir(out_dir, overwrite=overwrite) as tmp:
            shutil.copytree(path, tmp, dirs_exist_ok=True)
            _write_copy_report(tmp, str(source), "Hugging Face folder")
    elif is_local_path(source):
        raise NbutilsError(
            f"{source}: not a model folder, TF checkpoint or hub id",
            fix="pass a Hugging Face folder, Google's checkpoint folder/zip/.index, or a hub id like bert-base-chinese",
        )
    else:
        _download(str(source), out_dir, overwrite=overwrite)
    check_model_dir(out_dir)
    return out_dir


def _download(repo_id: str, out_dir: Path, *, overwrite: bool) -> None:
    from huggingface_hub import snapshot_download

    patterns = ["config.json", "model.safetensors", "model.safetensors.index.json", "model-*.safetensors",
                "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"]
    with atomic_dir(out_dir, overwrite=overwrite) as tmp:
        try:
            snapshot_download(repo_id, local_dir=tmp, allow_patterns=patterns)
        except Exception as err:  # offline, unknown repo, auth: all user-fixable
            raise NbutilsError(
                f"could not download {repo_id!r} from the Hugging Face hub ({type(err).__name__}: {str(err).splitlines()[0][:200]})",
                fix="without internet, download Google's checkpoint zip (e.g. chinese_L-12_H-768_A-12.zip) elsewhere "
                "and pass its path, or pass a local Hugging Face model folder",
            ) from None
        shutil.rmtree(tmp / ".cache", ignore_errors=True)
        _write_copy_report(tmp, repo_id, "Hugging Face hub")


def _write_copy_report(model_dir: Path, source: str, kind: str) -> None:
    """conversion_report.json for a model that needed no conversion (same keys as convert's)."""
    from safetensors import safe_open

    report = {"source": source, "source_kind": kind, "tensor_count": 0, "bytes": 0,
              "mapped": [], "skipped": [], "initialized_fresh": [], "output": {}}
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    report["model_class"] = (config.get("architectures") or ["BertModel"])[0]
    for weights in sorted(model_dir.glob("*.safetensors")):
        with safe_open(weights, framework="numpy") as fh:
            for key in fh.keys():
                shape = fh.get_slice(key).get_shape()
                report["tensor_count"] += 1
                report["bytes"] += int(np.prod(shape, dtype=np.int64)) * _DTYPE_BYTES.get(fh.get_slice(key).get_dtype(), 4)
        crc = 0
        with open(weights, "rb") as fh:
            while chunk := fh.read(1 << 24):
                crc = _crc32c.crc32c(chunk, crc)
        report["output"][weights.name] = {"bytes": weights.stat().st_size, "crc32c": f"{crc:08x}"}
    write_json(model_dir / CONVERSION_REPORT, report)


def main_convert(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="nbutils convert",
        description="Convert a Google TF BERT checkpoint (folder, prefix, .index, .data-*, or .zip) to a Hugging Face folder.",
    )
    parser.add_argument("src", help="checkpoint folder, prefix (…/bert_model.ckpt), .index, .data-* file, or zip")
    parser.add_argument("out", help="output Hugging Face model folder (must not exist unless --overwrite)")
    parser.add_argument("--config", help="bert_config.json (default: next to the checkpoint)")
    parser.add_argument("--vocab", help="vocab.txt (default: next to the checkpoint)")
    parser.add_argument("--model-class", default="auto", choices=["auto", *MODEL_CLASSES],
                        help="auto: classification if output_weights exists, pretraining if cls/* exists, else base")
    parser.add_argument("--init-fresh", action="append", default=[], metavar="HF_PREFIX",
                        help="initialise these model parameters fresh when absent (repeatable), e.g. cls.seq_relationship")
    parser.add_argument("--ignore", action="append", default=[], metavar="TF_PREFIX",
                        help="drop these checkpoint tensors (repeatable), e.g. cls/seq_relationship")
    parser.add_argument("--no-lower-case", action="store_true", help="cased vocabulary (Google's Chinese model is uncased)")
    parser.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    args = parser.parse_args(argv)
    report = convert(args.src, args.out, config=args.config, vocab=args.vocab, model_class=args.model_class,
                     init_fresh=args.init_fresh, ignore=args.ignore, do_lower_case=not args.no_lower_case,
                     overwrite=args.overwrite)
    print(f"converted {report['tensor_count']} tensors ({report['bytes'] / 1e6:.1f} MB, CRC32C verified) "
          f"into {report['model_class']} at {args.out}")
    if report["skipped"]:
        print(f"skipped {len(report['skipped'])} training-state/ignored tensors (listed in conversion_report.json)")
    if report["initialized_fresh"]:
        print(f"initialised fresh, as asked: {', '.join(report['initialized_fresh'])}")
    return 0


def main_export(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="nbutils export",
                                     description="Export a Hugging Face BERT folder to Google's TF checkpoint layout.")
    parser.add_argument("model_dir", help="Hugging Face BERT folder")
    parser.add_argument("out", help="output folder (bert_config.json, vocab.txt, bert_model.ckpt.*)")
    parser.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    args = parser.parse_args(argv)
    export(args.model_dir, args.out, overwrite=args.overwrite)
    print(f"exported {args.model_dir} to {args.out}/bert_model.ckpt")
    return 0
