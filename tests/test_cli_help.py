"""Every flag of every ``nbutils`` command has help text, and the flags generated from the config
dataclasses take it from the dataclass's own field comments (one source for both)."""

from __future__ import annotations

import argparse
import dataclasses
import importlib

import pytest

from nbutils.cli import COMMANDS
from nbutils.core.config_flags import add_config_flags, config_to_argv, field_docs


class _Parser(Exception):
    pass


def _parsers(target: str, monkeypatch) -> list[argparse.ArgumentParser]:
    """The parser(s) a command builds: its ``main`` runs until it parses, then stops."""
    def stop(self, *args, **kwargs):
        raise _Parser(self)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", stop)
    monkeypatch.setattr(argparse.ArgumentParser, "parse_known_args", stop)
    module, func = target.split(":")
    with pytest.raises(_Parser) as caught:
        getattr(importlib.import_module(module), func)([])
    parser = caught.value.args[0]
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return [parser, *(p for s in subs for p in s.choices.values())]


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_flag_has_help(command, monkeypatch):
    for parser in _parsers(COMMANDS[command][0], monkeypatch):
        bare = [a.option_strings or [a.dest] for a in parser._actions
                if not a.help and not isinstance(a, argparse._SubParsersAction)]
        assert not bare, f"{parser.prog}: no help for {bare}"


@pytest.mark.parametrize("module, cls, skip", [
    ("nbutils.training.finetune", "FinetuneConfig", ("extra_training_args", "headless")),
    ("nbutils.pretraining.mlm", "PretrainConfig", ("headless",)),
])
def test_config_flags_use_the_field_comments(module, cls, skip):
    config_cls = getattr(importlib.import_module(module), cls)
    docs = field_docs(config_cls)
    fields = [f.name for f in dataclasses.fields(config_cls) if f.name not in skip]
    assert [f for f in fields if f not in docs] == [], "document these fields with a # comment"
    parser = argparse.ArgumentParser()
    add_config_flags(parser, config_cls, skip=skip)
    helps = {a.dest: a.help for a in parser._actions}
    for name in fields:
        assert helps[name].startswith(docs[name].replace("%", "%%")), name


def test_field_docs_reads_trailing_and_block_comments_and_flags_round_trip():
    @dataclasses.dataclass
    class Example:
        size: int = 3  # how many, at most
        # a comment block
        # over two lines
        ratio: float | None = None
        on: bool = False  # switch it on
        name: str = "a#b"

    assert field_docs(Example) == {"size": "how many, at most", "ratio": "a comment block over two lines",
                                   "on": "switch it on"}
    parser = argparse.ArgumentParser()
    add_config_flags(parser, Example)
    assert parser.parse_args(["--on"]).on is True
    assert parser.parse_args(["--ratio", "none"]).ratio is None
    with pytest.raises(SystemExit):
        parser.parse_args(["--on", "maybe"])
    value = Example(size=5, ratio=0.5, on=True, name="x y")
    assert Example(**vars(parser.parse_args(config_to_argv(value)))) == value
