"""The package's shape: no import cycles between nbutils modules, counting the imports that sit
inside functions (they hide a cycle from Python, not from the reader)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "nbutils"


def module_name(path: Path, package_dir: Path) -> str:
    """``nbutils/training/finetune.py`` -> ``nbutils.training.finetune`` (a package is its __init__)."""
    parts = [package_dir.name, *path.relative_to(package_dir).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def module_imports(package_dir: Path = PACKAGE) -> dict[str, set[str]]:
    """For each nbutils module (subpackages included), the other nbutils modules it imports anywhere
    in its file."""
    name = package_dir.name
    modules = {module_name(p, package_dir): p for p in sorted(package_dir.rglob("*.py"))}
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                targets.add(node.module)
                # ``from nbutils.training import freezing`` imports the submodule nbutils.training.freezing
                targets.update(f"{node.module}.{alias.name}" for alias in node.names)
        graph[module] = {t for t in targets if t in modules and t != module and t != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as ``[a, b, ..., a]``, or None (depth-first search, colours)."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycles_even_inside_functions():
    graph = module_imports()
    assert len(graph) > 20 and "nbutils.training.finetune" in graph["nbutils.training.launch"]  # the walk sees imports
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_function_level_cycles(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pkg.b import f\n")
    (pkg / "b.py").write_text("def f():\n    from pkg import a\n")
    (pkg / "c.py").write_text("import pkg.a\n")
    graph = module_imports(pkg)
    assert graph == {"pkg": set(), "pkg.a": {"pkg.b"}, "pkg.b": {"pkg.a"}, "pkg.c": {"pkg.a"}}
    assert find_cycle(graph) == ["pkg.a", "pkg.b", "pkg.a"]
    (pkg / "b.py").write_text("def f():\n    pass\n")
    assert find_cycle(module_imports(pkg)) is None


# --- layers ---------------------------------------------------------------------------------

# Subpackages from the bottom up: a module may import from its own subpackage or a lower one, never
# from a higher one (imports inside functions count). The top-level ``nbutils`` package and the CLI
# are entry points and sit above everything.
LAYERS = ["core", "runtime", "text", "data", "checkpoints", "inference", "training", "pretraining",
          "explain", "pipeline", "reporting", "stages"]


def layer_of(module: str) -> int:
    parts = module.split(".")
    if len(parts) == 1 or parts[1] not in LAYERS:
        return len(LAYERS)  # nbutils, nbutils.cli: the entry points
    return LAYERS.index(parts[1])


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    return sorted(f"{src} -> {dst}" for src, dsts in graph.items() for dst in dsts
                  if layer_of(dst) > layer_of(src))


def test_every_module_sits_in_a_known_layer():
    stray = [m for m in module_imports() if m.count(".") == 1 and m.split(".")[1] not in LAYERS
             and m not in {"nbutils.cli"}]
    assert stray == [], f"modules outside the layered subpackages: {stray} (LAYERS in this test)"


def test_imports_only_go_down_the_layers():
    upward = upward_imports(module_imports())
    assert upward == [], "imports that go up a layer:\n  " + "\n  ".join(upward)


def test_the_layer_check_sees_an_upward_import(tmp_path):
    pkg = tmp_path / "nbutils"
    (pkg / "core").mkdir(parents=True)
    (pkg / "reporting").mkdir()
    for init in (pkg / "__init__.py", pkg / "core" / "__init__.py", pkg / "reporting" / "__init__.py"):
        init.write_text("")
    (pkg / "reporting" / "plots.py").write_text("from nbutils.core import io\n")
    (pkg / "core" / "io.py").write_text("def f():\n    from nbutils.reporting.plots import g\n")
    assert upward_imports(module_imports(pkg)) == ["nbutils.core.io -> nbutils.reporting.plots"]


# --- functions that fit on a screen ------------------------------------------------------------

FUNCTION_LINES = 80  # a function longer than this is read in pieces: split it into named steps


def long_functions(package_dir: Path = PACKAGE, limit: int = FUNCTION_LINES) -> list[str]:
    """``path:line name (N lines)`` for every function or method over ``limit`` lines."""
    found = []
    for path in sorted(package_dir.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > limit:
                    found.append(f"{path.relative_to(package_dir.parent)}:{node.lineno} {node.name} ({lines} lines)")
    return found


def test_functions_fit_on_a_screen():
    assert long_functions() == [], "functions over ~80 lines:\n  " + "\n  ".join(long_functions())


def test_the_length_check_sees_a_long_function(tmp_path):
    pkg = tmp_path / "nbutils"
    pkg.mkdir()
    body = "\n".join(f"        x{i} = {i}" for i in range(FUNCTION_LINES))
    (pkg / "a.py").write_text(f"def short():\n    pass\n\n\nclass C:\n    def long(self):\n{body}\n")
    assert long_functions(pkg) == [f"nbutils/a.py:6 long ({FUNCTION_LINES + 1} lines)"]


# --- thin notebooks ---------------------------------------------------------------------------

NOTEBOOKS = sorted((PACKAGE.parent / "notebooks").glob("[0-9][0-9]_*.ipynb"))
# A call (or dict) that takes this many parameters of one stage, each renamed by dropping the
# stage prefix (finetune_batch_size -> batch_size=...), is a config copied by hand: the config's
# from_params() does that. Below it is an ordinary call passing a few settings.
COPIED_PARAMETERS_LIMIT = 5


def code_cells(notebook: Path) -> list[tuple[int, str, bool]]:
    """``(cell index, source, is the parameters cell)`` of each code cell, IPython magics dropped."""
    import json

    cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
    return [(i, "\n".join(line for line in "".join(c["source"]).splitlines()
                          if not line.lstrip().startswith(("%", "!"))),
             "parameters" in c.get("metadata", {}).get("tags", []))
            for i, c in enumerate(cells) if c["cell_type"] == "code"]


def declared_parameters(notebook: Path) -> set[str]:
    """Names the notebook's ``parameters`` cell assigns."""
    for _, source, is_parameters in code_cells(notebook):
        if is_parameters:
            return {node.target.id for node in ast.parse(source).body
                    if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)}
    return set()


def definitions(source: str) -> list[str]:
    """Functions, classes and lambdas in notebook code: logic that belongs in nbutils, tested."""
    kinds = {ast.FunctionDef: "def", ast.AsyncFunctionDef: "async def", ast.ClassDef: "class",
             ast.Lambda: "lambda"}
    return [f"line {node.lineno}: {kinds[type(node)]} {getattr(node, 'name', '')}".rstrip()
            for node in ast.walk(ast.parse(source)) if type(node) in kinds]


def copied_parameters(source: str, parameters: set[str]) -> list[str]:
    """Calls and dict literals that take at least COPIED_PARAMETERS_LIMIT parameters of one
    stage prefix under their unprefixed names (``epochs=finetune_epochs``)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call):
            pairs = [(k.arg, k.value) for k in node.keywords if k.arg]
        elif isinstance(node, ast.Dict):
            pairs = [(k.value, v) for k, v in zip(node.keys, node.values, strict=True)
                     if isinstance(k, ast.Constant) and isinstance(k.value, str)]
        else:
            continue
        by_prefix: dict[str, list[str]] = {}
        for key, value in pairs:
            if isinstance(value, ast.Name) and value.id in parameters and value.id != key \
                    and value.id.endswith("_" + key):
                by_prefix.setdefault(value.id.removesuffix(key), []).append(value.id)
        for prefix, names in by_prefix.items():
            if len(names) >= COPIED_PARAMETERS_LIMIT:
                found.append(f"line {node.lineno}: {len(names)} {prefix}* parameters copied one by one")
    return found


def schema_building(source: str) -> list[str]:
    """``x["key"] = ...``: a results file assembled key by key in the notebook."""
    return [f"line {node.lineno}: {ast.unparse(target)} = ..."
            for node in ast.walk(ast.parse(source)) if isinstance(node, ast.Assign | ast.AugAssign)
            for target in (node.targets if isinstance(node, ast.Assign) else [node.target])
            if isinstance(target, ast.Subscript) and isinstance(target.slice, ast.Constant)
            and isinstance(target.slice.value, str)]


def test_notebooks_are_thin_calls_into_nbutils():
    assert len(NOTEBOOKS) >= 6
    problems = []
    for notebook in NOTEBOOKS:
        parameters = declared_parameters(notebook)
        assert parameters, f"{notebook.name}: no parameters cell"
        for index, source, _ in code_cells(notebook):
            for problem in (definitions(source) + copied_parameters(source, parameters)
                            + schema_building(source)):
                problems.append(f"{notebook.name} cell {index} {problem}")
    assert not problems, "notebook code that belongs in nbutils:\n" + "\n".join(problems)


def test_the_thin_notebook_checks_catch_what_they_name():
    parameters = {f"finetune_{name}" for name in ("epochs", "batch_size", "learning_rate", "warmup_ratio",
                                                  "max_length")} | {"seed", "mlm_max_steps"}
    copied = ("config = FinetuneConfig(epochs=finetune_epochs, batch_size=finetune_batch_size,\n"
              "    learning_rate=finetune_learning_rate, warmup_ratio=finetune_warmup_ratio,\n"
              "    max_length=finetune_max_length, seed=seed)")
    assert copied_parameters(copied, parameters) == ["line 1: 5 finetune_* parameters copied one by one"]
    as_dict = copied.replace("FinetuneConfig(", "dict(")
    assert copied_parameters(as_dict, parameters)
    literal = ('settings = {"epochs": finetune_epochs, "batch_size": finetune_batch_size, '
               '"learning_rate": finetune_learning_rate, "warmup_ratio": finetune_warmup_ratio, '
               '"max_length": finetune_max_length}')
    assert copied_parameters(literal, parameters)
    # a few settings passed by name, or the same names as the parameters, are an ordinary call
    assert not copied_parameters("f(epochs=finetune_epochs, max_length=finetune_max_length, seed=seed)",
                                 parameters)
    assert not copied_parameters("FinetuneConfig.from_params(globals(), max_length=max_length)", parameters)

    assert definitions("def show(fig):\n    pass\nclass A:\n    pass\ncut = lambda t: t[:9]\n") == [
        "line 1: def show", "line 3: class A", "line 5: lambda"]
    assert definitions("plots.show_figure(fig, path)\nfor x in y:\n    print(x)\n") == []
    assert schema_building('stats["split_sizes"] = ds.sizes()\nstats["figures"] += [1]') == [
        "line 1: stats['split_sizes'] = ...", "line 2: stats['figures'] = ..."]
    assert schema_building("rows[i] = 1\nstudy.save()") == []
