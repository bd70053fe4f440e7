"""The package's shape: no import circles between its modules, no imports of its own modules inside functions, and
the layers the README's layout section states (``utils`` imports nothing of ours; ``data`` and ``networks`` nothing
above them)."""

import ast
from pathlib import Path

import fusionlungnet_monai

PACKAGE = Path(fusionlungnet_monai.__file__).parent


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports():
    """{module: (imports at module level, imports inside functions)}, each a set of our module names."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    out = {}
    for name, path in modules.items():
        top, inner = set(), set()
        tree = ast.parse(path.read_text())
        functions = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
        in_function = {id(n) for f in functions for n in ast.walk(f) if n is not f}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("fusionlungnet_monai"):
                targets = {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                           for a in node.names}
            elif isinstance(node, ast.Import):
                targets = {a.name for a in node.names if a.name.startswith("fusionlungnet_monai")}
            else:
                continue
            (inner if id(node) in in_function else top).update(targets)
        out[name] = (top, inner)
    return out


def test_no_imports_of_our_modules_inside_functions():
    inner = {m: sorted(i) for m, (_, i) in _imports().items() if i}
    assert not inner, f"imports of the package's own modules inside functions: {inner}"


def test_no_import_circles():
    graph = {m: {t for t in top if t != m} for m, (top, _) in _imports().items()}
    state: dict = {}

    def visit(m, path):
        state[m] = "open"
        for t in sorted(graph.get(m, ())):
            if state.get(t) == "open":
                raise AssertionError(f"import circle: {' -> '.join(path[path.index(t):] + [t])}")
            if t not in state:
                visit(t, path + [t])
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])


def test_the_layers():
    imports = {m: top for m, (top, _) in _imports().items()}

    def below(module, allowed):
        bad = sorted(t for t in imports[module] if not t.startswith(tuple(allowed)) and t != "fusionlungnet_monai")
        assert not bad, f"{module} imports {bad}"

    for m in imports:
        if m.startswith("fusionlungnet_monai.utils"):
            below(m, ["fusionlungnet_monai.utils"])
        elif m.startswith("fusionlungnet_monai.data"):
            below(m, ["fusionlungnet_monai.utils", "fusionlungnet_monai.data"])
        elif m.startswith("fusionlungnet_monai.networks"):
            below(m, ["fusionlungnet_monai.networks"])
        elif m in ("fusionlungnet_monai.classical", "fusionlungnet_monai.volumes"):
            below(m, ["fusionlungnet_monai.utils"])
        elif m.startswith("fusionlungnet_monai.transforms"):
            below(m, ["fusionlungnet_monai.utils", "fusionlungnet_monai.data", "fusionlungnet_monai.classical",
                      "fusionlungnet_monai.transforms"])
