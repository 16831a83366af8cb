"""The layering rule of docs/design.md#layers, checked on every module of the package.

1. Only `ros/` imports rclpy or ROS message packages.
2. Imports point only downwards: a module imports its own layer or a layer below it.
3. No import circles between modules (lazy imports inside functions count too).

The checks run on the source (ast), so a lazy import inside a function is seen as well; the
last tests show each check failing on a synthetic package.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Sequence
from pathlib import Path

import diffusion_policy_node

PACKAGE_DIR = Path(diffusion_policy_node.__file__).parent
PACKAGE = "diffusion_policy_node"
ROS_MODULES = ("rclpy", "rosidl_runtime_py", "launch", "launch_ros", "ament_index_python")

# Top to bottom (docs/design.md#layers). Modules at the package root form the lowest layer.
LAYERS = ("ros", "eval", "train", "interop", "sim", "data", "runtime", "policy")
ROOT = "(package root)"


def is_ros_module(name: str) -> bool:
    top = name.split(".")[0]
    return top in ROS_MODULES or top.endswith(("_msgs", "_srvs", "_interfaces"))


def _imports(tree: ast.AST) -> Iterator[tuple[int, int, str | None, list[str]]]:
    """(line, level, module, names) of every import statement, at any nesting level."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, 0, alias.name, []
        elif isinstance(node, ast.ImportFrom):
            yield node.lineno, node.level, node.module, [a.name for a in node.names]


def ros_imports(path: Path) -> list[str]:
    """'file:line module' for every ROS import in `path`, at any nesting level."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for line, level, module, _ in _imports(tree):
        if level:
            continue
        if module and is_ros_module(module):
            found.append(f"{path}:{line} {module}")
    return found


def module_names(package_dir: Path, package: str) -> dict[str, Path]:
    """{dotted module name: file} for every .py file of the package."""
    out = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = path.relative_to(package_dir).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join((package, *parts))] = path
    return out


def import_graph(package_dir: Path, package: str) -> dict[str, dict[str, int]]:
    """{module: {imported module of the package: line}}, relative imports resolved; `from a
    import b` counts `a.b` when that is a module, else `a`."""
    modules = module_names(package_dir, package)
    graph: dict[str, dict[str, int]] = {}
    for name, path in modules.items():
        is_pkg = path.name == "__init__.py"
        here = name.split(".") if is_pkg else name.split(".")[:-1]
        edges: dict[str, int] = {}
        for line, level, module, names in _imports(ast.parse(path.read_text(), str(path))):
            if level:
                base = here[: len(here) - (level - 1)]
                target = ".".join(base + ([module] if module else []))
            else:
                target = module or ""
            if target != package and not target.startswith(package + "."):
                continue
            found = [f"{target}.{n}" for n in names if f"{target}.{n}" in modules]
            if not found:
                while target not in modules and "." in target:
                    target = target.rsplit(".", 1)[0]
                found = [target]
            for t in found:
                if t != name:
                    edges.setdefault(t, line)
        graph[name] = edges
    return graph


def layer_of(module: str, layers: Sequence[str]) -> str:
    parts = module.split(".")
    if len(parts) > 1 and parts[1] in layers:
        return parts[1]
    return ROOT


def upward_imports(
    graph: dict[str, dict[str, int]], modules: dict[str, Path], layers: Sequence[str]
) -> list[str]:
    """'file:line: a (layer) imports b (higher layer)' for every import against the order."""
    rank = {layer: i for i, layer in enumerate((*layers, ROOT))}
    out = []
    for source, edges in graph.items():
        for target, line in edges.items():
            src_layer, dst_layer = layer_of(source, layers), layer_of(target, layers)
            if rank[dst_layer] < rank[src_layer]:
                out.append(
                    f"{modules[source]}:{line}: {source} ({src_layer}) imports {target} "
                    f"({dst_layer}, a higher layer)"
                )
    return out


def unknown_layers(modules: dict[str, Path], layers: Sequence[str]) -> list[str]:
    """Subpackages that are not in `layers` (a new layer must be placed in the order)."""
    found = set()
    for name, path in modules.items():
        parts = name.split(".")
        in_subpackage = len(parts) > 2 or (len(parts) == 2 and path.name == "__init__.py")
        if in_subpackage and parts[1] not in layers:
            found.add(parts[1])
    return sorted(found)


def import_circles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []
    counter = 0

    def visit(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, {}):
            if w not in index:
                visit(w)
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
                circles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(circles)


# ------------------------------------------------------------------------- the package


def test_only_ros_layer_imports_ros() -> None:
    files = sorted(PACKAGE_DIR.rglob("*.py"))
    assert len(files) > 7, "package sources not found"
    leaks = [
        hit
        for f in files
        if "ros" not in f.relative_to(PACKAGE_DIR).parts[:1]
        for hit in ros_imports(f)
    ]
    assert leaks == [], "ROS imports outside diffusion_policy_node/ros/:\n" + "\n".join(leaks)


def test_every_subpackage_has_a_place_in_the_layer_order() -> None:
    unknown = unknown_layers(module_names(PACKAGE_DIR, PACKAGE), LAYERS)
    assert unknown == [], (
        f"subpackage(s) {unknown} have no place in LAYERS: add each where its imports put it "
        "(above what it imports, below what imports it) here and in docs/design.md#layers"
    )


def test_imports_point_only_downwards() -> None:
    modules = module_names(PACKAGE_DIR, PACKAGE)
    graph = import_graph(PACKAGE_DIR, PACKAGE)
    assert sum(len(e) for e in graph.values()) > 100, "the import graph looks empty"
    assert upward_imports(graph, modules, LAYERS) == []


def test_no_import_circles() -> None:
    assert import_circles(import_graph(PACKAGE_DIR, PACKAGE)) == []


def test_ros_layer_does_import_ros() -> None:
    # Sanity check of the scan itself: the ROS layer is expected to show up.
    assert ros_imports(PACKAGE_DIR / "ros" / "selftest.py")


# ------------------------------------------------------------- the checks, on a fake package


def test_detector_sees_nested_and_from_imports(tmp_path: Path) -> None:
    src = tmp_path / "m.py"
    src.write_text(
        "import numpy\n"
        "def f():\n    from sensor_msgs.msg import Image\n"
        "import rclpy.node as rn\nfrom std_srvs.srv import Trigger\n"
    )
    hits = ros_imports(src)
    assert sorted(h.split(" ")[1] for h in hits) == [
        "rclpy.node",
        "sensor_msgs.msg",
        "std_srvs.srv",
    ]


def _fake_package(root: Path, files: dict[str, str]) -> Path:
    pkg = root / "fakepkg"
    for rel, text in {"__init__.py": "", **files}.items():
        path = pkg / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        (path.parent / "__init__.py").touch()
        path.write_text(text)
    return pkg


def test_an_upward_import_is_found(tmp_path: Path) -> None:
    pkg = _fake_package(
        tmp_path,
        {
            "top/node.py": "from fakepkg.low import core\n",  # downwards: fine
            "low/core.py": "def f():\n    from ..top import node\n",  # upwards, lazy, relative
            "util.py": "",
        },
    )
    graph = import_graph(pkg, "fakepkg")
    assert graph["fakepkg.low.core"] == {"fakepkg.top.node": 2}
    found = upward_imports(graph, module_names(pkg, "fakepkg"), ("top", "low"))
    assert len(found) == 1 and "fakepkg.low.core (low) imports fakepkg.top.node (top" in found[0]
    assert unknown_layers(module_names(pkg, "fakepkg"), ("top",)) == ["low"]


def test_an_import_circle_is_found(tmp_path: Path) -> None:
    pkg = _fake_package(
        tmp_path,
        {
            "low/a.py": "from fakepkg.low.b import x\n",
            "low/b.py": "x = 1\ndef f():\n    from . import a\n",  # the circle closes lazily
            "low/c.py": "from fakepkg.low import a\n",  # imports the circle, not part of it
        },
    )
    graph = import_graph(pkg, "fakepkg")
    assert import_circles(graph) == [["fakepkg.low.a", "fakepkg.low.b"]]
    assert upward_imports(graph, module_names(pkg, "fakepkg"), ("low",)) == []
