"""The import graph of ``src/tdmi`` flows one way (shared/design/LAYERS.md), with no cycles.

Walks every module with ``ast``: module-level imports (run when the module is imported) and
function-level imports (run when the work starts) are kept apart, because the first decide what
``import tdmi.runtime`` costs and the second what a call may reach. Imports under
``if TYPE_CHECKING:`` never run and are not edges.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "tdmi"

# Lowest first. A module may import its own layer's and lower layers' modules, never a higher one.
LAYERS: tuple[tuple[str, ...], ...] = (
    # ground: no torch, no onnx
    (
        "tdmi",
        "tdmi.errors",
        "tdmi.utils",
        "tdmi.extras",
        "tdmi.checks",
        "tdmi.stats",
        "tdmi.versions",
        "tdmi.spec",
        "tdmi.artifacts",
    ),
    # the reference network (torch) | data handling | CUDA kernel + glue | metrics
    ("tdmi.data", "tdmi.model", "tdmi.plugins", "tdmi.eval"),
    # run artifacts | make artifacts
    ("tdmi.runtime", "tdmi.export"),
    # capabilities
    ("tdmi.benchmarks", "tdmi.gpukit", "tdmi.serve", "tdmi.video", "tdmi.train"),
    ("tdmi.cli",),
)
# Edges the layer order alone would allow, but that break the torch-free deploy install: the
# runtime and the exporter meet only through files, and the runtime never reaches the torch model.
FORBIDDEN: dict[tuple[str, str], str] = {
    ("tdmi.runtime", "tdmi.export"): "runtime and export meet only through files",
    ("tdmi.export", "tdmi.runtime"): "runtime and export meet only through files",
    ("tdmi.runtime", "tdmi.model"): "the runtime does not reach the torch model",
    ("tdmi.data", "tdmi.model"): "data handling is torch-free",
    ("tdmi.eval", "tdmi.model"): "the metrics are torch-free",
}
HEAVY = ("torch", "torchvision", "onnx", "onnxscript", "onnxslim", "onnx_graphsurgeon")
# Packages whose modules may import a heavy package when they are imported (the others do it where
# the work starts, so `-h`, option errors and the deploy install never load torch or onnx).
HEAVY_AT_IMPORT_OK = ("tdmi.model", "tdmi.export", "tdmi.train", "tdmi.benchmarks")
# The one sanctioned way from the runtime to the torch model: the torch backend, inside its
# functions, after checking that torch is installed (tdmi.extras.require).
ALLOWED = {
    ("tdmi.runtime.torch_backend", "tdmi.model", "function"),
    # The exporter checks an IR it wrote (and scores INT8 candidates) on the very predictor that will
    # run it: through a file it has just written, inside the function, never at import time.
    ("tdmi.export.openvino_export", "tdmi.runtime", "function"),
    ("tdmi.export.int8_search", "tdmi.runtime", "function"),
}
# Where the runtime may import torch inside a function: a caller passed torch tensors (or asked
# for the torch backend), so torch is already there.
RUNTIME_TORCH_OK = {"tdmi.runtime.base", "tdmi.runtime.torch_backend", "tdmi.runtime.tensorrt_backend"}


@dataclass(frozen=True)
class Edge:
    source: str
    target: str  # a tdmi module, or a third-party top-level name
    level: str  # "module" | "function"
    line: int


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(node: ast.If) -> bool:
    return "TYPE_CHECKING" in ast.unparse(node.test)


def import_graph(root: Path = SRC) -> tuple[set[str], list[Edge]]:
    """(every module under ``root``, every import edge), third-party targets as their top name."""
    files = {_module_name(p, root): p for p in sorted(root.rglob("*.py"))}
    modules = set(files)
    edges: list[Edge] = []
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]

        def resolve(target: str) -> str:
            if target.split(".")[0] != root.name:
                return target.split(".")[0]
            while target not in modules and "." in target:
                target = target.rpartition(".")[0]
            return target

        def visit(node: ast.AST, in_function: bool, name: str = name, package: str = package) -> None:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.If) and _is_type_checking(child):
                    continue
                level = "function" if in_function else "module"
                targets: list[str] = []
                if isinstance(child, ast.Import):
                    targets = [a.name for a in child.names]
                elif isinstance(child, ast.ImportFrom):
                    if child.level:
                        base = package.split(".")[: len(package.split(".")) - child.level + 1]
                        mod = ".".join([*base, *([child.module] if child.module else [])])
                    else:
                        mod = child.module or ""
                    # ``from pkg import sub`` imports the submodule pkg.sub when there is one
                    targets = [
                        f"{mod}.{a.name}" if f"{mod}.{a.name}" in modules else mod for a in child.names
                    ]
                for t in targets:
                    target = resolve(t)
                    if target != name:
                        edges.append(Edge(name, target, level, child.lineno))
                visit(
                    child,
                    in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)),
                )

        visit(ast.parse(path.read_text(), filename=str(path)), False)
    return modules, edges


def _owner(module: str, layers: tuple[tuple[str, ...], ...] = LAYERS) -> tuple[int, str] | None:
    """(layer index, package) of a module: the longest listed prefix wins (``tdmi`` is only itself)."""
    best: tuple[int, str] | None = None
    for index, packages in enumerate(layers):
        for package in packages:
            inside = module == package or ("." in package and module.startswith(package + "."))
            if inside and (best is None or len(package) > len(best[1])):
                best = (index, package)
    return best


def layer_violations(
    modules: set[str], edges: list[Edge], layers: tuple[tuple[str, ...], ...] = LAYERS
) -> list[str]:
    problems = [
        f"{m}: in no layer (add its package to LAYERS)" for m in sorted(modules) if _owner(m, layers) is None
    ]
    ground = set(layers[0])
    for e in edges:
        src = _owner(e.source, layers)
        if src is None:
            continue
        where = f"{e.source}:{e.line} ({e.level}-level)"
        if e.target not in modules:  # third party
            if e.target not in HEAVY:
                continue
            if src[1] in ground:
                problems.append(f"{where} imports {e.target}: the ground layer is torch- and onnx-free")
            elif src[1] == "tdmi.runtime" and (
                e.target != "torch" or e.level == "module" or e.source not in RUNTIME_TORCH_OK
            ):
                problems.append(f"{where} imports {e.target}: the runtime runs without torch and onnx")
            elif e.level == "module" and src[1] not in HEAVY_AT_IMPORT_OK:
                problems.append(f"{where} imports {e.target} at import time: import it where the work starts")
            continue
        dst = _owner(e.target, layers)
        if dst is None or (e.source, dst[1], e.level) in ALLOWED:
            continue
        if dst[0] > src[0]:
            problems.append(f"{where} imports {e.target}, a higher layer ({dst[1]} above {src[1]})")
        elif (src[1], dst[1]) in FORBIDDEN:
            problems.append(f"{where} imports {e.target}: {FORBIDDEN[src[1], dst[1]]}")
    return problems


def find_cycles(modules: set[str], edges: list[Edge], levels: tuple[str, ...]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for e in edges:
        if e.level in levels and e.target in modules:
            graph[e.source].add(e.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def strongconnect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            strongconnect(v)
    return out


def _package_edges(modules: set[str], edges: list[Edge]) -> tuple[set[str], list[Edge]]:
    """The same graph one level up: ``tdmi.export.fuse`` -> ``tdmi.export``."""

    def pkg(m: str) -> str:
        owner = _owner(m)
        return owner[1] if owner else m

    packages = {pkg(m) for m in modules}
    return packages, [
        Edge(pkg(e.source), pkg(e.target), e.level, e.line)
        for e in edges
        if e.target in modules and pkg(e.source) != pkg(e.target)
    ]


@pytest.fixture(scope="module")
def graph() -> tuple[set[str], list[Edge]]:
    return import_graph()


def test_the_walk_sees_the_tree(graph: tuple[set[str], list[Edge]]) -> None:
    modules, edges = graph
    assert {"tdmi.runtime", "tdmi.runtime.base", "tdmi.spec.config", "tdmi.cli.infer"} <= modules
    seen = {(e.source, e.target, e.level) for e in edges}
    assert ("tdmi.runtime", "tdmi.runtime.base", "module") in seen
    # ``from tdmi.plugins import ptx`` is an edge to the submodule, not to the package
    assert ("tdmi.plugins.trt_plugin", "tdmi.plugins.ptx", "module") in seen
    assert ("tdmi.runtime.torch_backend", "torch", "function") in seen
    assert ("tdmi.runtime.torch_backend", "tdmi.model", "function") in seen
    # a type-only import is not an edge (runtime.keypoints -> runtime.base would be a cycle)
    assert ("tdmi.runtime.keypoints", "tdmi.runtime.base", "module") not in seen


def test_no_import_cycles(graph: tuple[set[str], list[Edge]]) -> None:
    modules, edges = graph
    assert find_cycles(modules, edges, ("module",)) == []
    # function-level imports run later, but a cycle there still ties the two modules together
    assert find_cycles(modules, edges, ("module", "function")) == []
    packages, pedges = _package_edges(modules, edges)
    assert find_cycles(packages, pedges, ("module", "function")) == []


def test_imports_flow_down_the_layers(graph: tuple[set[str], list[Edge]]) -> None:
    assert layer_violations(*graph) == []


def _write_tree(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        p = root / "tdmi" / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return root / "tdmi"


GOOD_TREE = {
    "__init__.py": "",
    "errors.py": "",
    "spec/__init__.py": "",
    "spec/config.py": "from tdmi.errors import X\n",
    "runtime/__init__.py": "from tdmi.runtime.base import P\n",
    "runtime/base.py": "import numpy\nfrom tdmi.spec.config import C\n",
    "runtime/torch_backend.py": "def f():\n    import torch\n    from tdmi.model import TDMI\n",
    "export/__init__.py": "",
    "export/fuse.py": "import onnx\nfrom tdmi.spec import config\n",
    "model/__init__.py": "import torch\n",
    "video/__init__.py": "",
    "cli/__init__.py": "",
    "cli/infer.py": "from tdmi.runtime import P\ndef g():\n    from tdmi.export import fuse\n",
}


@pytest.mark.parametrize(
    ("rel", "text", "fragment"),
    [
        (
            "runtime/onnxruntime_backend.py",
            "def f():\n    from tdmi.export.fuse import x\n",
            "only through files",
        ),
        ("export/split.py", "from tdmi.runtime.base import P\n", "only through files"),
        ("runtime/features.py", "def f():\n    from tdmi.model.split import s\n", "torch model"),
        ("runtime/torch_backend.py", "from tdmi.model import TDMI\n", "torch model"),
        ("runtime/torch_backend.py", "import torch\n", "without torch and onnx"),
        ("video/infer.py", "import torch\n", "where the work starts"),
        ("spec/joints.py", "def f():\n    from tdmi.runtime import P\n", "a higher layer"),
        ("spec/joints.py", "import onnx\n", "torch- and onnx-free"),
        ("runtime/keypoints.py", "import torch\n", "without torch and onnx"),
        ("runtime/keypoints.py", "def f():\n    import onnx\n", "without torch and onnx"),
        ("export/fuse2.py", "from tdmi.cli import infer\n", "a higher layer"),
        ("newpkg/thing.py", "", "in no layer"),
    ],
)
def test_the_layer_check_catches_a_bad_edge(tmp_path: Path, rel: str, text: str, fragment: str) -> None:
    good = _write_tree(tmp_path / "good", GOOD_TREE)
    assert layer_violations(*import_graph(good)) == []
    bad = _write_tree(tmp_path / "bad", {**GOOD_TREE, rel: text})
    problems = layer_violations(*import_graph(bad))
    assert any(fragment in p for p in problems), problems


def test_the_cycle_check_catches_a_cycle(tmp_path: Path) -> None:
    root = _write_tree(
        tmp_path,
        {
            **GOOD_TREE,
            "model/checkpoint.py": "def load():\n    from tdmi.model.tdmi import TDMI\n",
            "model/tdmi.py": "from tdmi.model.checkpoint import load\n",
        },
    )
    modules, edges = import_graph(root)
    assert find_cycles(modules, edges, ("module",)) == []
    assert find_cycles(modules, edges, ("module", "function")) == [
        ["tdmi.model.checkpoint", "tdmi.model.tdmi"]
    ]
    root2 = _write_tree(tmp_path / "t2", {**GOOD_TREE, "spec/config.py": "from tdmi.spec import config\n"})
    # ``from tdmi.spec import config`` inside tdmi.spec.config is the module itself: no edge, no cycle
    assert find_cycles(*import_graph(root2), ("module",)) == []
    root3 = _write_tree(
        tmp_path / "t3",
        {
            **GOOD_TREE,
            "runtime/base.py": "from tdmi.runtime.keypoints import k\n",
            "runtime/keypoints.py": "from tdmi.runtime.base import P\n",
        },
    )
    assert find_cycles(*import_graph(root3), ("module",)) == [["tdmi.runtime.base", "tdmi.runtime.keypoints"]]


def heavy_at_import(modules: set[str], edges: list[Edge]) -> dict[str, set[str]]:
    """Module -> the heavy packages that importing it loads (module-level edges, transitively;
    importing ``a.b.c`` also runs ``a/__init__`` and ``a/b/__init__``)."""
    direct: dict[str, set[str]] = {m: set() for m in modules}
    for e in edges:
        if e.level == "module":
            direct[e.source].add(e.target)
    for m in modules:
        parts = m.split(".")
        direct[m].update(".".join(parts[:i]) for i in range(1, len(parts)) if ".".join(parts[:i]) in modules)
    reached: dict[str, set[str]] = {}
    for m in modules:
        seen, todo = {m}, [m]
        while todo:
            for t in direct.get(todo.pop(), ()):
                if t not in seen:
                    seen.add(t)
                    todo.append(t)
        reached[m] = {t for t in seen if t in HEAVY}
    return reached


def test_light_packages_load_no_heavy_module_when_imported(graph: tuple[set[str], list[Edge]]) -> None:
    """`-h`, option errors and the deploy install: importing a CLI command, the runtime, video,
    eval or serving loads no torch or onnx, however indirectly."""
    modules, edges = graph
    reached = heavy_at_import(modules, edges)
    bad = {
        m: sorted(h) for m, h in reached.items() if h and (_owner(m) or (0, ""))[1] not in HEAVY_AT_IMPORT_OK
    }
    assert bad == {}


def test_the_transitive_check_sees_through_packages(tmp_path: Path) -> None:
    root = _write_tree(
        tmp_path, {**GOOD_TREE, "cli/infer.py": "from tdmi.model.split import s\n", "model/split.py": ""}
    )
    reached = heavy_at_import(*import_graph(root))
    assert reached["tdmi.cli.infer"] == {"torch"}  # through tdmi/model/__init__.py
    assert reached["tdmi.runtime.torch_backend"] == set()
