"""The package's shape: no import cycle anywhere (type-checking and function-level imports included), no command-line
module importing another one, and the run layer independent of the command lines."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "xinet_rl"


def _imports() -> dict[str, set[str]]:
    """Every module of the package and the package modules it imports (anywhere in its source)."""
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "xinet_rl":
                deps.add(node.module)
                deps.update(f"{node.module}.{a.name}" for a in node.names)  # ``from xinet_rl.cli import train``
            elif isinstance(node, ast.Import):
                deps.update(a.name for a in node.names if a.name.split(".")[0] == "xinet_rl")
        graph[name] = deps
    return {name: {d for d in deps if d in graph and d != name} for name, deps in graph.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    found, state = [], {}

    def visit(module: str, stack: list[str]) -> None:
        if state.get(module) == "open":
            found.append(stack[stack.index(module):] + [module])
            return
        if state.get(module) == "done":
            return
        state[module] = "open"
        for dep in sorted(graph[module]):
            visit(dep, stack + [module])
        state[module] = "done"

    for module in sorted(graph):
        visit(module, [])
    return found


def test_the_checker_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_in_the_package():
    graph = _imports()
    assert "xinet_rl.agents.xisac" in graph and "xinet_rl.update" in graph["xinet_rl.agents.xisac"]
    assert _cycles(graph) == []


def test_no_command_line_imports_another_and_the_run_layer_imports_none():
    graph = _imports()
    cli = {m for m in graph if m.startswith("xinet_rl.cli.")}
    assert cli, "no command-line modules found"
    for module in cli:
        others = {d for d in graph[module] if d.startswith("xinet_rl.cli.") and d != "xinet_rl.cli.common"}
        assert not others, f"{module} imports {others}"
    for module in (m for m in graph if m.startswith("xinet_rl.run")):
        assert not {d for d in graph[module] if d.startswith("xinet_rl.cli")}, module


def test_the_update_and_the_graphs_know_nothing_of_the_agent():
    graph = _imports()
    for module in ("xinet_rl.update", "xinet_rl.cuda_graph", "xinet_rl.policy"):
        assert "xinet_rl.agents.xisac" not in graph[module], module
    assert "xinet_rl.cuda_graph" not in graph["xinet_rl.policy"]
