"""The project's dependency rules (README, Layout), read from the source with ast: no module is imported.

attacks/ is a leaf: the curious server reads the run-folder contract and the shared model library, never the
simulator's orchestration or config, so the attacker cannot learn anything the run folder does not hold.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("simulator", "attacks", "baselines", "bench")

# What attacks/ may import from the rest of the project: the model library, the run-folder contract (layout, the
# scheme record, the wire ledger), errors and the atomic writer, and the device side of baselines (the DP audit
# replays a device's DP-SGD training).
ATTACKS_MAY_IMPORT = ("attacks", "simulator.core", "simulator.data", "simulator.layout", "simulator.scheme_record",
                      "simulator.ledger", "simulator.errors", "simulator.atomic", "baselines.setup", "baselines.dp_local")
# Modules whose import would tie the attacker to the orchestration, even indirectly.
ORCHESTRATION = ("simulator.simulate", "simulator.config", "simulator.runner", "simulator.cli", "simulator.report",
                 "simulator.study", "simulator.sweep", "simulator.datasets")


def _module_files() -> dict[str, Path]:
    files = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            files[name.removesuffix(".__init__")] = path
    return files


MODULES = _module_files()


def _resolve(dotted: str) -> str | None:
    """The project module an import loads (``from a.b import c`` may name a module or a name in a.b)."""
    while dotted and dotted not in MODULES:
        dotted = dotted.rpartition(".")[0]
    return dotted or None


def _imports(name: str) -> tuple[set[str], set[str]]:
    """(modules imported at module level, modules imported anywhere), project modules only.

    Importing ``a.b.c`` also runs the packages ``a`` and ``a.b``; those are counted, except a module's own
    ancestors (Python has them loaded before the module runs)."""
    tree = ast.parse(MODULES[name].read_text(), filename=str(MODULES[name]))
    top_level = {id(node) for node in tree.body}
    top: set[str] = set()
    anywhere: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            targets = [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        for target in targets:
            module = _resolve(target)
            if module is None:
                continue
            parts = module.split(".")
            loaded = {".".join(parts[:i]) for i in range(1, len(parts) + 1)}
            loaded = {m for m in loaded if m in MODULES and m != name and not name.startswith(m + ".")}
            anywhere |= loaded
            if id(node) in top_level:
                top |= loaded
    return top, anywhere


GRAPH = {name: _imports(name) for name in MODULES}


def _under(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def _allowed_for_attacks(module: str) -> bool:
    """Under an allowed prefix, or a package above one (importing it runs that package's __init__)."""
    return _under(module, ATTACKS_MAY_IMPORT) or any(p.startswith(module + ".") for p in ATTACKS_MAY_IMPORT)


def test_attacks_import_only_the_run_folder_contract_and_the_model():
    bad = sorted(f"{name} -> {dep}" for name, (_, anywhere) in GRAPH.items() if _under(name, ("attacks",))
                 for dep in anywhere if not _allowed_for_attacks(dep))
    assert not bad, "attacks/ may import only " + ", ".join(ATTACKS_MAY_IMPORT) + ":\n" + "\n".join(bad)


def test_importing_attacks_never_loads_the_orchestration():
    for name in (m for m in MODULES if _under(m, ("attacks",))):
        seen, todo = set(), [name]
        while todo:
            module = todo.pop()
            for dep in GRAPH[module][0]:
                if dep not in seen:
                    seen.add(dep)
                    todo.append(dep)
        assert not [m for m in seen if _under(m, ORCHESTRATION)], (name, sorted(m for m in seen if _under(m, ORCHESTRATION)))


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
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
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle_at_module_level():
    assert not _cycles({name: top for name, (top, _) in GRAPH.items()})


def test_the_rule_sees_function_level_imports():
    """A lazy import is still a dependency: the checker must find the CLI's function-level ones."""
    assert "simulator.cli_attack" in GRAPH["simulator.cli"][1] - GRAPH["simulator.cli"][0]


def test_no_import_cycle_even_through_function_level_imports():
    """A lazy import hides a circle, it does not remove it: no module may reach itself through any import, inside
    functions included. Shared pieces sit below the modules that need them (the engines' strategy_state and outbox,
    attacks.result under attacks.suite and the attack families, simulator.config_grid under config and sweep, the
    sweep folder's names in simulator.layout)."""
    assert not _cycles({name: anywhere for name, (_, anywhere) in GRAPH.items()})


def test_the_cycle_check_finds_a_function_level_circle():
    """The checker itself: two modules that import each other, one only inside a function, are a circle."""
    assert _cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]
