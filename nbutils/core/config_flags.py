"""Command-line flags generated from a config dataclass, with the dataclass's own comments as
their help text.

A config field is documented once, where it is declared::

    max_length: int = 128  # tokens per text, including [CLS] and [SEP]

:func:`field_docs` reads those comments (the trailing one, else the comment block just above the
field) from the class source, and :func:`add_config_flags` turns every field into a
``--max-length`` flag with that help, the field's type and default. ``nbutils train`` and
``nbutils pretrain`` are built this way, so ``--help`` and the dataclass cannot drift apart
(tests/test_cli_help.py checks that every flag of every command has help).
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import inspect
import io
import textwrap
import tokenize
from collections.abc import Iterable, Mapping
from typing import Any

from nbutils.core.errors import NbutilsError

_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """``{field name: its comment}`` from the source of dataclass ``cls`` (fields without a
    comment are left out)."""
    source = textwrap.dedent(inspect.getsource(cls))
    comments: dict[int, str] = {}  # line -> comment text
    code_lines: set[int] = set()
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            comments[tok.start[0]] = tok.string.lstrip("#").strip()
        elif tok.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT,
                              tokenize.ENDMARKER):
            code_lines.add(tok.start[0])
    docs = {}
    body = ast.parse(source).body[0].body
    for node in body:
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        text = comments.get(node.end_lineno) or comments.get(node.lineno)
        if not text:  # a comment block directly above the field
            block, line = [], node.lineno - 1
            while line in comments and line not in code_lines:
                block.insert(0, comments[line])
                line -= 1
            text = " ".join(block)
        if text:
            docs[node.target.id] = text
    return docs


def _parse_bool(text: str) -> bool:
    value = str(text).strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise argparse.ArgumentTypeError(f"{text!r} is not a boolean (use true or false)")


def _optional(kind):
    def parse(text: str):
        return None if str(text).strip().lower() in ("none", "null", "") else kind(text)

    parse.__name__ = kind.__name__  # argparse names the type in its error messages
    return parse


def _flag_type(type_name: str):
    """argparse ``type`` for an annotation written as a string (``from __future__ import annotations``)."""
    parts = [p.strip() for p in str(type_name).split("|")]
    optional = "None" in parts
    base = {"int": int, "float": float, "str": str, "bool": _parse_bool}.get(
        next((p for p in parts if p != "None"), "str"))
    if base is None:
        return None
    return _optional(base) if optional else base


def add_config_flags(parser: argparse.ArgumentParser, cls: type, *, skip: Iterable[str] = ()) -> list[str]:
    """One ``--field-name`` flag per field of dataclass ``cls`` (except ``skip``), with the field's
    comment as help and its default; returns the field names added. Booleans take an optional
    value (``--flag`` = true, ``--flag false``)."""
    docs, added = field_docs(cls), []
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        kind = _flag_type(f.type)
        if kind is None:
            raise NbutilsError(f"{cls.__name__}.{f.name}: type {f.type} has no command-line form",
                               fix="skip the field in add_config_flags")
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        help_text = docs.get(f.name, f.name.replace("_", " "))
        help_text = f"{help_text} (default: {default})".replace("%", "%%")
        flag = "--" + f.name.replace("_", "-")
        if kind is _parse_bool:
            parser.add_argument(flag, type=_parse_bool, nargs="?", const=True, default=default,
                                metavar="BOOL", help=help_text)
        else:
            parser.add_argument(flag, type=kind, default=default, help=help_text)
        added.append(f.name)
    return added


def config_from_args(cls: type, args: argparse.Namespace, names: Iterable[str], **fixed: Any):
    """The dataclass built from the parsed flags ``names`` plus ``fixed`` values."""
    return cls(**{name: getattr(args, name) for name in names}, **fixed)


def config_to_argv(config: Any, *, skip: Iterable[str] = ()) -> list[str]:
    """``config`` as flags that :func:`add_config_flags` parses back to the same values."""
    argv = []
    for f in dataclasses.fields(config):
        if f.name not in skip:
            argv += ["--" + f.name.replace("_", "-"), str(getattr(config, f.name))]
    return argv


# Notebook parameters every stage shares under their own name (no stage prefix).
SHARED_PARAMETERS = ("seed", "device", "precision", "headless")


def config_from_params(cls: type, params: Mapping[str, Any], *prefixes: str, **overrides: Any):
    """Dataclass ``cls`` filled from a notebook's parameters (its ``globals()``), so a notebook
    does not copy them field by field.

    A field ``f`` takes the parameter ``<prefix>f`` for the first of ``prefixes`` that has one
    (``finetune_batch_size`` -> ``batch_size``), else a parameter named ``f`` itself when ``f`` is
    one of :data:`SHARED_PARAMETERS` or already carries a prefix (``mlm_probability``); fields
    with no parameter keep their defaults. ``overrides`` win over all of them (values the notebook
    derives, such as a ``max_length`` read from the exploration stats)."""
    values = {}
    for f in dataclasses.fields(cls):
        names = [prefix + f.name for prefix in prefixes]
        if f.name in SHARED_PARAMETERS or f.name.startswith(prefixes):
            names.append(f.name)
        found = next((name for name in names if name in params), None)
        if found is not None:
            values[f.name] = params[found]
    unknown = set(overrides) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
        raise NbutilsError(f"{cls.__name__} has no field {', '.join(sorted(unknown))}")
    return cls(**{**values, **overrides})
