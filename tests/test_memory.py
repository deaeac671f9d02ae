"""nbutils.runtime.memory: freed blocks go back to the OS (glibc only; elsewhere the calls say they could not)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

# Frees one 9 MiB block first (glibc then raises its mmap threshold above 8 MiB, as it does after
# a training step frees its activations), then allocates 40 of 8 MiB interleaved with small blocks
# that stay, frees the big ones and prints how much of their 320 MiB is still resident.
_PROGRAM = textwrap.dedent("""
    import ctypes, sys
    from nbutils.runtime.memory import large_blocks_via_mmap
    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    libc.memset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
    def rss_mb():
        return int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20
    if sys.argv[1] == "fixed":
        assert large_blocks_via_mmap()
    big = 8 << 20
    libc.free(libc.malloc(big + (1 << 20)))  # a mapped block a little larger than the next ones
    blocks, small = [], []
    for _ in range(40):
        p = libc.malloc(big)
        libc.memset(p, 1, big)  # touch every page
        blocks.append(p)
        small.append(libc.malloc(256 << 10))  # too big for any free fragment: carved after it
    before = rss_mb()
    for p in blocks:
        libc.free(p)
    print(before - rss_mb())
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_large_blocks_go_back_to_the_os_when_freed():
    def released_mb(mode: str) -> float:
        out = subprocess.run([sys.executable, "-c", _PROGRAM, mode], capture_output=True, text=True, check=True)
        return float(out.stdout.split()[-1])

    assert released_mb("default") < 100  # the heap keeps them: the creep training steps showed
    assert released_mb("fixed") > 300  # each block was its own mapping, unmapped at free


def test_trim_heap_runs():
    from nbutils.runtime.memory import trim_heap

    assert trim_heap() is sys.platform.startswith("linux")


# A large tensor's mapping: torch advises the kernel to back it with huge pages (VmFlags "hg",
# madvise(MADV_HUGEPAGE)) only when THP_MEM_ALLOC_ENABLE was set before its first allocation,
# which `import nbutils` (before torch) takes care of.
_TENSOR_ADVICE = textwrap.dedent("""
    import os, nbutils, torch
    tensor = torch.ones(8 << 20, dtype=torch.uint8)
    address, flags, inside = tensor.data_ptr(), [], False
    for line in open("/proc/self/smaps"):
        head = line.split()[0]
        if "-" in head and ":" not in head:
            low, high = (int(x, 16) for x in head.split("-"))
            inside = low <= address < high
        elif inside and line.startswith("VmFlags:"):
            flags = line.split()[1:]
            break
    print(os.environ.get("THP_MEM_ALLOC_ENABLE"), "hg" in flags)
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="torch's huge-page switch is Linux only")
@pytest.mark.parametrize("preset, expected", [(None, "None False"), ("1", "1 True"), ("0", "0 False")])
def test_import_nbutils_leaves_torch_huge_pages_to_the_user(preset, expected):
    # titles do not pay for huge pages (nbutils.runtime.memory): only long inputs or the user turn them on
    import os

    env = {k: v for k, v in os.environ.items() if k != "THP_MEM_ALLOC_ENABLE"}
    if preset is not None:
        env["THP_MEM_ALLOC_ENABLE"] = preset
    out = subprocess.run([sys.executable, "-c", _TENSOR_ADVICE], capture_output=True, text=True,
                         check=True, env=env)
    assert out.stdout.split()[-2:] == expected.split()


def test_huge_pages_only_for_long_inputs():
    from nbutils.runtime.memory import (
        LONG_INPUTS,
        huge_pages_for_long_inputs,
        longest_max_length,
        max_length_argument,
    )

    linux = sys.platform.startswith("linux")
    titles: dict[str, str] = {}
    assert huge_pages_for_long_inputs(48, titles) is False and titles == {}
    articles: dict[str, str] = {}
    assert huge_pages_for_long_inputs(LONG_INPUTS, articles) is linux
    assert articles == ({"THP_MEM_ALLOC_ENABLE": "1"} if linux else {})
    declined = {"THP_MEM_ALLOC_ENABLE": "0"}
    assert huge_pages_for_long_inputs(512, declined) is False and declined == {"THP_MEM_ALLOC_ENABLE": "0"}
    assert longest_max_length({"mlm_max_length": 32, "finetune_max_length": 512, "seed": 1000,
                               "freeze_max_length": True}) == 512
    assert longest_max_length({"seed": 1}) == 0
    assert max_length_argument(["x", "--max-length", "512"]) == 512
    assert max_length_argument(["--max-length=300", "y"]) == 300
    assert max_length_argument(["--max-length", "lots"]) == 0 and max_length_argument(["--max-length"]) == 0


def test_cli_switches_huge_pages_on_before_a_long_input_command_runs(monkeypatch):
    import os
    import types

    from nbutils import cli

    seen = []
    probe = types.SimpleNamespace(main=lambda argv: seen.append(os.environ.get("THP_MEM_ALLOC_ENABLE")) or 0)
    monkeypatch.delenv("THP_MEM_ALLOC_ENABLE", raising=False)
    monkeypatch.setattr(cli, "COMMANDS", {"probe": ("probe:main", "")})
    monkeypatch.setattr(cli.importlib, "import_module", lambda name: probe)
    assert cli.main(["probe", "--max-length", "48"]) == 0
    assert cli.main(["probe", "--max-length", "512"]) == 0
    monkeypatch.delenv("THP_MEM_ALLOC_ENABLE", raising=False)
    assert seen == [None, "1" if sys.platform.startswith("linux") else None]


def test_huge_pages_switch_keeps_a_value_already_set():
    from nbutils.runtime.memory import huge_pages_for_torch

    environ = {"THP_MEM_ALLOC_ENABLE": "0"}
    assert huge_pages_for_torch(environ) is False and environ == {"THP_MEM_ALLOC_ENABLE": "0"}
    fresh: dict[str, str] = {}
    assert huge_pages_for_torch(fresh) is sys.platform.startswith("linux")
