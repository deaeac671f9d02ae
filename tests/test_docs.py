"""The repository's files speak of the project, not of how it was made.

Every tracked text file is searched for words about how the work was organised (numbered issues
or work sessions, work periods, helpers' or other jobs sharing the machine, scheduler groups,
diary words such as "today"). Prose (Markdown, comments, docstrings, notebook text) is also
searched for diary dates and times, and Markdown and comments for commit hashes. Dates and commit
hashes belong in a provenance line (one that starts with ``Provenance:``, after any Markdown list
or emphasis marks) or in the raw records of ``benchmarks/results/`` (their names and headers);
in a docstring or comment, an example in backticks may show one. A failure names file:line and
what was found.
"""

from __future__ import annotations

import io
import json
import re
import subprocess
import tokenize
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS = "benchmarks/results/"
README_MAX_LINES, README_MAX_BYTES = 300, 25_000

# (pattern, what it is). Case-insensitive; matched against every line of every tracked text file.
PROCESS_WORDS = [
    (r"\bissues?\s*#?\s*\d+", "an issue number"),
    (r"\bissue-\d+", "an issue number"),
    (r"\bsessions?\s+\d+\b", "a numbered work session"),
    (r"\b(?:this|that|my|our|other|earlier|previous|next|later|same|whole)\s+sessions?\b", "a work session"),
    (r"\bsession's\b|\bsession of\b", "a work session"),
    (r"\bwork\s+periods?\b|\bperiod\s+\d+\b", "a work period"),
    (r"\bother\s+(?:helpers|engineers|jobs|sessions)\b|\bhelpers'|\bhelper\s+sessions?\b", "who else was working"),
    (r"\bcoordinator\b|\bscheduler\s+groups?\b", "how the work was scheduled"),
    (r"\btoday'?s?\b|\byesterday\b|\btonight\b", "a diary word"),
]
# Where a word is the name of a mechanism rather than a note on the work: benchmarks set their
# workers' scheduling priority through the kernel's autogroup.
AUTOGROUP = (r"\bautogroup\b", "a scheduler group")
AUTOGROUP_ALLOWED = ("benchmarks/",)

DATES = [
    (r"\b20\d\d-[01]\d-[0-3]\d\b", "a date"),
    (r"\b20\d\d[01]\d[0-3]\d(?:-\d{6})?\b", "a date (or a dated run name)"),
    (r"\b[0-2]?\d:[0-5]\d(?:\s*-\s*[0-2]?\d:[0-5]\d)?\s*UTC\b", "a time of day"),
    (r"\b(?:january|february|march|april|june|july|august|september|october|november|december)"
     r"\s+\d{1,2}\b", "a date"),
]
# A commit hash: 7-40 hex digits with at least one digit and one letter.
COMMIT = (r"\b(?=[0-9a-f]*\d)(?=[0-9a-f]*[a-f])[0-9a-f]{7,40}\b", "a commit hash")
PROVENANCE = re.compile(r"^\s*(?:[-*>#|]\s*)*[*_]*provenance\b", re.IGNORECASE)
RESULT_PATH = re.compile(r"benchmarks/results/\S+")
CODE_SPAN = re.compile(r"``[^`]*``|`[^`\n]*`")


def tracked_files() -> list[str]:
    out = subprocess.run(["git", "ls-files", "-z"], cwd=REPO_ROOT, capture_output=True, check=True)
    return [name for name in out.stdout.decode().split("\0") if name]


def read_text(path: Path) -> str | None:
    """The file's text, or None for a binary file."""
    data = path.read_bytes()
    if b"\0" in data[:8192]:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def python_prose(text: str) -> dict[int, str]:
    """Comments and docstrings of a Python file, by line number."""
    prose: dict[int, str] = {}
    previous = tokenize.NEWLINE
    try:
        for tok in tokenize.generate_tokens(io.StringIO(text).readline):
            if tok.type == tokenize.COMMENT:
                prose[tok.start[0]] = prose.get(tok.start[0], "") + " " + tok.string
            elif tok.type == tokenize.STRING and previous in (tokenize.NEWLINE, tokenize.NL, tokenize.INDENT,
                                                               tokenize.DEDENT, tokenize.ENCODING):
                text_of_string = CODE_SPAN.sub(lambda m: "\n" * m.group(0).count("\n"), tok.string)
                for offset, line in enumerate(text_of_string.splitlines()):  # a docstring: a bare string
                    prose[tok.start[0] + offset] = prose.get(tok.start[0] + offset, "") + " " + line
            if tok.type not in (tokenize.COMMENT, tokenize.NL):
                previous = tok.type
    except (tokenize.TokenError, SyntaxError):
        return dict(enumerate(text.splitlines(), start=1))
    return prose


def hash_comments(text: str) -> dict[int, str]:
    """The ``#`` comments of a YAML, TOML, Makefile or shell file, by line number."""
    prose = {}
    for number, line in enumerate(text.splitlines(), start=1):
        at = line.find("#")
        if at >= 0 and (at == 0 or line[at - 1] in " \t"):
            prose[number] = line[at:]
    return prose


def notebook_prose(text: str) -> dict[int, str]:
    """Markdown cells and code comments of a notebook, by line of the .ipynb file."""
    notebook = json.loads(text)
    lines = text.splitlines()
    prose: dict[int, str] = {}
    searched_from = 0
    for cell in notebook.get("cells", []):
        source = cell.get("source", [])
        source = source if isinstance(source, list) else source.splitlines(keepends=True)
        for part in source:
            shown = json.dumps(part, ensure_ascii=False)[1:-1]
            number = next((i for i in range(searched_from, len(lines)) if shown in lines[i]), None)
            if number is None:
                continue
            searched_from = number + 1
            if cell.get("cell_type") == "markdown":
                prose[number + 1] = part
            elif "#" in part:
                prose[number + 1] = part[part.index("#"):]
    return prose


def prose_lines(name: str, text: str) -> dict[int, str]:
    """The prose of a tracked file, by line number: where dates and commit hashes may not stand."""
    suffix = Path(name).suffix
    if name.startswith(RESULTS):
        return {}  # raw records: their names and headers carry dates and commits
    if suffix == ".md":
        return dict(enumerate(text.splitlines(), start=1))
    if suffix == ".py":
        return python_prose(text)
    if suffix == ".ipynb":
        return notebook_prose(text)
    if suffix in (".yaml", ".yml", ".toml", ".cfg") or Path(name).name in ("Makefile", "run", ".gitignore"):
        return hash_comments(text)
    return {}


def findings(name: str, text: str) -> list[str]:
    """``file:line: what (found text)`` for every line that speaks of how the work was done."""
    found = []
    process_words = PROCESS_WORDS + ([] if name.startswith(AUTOGROUP_ALLOWED) else [AUTOGROUP])
    for number, line in enumerate(text.splitlines(), start=1):
        for pattern, what in process_words:
            match = re.search(pattern, line, re.IGNORECASE)
            if match:
                found.append(f"{name}:{number}: {what} ({match.group(0)!r})")
    checks = DATES + ([COMMIT] if Path(name).suffix in (".md", ".yaml", ".yml") else [])
    for number, line in sorted(prose_lines(name, text).items()):
        if PROVENANCE.search(line):
            continue
        line = RESULT_PATH.sub(" ", line)
        if Path(name).suffix != ".md":  # in a docstring or comment, code in backticks is an example
            line = CODE_SPAN.sub(" ", line)
        for pattern, what in checks:
            match = re.search(pattern, line, re.IGNORECASE)
            if match:
                found.append(f"{name}:{number}: {what} in prose ({match.group(0)!r}); "
                             "dates and commits go in a 'Provenance:' line")
    return found


def test_no_file_speaks_of_how_the_work_was_organised():
    found = []
    for name in tracked_files():
        if name.startswith("tests/test_docs.py"):
            continue  # this file names the words it looks for
        path = REPO_ROOT / name
        text = read_text(path) if path.is_file() else None
        if text is not None:
            found += findings(name, text)
    assert not found, "documents speak of how the work was done, not of the project:\n" + "\n".join(found)


PLANTED = {
    "docs/planted.md": [
        ("Measured in session 6 while other helpers' jobs ran.", "a numbered work session"),
        ("See issue 18 for the sweep.", "an issue number"),
        ("The demo run of 2026-12-05 took 584 s.", "a date in prose"),
        ("Run `20261205-071738-demo` at commit a514499: 88.11%.", "a date (or a dated run name) in prose"),
        ("Today's demo profile is better.", "a diary word"),
        ("It ran with the session's autogroup at -20.", "a work session"),
        ("From 21:35 UTC on, the group was set to -20.", "a time of day in prose"),
        ("The best variant since a514499 is the default.", "a commit hash in prose"),
    ],
    "nbutils/planted.py": [
        ('"""Measured in the second work period."""', "a work period"),
        ("x = 1  # fixed on 2026-12-04", "a date in prose"),
        ('"""Written at 2026-01-01 12:00 UTC, before ``main``."""', "a date in prose"),
    ],
    "params/planted.yaml": [
        ("seed: 42  # chosen by the coordinator", "how the work was scheduled"),
    ],
}
LEGITIMATE = {
    "docs/legit.md": [
        "Provenance: run `20261205-071738-demo`, commit a514499, 2026-12-05, load average 1.6.",
        "- *Provenance:* commit 15c045a, `benchmarks/results/bench_heap_bf16_20261205.txt`.",
        "Raw output: `benchmarks/results/bench_threads_bf16_quiet_20261205b.txt`.",
        "Prediction runs in an ONNX Runtime session over `model.int8.onnx`; a closed ssh session stops the run.",
        "The helpers in `nbutils.reporting.plots` take plain tables.",
        "Test accuracy 88.11% (macro-F1 88.11%) on a 2-core CPU, 584 s.",
    ],
    "tests/legit.py": [
        '@pytest.fixture(scope="session")',
        'run = root / "20260101-000000-demo"  # a made-up run name in code, not prose',
        "proc = subprocess.Popen(cmd, start_new_session=True)",
    ],
    "nbutils/legit_example.py": ['"""When the report was written, e.g. ``report written at 2026-01-01 12:00 UTC``."""'],
    "benchmarks/bench_legit.py": ['"""Each worker gets its own session (autogroup) and priority."""'],
    "benchmarks/results/bench_legit_20261205.txt": ["# python benchmarks/bench_x.py at commit 15c045a, 2026-12-05 01:40 UTC"],
}


@pytest.mark.parametrize("name", sorted(PLANTED))
def test_a_planted_line_is_found_with_file_and_line(name):
    lines = [line for line, _ in PLANTED[name]]
    found = findings(name, "\n".join(lines) + "\n")
    for number, (line, what) in enumerate(PLANTED[name], start=1):
        assert any(f.startswith(f"{name}:{number}: {what}") for f in found), (line, found)


@pytest.mark.parametrize("name", sorted(LEGITIMATE))
def test_legitimate_content_passes(name):
    assert findings(name, "\n".join(LEGITIMATE[name]) + "\n") == []


def test_the_readme_reads_in_five_minutes():
    text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= README_MAX_LINES and len(text.encode()) <= README_MAX_BYTES, (
        f"README.md has {len(text.splitlines())} lines / {len(text.encode())} bytes: move detail to docs/")




def missing_links(docs: list[Path]) -> list[str]:
    """``doc: target`` for every relative link of ``docs`` whose file does not exist (anchors are
    not checked; links inside code are not links)."""
    missing = []
    for doc in docs:
        text = re.sub(r"```.*?```|`[^`\n]*`", "", doc.read_text(encoding="utf-8"), flags=re.DOTALL)
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)\s]*)?\)", text):
            if "://" not in target and not target.startswith("mailto:") and not (doc.parent / target).exists():
                missing.append(f"{doc.name}: {target}")
    return missing


def test_local_links_in_the_readme_and_docs_resolve():
    """A moved or renamed page shows up here, in README.md, CONTRIBUTING.md or docs/*.md."""
    docs = [REPO_ROOT / "README.md", REPO_ROOT / "CONTRIBUTING.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]
    missing = missing_links(docs)
    assert not missing, "links to files that do not exist:\n" + "\n".join(missing)


def test_the_link_check_finds_a_broken_link(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "here.md").write_text("x", encoding="utf-8")
    page = tmp_path / "README.md"
    page.write_text("[ok](docs/here.md#top) [gone](docs/gone.md) `[code](docs/x.md)` [web](https://a.b/c)\n",
                    encoding="utf-8")
    assert missing_links([page]) == ["README.md: docs/gone.md"]
