"""Imports flow one way: no cycle in minidiff, minidiff.kernels or minidiff.reference.

The module graph is read from the source with `ast`, every import statement counted wherever it
sits (function-level "lazy" imports too: a cycle hidden in a function is still a cycle). An edge
`a -> b` means a's source imports b; `from pkg import name` points at `pkg.name` when that is a
module, else at `pkg`. The parent packages Python initialises on the way to a submodule are not
edges (every package would otherwise import itself through its own submodules).
"""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# import name -> the folder it installs from (pyproject.toml's [tool.setuptools.package-dir])
PACKAGES = {"minidiff": REPO / "minidiff", "minidiff.kernels": REPO / "kernels",
            "minidiff.reference": REPO / "reference"}


def module_files(packages: dict) -> dict[str, Path]:
    """Every module's dotted name and its file."""
    modules = {}
    for name, folder in packages.items():
        for path in sorted(folder.rglob("*.py")):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join([name, *parts])] = path
    return modules


def imported(module: str, path: Path, modules: dict) -> set[str]:
    """The modules of `modules` that `module`'s source (at `path`) imports, anywhere in it."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    targets = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from .x import y, from .. import z
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                full = f"{base}.{alias.name}"
                targets.add(full if full in modules else base)
    return {t for t in targets if t in modules and t != module}


def module_graph(packages: dict) -> dict[str, set[str]]:
    modules = module_files(packages)
    return {name: imported(name, path, modules) for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of `graph` as [a, b, ..., a], or None (depth-first search, three colours)."""
    state, stack = {}, []  # state: 1 on the current path, 2 finished

    def visit(node):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycles():
    graph = module_graph(PACKAGES)
    assert "minidiff.training.trainer" in graph and "minidiff.reference.samplers" in graph
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_graph_sees_lazy_and_relative_imports(tmp_path):
    """The checker itself: a cycle made by a function-level import and a relative one is found."""
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from pkg.b import g\n")
    (pkg / "b.py").write_text("from . import c\n")
    (pkg / "c.py").write_text("import pkg.a\n")
    graph = module_graph({"pkg": pkg})
    assert graph["pkg.a"] == {"pkg.b"} and graph["pkg.b"] == {"pkg.c"}
    assert find_cycle(graph) == ["pkg.a", "pkg.b", "pkg.c", "pkg.a"]
    (pkg / "c.py").write_text("")
    assert find_cycle(module_graph({"pkg": pkg})) is None


@pytest.mark.parametrize("module", ["minidiff", "minidiff.reference",
                                    "minidiff.utils.rules"])
def test_these_modules_load_no_torch(module):
    code = f"import sys, {module}; assert 'torch' not in sys.modules, 'torch was imported'"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-1000:]


# The floors of the package, lowest first: a module imports only from its own floor or below.
# The course's concepts sit on one floor; the plumbing that trains and commands them above.
FLOORS = [("minidiff.utils", "minidiff.reference"), ("minidiff.data",),
          ("minidiff.noising", "minidiff.philox", "minidiff.unet", "minidiff.samplers",
           "minidiff.dpm_solver", "minidiff.ema", "minidiff.checkpoint", "minidiff.autoencoder",
           "minidiff.pipeline", "minidiff.kernels"),
          ("minidiff.evaluation",), ("minidiff.training",), ("minidiff.lab",),
          ("minidiff.cli", "minidiff.__main__")]


def floor(module: str) -> int | None:
    for level, prefixes in enumerate(FLOORS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return level
    return None  # the package itself


def test_no_module_imports_a_higher_floor():
    """pipeline, the samplers and the checkpoint import nothing from training/ or cli/; the
    trainers nothing from cli/ (lazy imports counted too)."""
    graph = module_graph(PACKAGES)
    upward = [f"{a} -> {b}" for a, targets in graph.items() for b in targets
              if floor(a) is not None and floor(b) is not None and floor(b) > floor(a)]
    assert not upward, "imports a higher floor: " + "; ".join(sorted(upward))
    assert all(floor(m) is not None for m in graph if m != "minidiff"), [
        m for m in graph if floor(m) is None and m != "minidiff"]
