"""The trainer's imports follow its data flow, as test/layers.test.ts checks for src/: every import
of a crad module points to the same layer or one below, and no chain of imports comes back to
where it started. Imports count wherever they are written: inside a function (where lazy imports
hide cycles) and under `if TYPE_CHECKING` too.

Modules picked by name at run time (the CLI's command table, the backbone registry's dotted
paths, both through importlib) are not imports and are not checked here.
"""

import ast
import shutil
from pathlib import Path

import pytest

CRAD = Path(__file__).resolve().parents[1] / "crad"

# Bottom to top: the top-level name under crad/ ("crad" is the package's own __init__.py; a
# sub-package such as backbones/ is one room, its modules import each other freely, cycles aside).
LAYERS = [
    ["crad", "device", "files", "metrics", "scores"],
    ["data", "synth", "anomalies", "thresholds"],
    ["backbones"],
    ["model", "baseline"],
    ["train", "select", "evaluate", "export"],
    ["calibrate"],
    ["teach"],
    ["bench_common"],
    ["bench_fewshot", "bench_unified", "bench_select"],
    ["bench"],
    ["__main__"],
]


def module_names(root: Path) -> dict[str, Path]:
    """Dotted name -> file of every module of the package at `root`."""
    names = {}
    for file in sorted(root.rglob("*.py")):
        parts = list(file.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = file
    return names


def imports_of(name: str, file: Path, modules: dict[str, Path]) -> set[str]:
    """The package's modules that `name` imports, at any depth of its code."""
    package = name if file.name == "__init__.py" else name.rpartition(".")[0]
    top = name.split(".")[0]
    found = set()
    for node in ast.walk(ast.parse(file.read_text(), str(file))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for alias in node.names:  # `from pkg import mod` imports the module pkg.mod
                found.add(f"{source}.{alias.name}" if f"{source}.{alias.name}" in modules else source)
    imported = set()
    for target in found:
        if target == top or target.startswith(top + "."):
            if target not in modules:
                raise AssertionError(f"{file}: imports {target}, which is not a module of {top}")
            imported.add(target)
    # Importing a module runs its packages' __init__.py first: an edge like any other.
    parts = name.split(".")
    imported.update(".".join(parts[:i]) for i in range(1, len(parts)))
    imported.discard(name)
    return imported


def import_graph(root: Path) -> dict[str, set[str]]:
    modules = module_names(root)
    return {name: imports_of(name, file, modules) for name, file in modules.items()}


def layer_of(name: str, layers: list[list[str]]) -> int:
    parts = name.split(".")
    room = parts[1] if len(parts) > 1 else parts[0]
    for index, names in enumerate(layers):
        if room in names:
            return index
    raise AssertionError(f"{name}: {room} has no place in the layer list of training/tests/test_layers.py")


def upward_imports(graph: dict[str, set[str]], layers: list[list[str]]) -> list[str]:
    return sorted(f"{name} -> {target}" for name, targets in graph.items() for target in targets
                  if layer_of(target, layers) > layer_of(name, layers))


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(name: str) -> None:
        index[name] = low[name] = len(index)
        stack.append(name)
        on_stack.add(name)
        for target in sorted(graph.get(name, ())):
            if target not in index:
                visit(target)
                low[name] = min(low[name], low[target])
            elif target in on_stack:
                low[name] = min(low[name], index[target])
        if low[name] == index[name]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == name:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for name in sorted(graph):
        if name not in index:
            visit(name)
    return sorted(found)


def test_no_import_in_crad_runs_back_up_the_layers_or_in_a_circle():
    graph = import_graph(CRAD)
    assert len(graph) > 20 and "crad.thresholds" in graph["crad.evaluate"], "the package and its imports were found"
    assert "crad.train" in graph["crad.bench_common"], "imports inside functions count"
    assert upward_imports(graph, LAYERS) == [], "imports that run back up the layers"
    assert cycles(graph) == [], "import cycles"


@pytest.fixture
def crad_copy(tmp_path):
    copy = tmp_path / "crad"
    shutil.copytree(CRAD, copy, ignore=shutil.ignore_patterns("__pycache__"))
    return copy


def add_lazy_import(file: Path, statement: str) -> None:
    with file.open("a") as handle:
        handle.write(f"\n\ndef _added_for_the_test():\n    {statement}\n")


def test_an_import_hidden_in_a_function_that_goes_up_and_round_is_caught(crad_copy):
    # the evaluate <-> thresholds shape this test was written against
    add_lazy_import(crad_copy / "metrics.py", "from .evaluate import compute_metrics")
    graph = import_graph(crad_copy)
    assert upward_imports(graph, LAYERS) == ["crad.metrics -> crad.evaluate"]
    assert cycles(graph) == [["crad.evaluate", "crad.metrics", "crad.thresholds"]]


def test_a_cycle_within_one_layer_is_caught(crad_copy):
    add_lazy_import(crad_copy / "bench_fewshot.py", "import crad.bench_unified")
    add_lazy_import(crad_copy / "bench_unified.py", "from . import bench_fewshot")
    graph = import_graph(crad_copy)
    assert upward_imports(graph, LAYERS) == []
    assert cycles(graph) == [["crad.bench_fewshot", "crad.bench_unified"]]


def test_a_cycle_through_a_package_init_is_caught(crad_copy):
    # importing crad.backbones.tflite runs crad/backbones/__init__.py first
    add_lazy_import(crad_copy / "backbones" / "__init__.py", "from .tflite import read_tflite")
    add_lazy_import(crad_copy / "backbones" / "tflite.py", "from ..data import read_image")
    graph = import_graph(crad_copy)
    assert "crad.data" in graph["crad.backbones.tflite"]  # relative imports resolve from the sub-package
    assert cycles(graph) == [["crad.backbones", "crad.backbones.tflite"]]
    assert upward_imports(graph, LAYERS) == []


def test_a_module_without_a_layer_is_named(crad_copy):
    (crad_copy / "reports.py").write_text("from .evaluate import markdown_table\n")
    with pytest.raises(AssertionError, match="reports has no place in the layer list"):
        upward_imports(import_graph(crad_copy), LAYERS)
