"""The pure library (custom_components/heartbeat_iot/homesync/) never imports Home Assistant."""

from __future__ import annotations

import ast
from pathlib import Path
import subprocess
import sys

import pytest

LIBRARY = Path(__file__).parents[1] / "custom_components" / "heartbeat_iot" / "homesync"
MODULES = sorted(LIBRARY.glob("*.py"))


def _imported_names(tree: ast.AST) -> list[str]:
    """Every absolute module name an import statement in the tree names (anywhere, any depth)."""
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute | ast.Name)
            and getattr(node.func, "attr", getattr(node.func, "id", ""))
            in {"import_module", "__import__"}
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            names.append(node.args[0].value)
    return names


def _escapes_package(tree: ast.AST) -> list[str]:
    """Relative imports that climb out of homesync/ (into the HA-facing integration)."""
    return [
        "." * node.level + (node.module or "")
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.level > 1
    ]


def test_the_library_has_modules() -> None:
    """Guard the guard: the glob finds the library (a moved folder would make the test vacuous)."""
    assert {p.name for p in MODULES} >= {
        "__init__.py",
        "protocol.py",
        "tracker.py",
        "commands.py",
        "ratelimit.py",
    }


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_no_home_assistant_import(path: Path) -> None:
    """No module in homesync/ imports homeassistant, directly or via the integration package."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    offending = [
        name
        for name in _imported_names(tree)
        if name.split(".")[0] in {"homeassistant", "custom_components"}
    ]
    assert offending == [], f"{path.name} imports {offending}"
    assert _escapes_package(tree) == [], f"{path.name} imports from the integration package"


def test_the_checker_sees_nested_and_aliased_imports() -> None:
    """The AST walk catches imports inside functions, `from x import y` and import_module()."""
    source = (
        "def f():\n"
        "    import homeassistant.core as c\n"
        "    from homeassistant.helpers import event\n"
        "    importlib.import_module('homeassistant.util')\n"
        "from ..const import DOMAIN\n"
    )
    tree = ast.parse(source)
    assert _imported_names(tree) == [
        "homeassistant.core",
        "homeassistant.helpers",
        "homeassistant.util",
    ]
    assert _escapes_package(tree) == ["..const"]


def test_importable_with_home_assistant_blocked() -> None:
    """In a fresh interpreter where `import homeassistant` fails, every library module imports."""
    names = [p.stem for p in MODULES if p.stem != "__init__"]
    program = f"""
import importlib.abc, importlib.util, sys

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "homeassistant":
            raise ImportError("homeassistant is blocked in this test")
        return None

sys.meta_path.insert(0, Block())
spec = importlib.util.spec_from_file_location(
    "homesync_lib", {str(LIBRARY / "__init__.py")!r}, submodule_search_locations=[{str(LIBRARY)!r}]
)
pkg = importlib.util.module_from_spec(spec)
sys.modules["homesync_lib"] = pkg
spec.loader.exec_module(pkg)
for name in {names!r}:
    importlib.import_module("homesync_lib." + name)
assert not any(m.split(".")[0] == "homeassistant" for m in sys.modules), "homeassistant loaded"
print("ok")
"""
    result = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, check=False, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


INTEGRATION = LIBRARY.parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(INTEGRATION).with_suffix("").parts
    return ".".join(p for p in parts if p != "__init__") or "__init__"


def _local_imports(path: Path, modules: set[str]) -> set[str]:
    """The integration's own modules a module imports (relative imports, TYPE_CHECKING too)."""
    own = _module_name(path)
    if path.name == "__init__.py":
        package = [] if own == "__init__" else own.split(".")
    else:
        package = own.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not isinstance(node, ast.ImportFrom) or node.level == 0:
            continue
        base = package[: len(package) - (node.level - 1)]
        if node.module:
            found.add(".".join([*base, node.module]))
            continue
        for alias in node.names:  # `from . import x`: a module, or a name of the package
            candidate = ".".join([*base, alias.name])
            found.add(candidate if candidate in modules else ".".join(base) or "__init__")
    return found & modules


def test_the_integration_has_no_import_cycle() -> None:
    """Every part gets what it needs passed in; nothing imports its own user (even for typing)."""
    paths = list(INTEGRATION.rglob("*.py"))
    modules = {_module_name(p) for p in paths}
    graph = {_module_name(p): _local_imports(p, modules) for p in paths}
    # Guard the guard: the graph sees relative imports, package imports included.
    assert {"hub", "homesync.tracker"} <= graph["models"]
    assert "homesync.protocol" in graph["homesync.commands"]
    assert "hub" not in graph["control"]
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for dep in sorted(graph.get(module, ())):
            if state.get(dep) == 1:
                cycle = [*path[path.index(dep) :], dep] if dep in path else [module, dep]
                pytest.fail(f"import cycle: {' -> '.join(cycle)}")
            if dep not in state:
                visit(dep, [*path, dep])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
