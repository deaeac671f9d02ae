"""The quick exit (nbutils.runtime.quick_exit): configure_process skips the interpreter's final
garbage-collection passes, and nothing else about exiting changes."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from nbutils.core.paths import REPO_ROOT
from nbutils.runtime import quick_exit
from nbutils.runtime.process import configure_process

# An object that only its own reference cycle keeps alive once __main__ is cleared at exit, so only
# the final collection reaches its __del__; and an atexit handler registered after the call.
PROBE = textwrap.dedent("""
    import atexit, os, sys
    from nbutils.runtime import configure_process
    configure_process(quiet=True, quick_exit=sys.argv[2] == "on")

    class Cycle:
        def __init__(self, fd):
            self.me, self.fd, self.write = self, fd, os.write
        def __del__(self):
            self.write(self.fd, b"collected")

    keep = Cycle(os.open(sys.argv[1] + ".del", os.O_WRONLY | os.O_CREAT))
    atexit.register(lambda: open(sys.argv[1] + ".atexit", "w").close())
""")


def exit_probe(tmp_path: Path, mode: str) -> tuple[str, bool]:
    out = tmp_path / mode
    proc = subprocess.run([sys.executable, "-c", PROBE, str(out), mode], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return Path(f"{out}.del").read_text(), Path(f"{out}.atexit").is_file()


@pytest.mark.parametrize("mode", ["on", "off"])
def test_the_final_collection_is_skipped_and_atexit_handlers_still_run(tmp_path, mode):
    collected, atexit_ran = exit_probe(tmp_path, mode)
    assert atexit_ran
    assert collected == ("" if mode == "on" else "collected")


def test_registered_once_and_said(monkeypatch, capsys):
    registered = []
    monkeypatch.setattr(quick_exit, "_registered", False)
    monkeypatch.setattr(quick_exit.atexit, "register", registered.append)
    configure_process()
    configure_process(quick_exit=False)
    configure_process()
    assert registered == [quick_exit.gc.freeze]
    said = capsys.readouterr().out.splitlines()
    assert ["exit without the final garbage collection" in line for line in said] == [True, False, True]
