"""No import circle left in chainfleet: no module imports, through any chain of others, a module
that imports it back.

The graph is grimp's (the one import-linter reads): every ``import`` of one chainfleet module by
another, at the top, inside functions and under ``TYPE_CHECKING``. A circle is a strongly
connected component of that graph with more than one module (Tarjan's algorithm, below); the
failure lists each one with the imports that close it, so the next cut is easy to choose.
Importing a module also runs its package's ``__init__``; that implicit import is left out, as
import-linter leaves it out, since every module would otherwise sit in one circle through
``chainfleet/__init__.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import grimp


def strongly_connected(nodes: Iterable[str], edges: Callable[[str], Iterable[str]]) -> list[set[str]]:
    """The strongly connected components of a directed graph (Tarjan, 1972): sets of nodes in
    which each reaches every other. A node on no cycle is a component of its own.
    One depth-first search; each component is popped off the stack when its first node is done.
    """
    index: dict[str, int] = {}  # the order in which the depth-first search reached each node
    low: dict[str, int] = {}  # the lowest index reachable from the node's subtree, back edges included
    stack: list[str] = []  # nodes whose component is not closed yet
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in edges(node):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:  # node is the root of a component: pop it off whole
            component: set[str] = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            components.append(component)

    for node in sorted(nodes):
        if node not in index:
            visit(node)
    return components


def describe(circle: set[str], graph: grimp.ImportGraph) -> str:
    """One circle: its modules, then each import between two of them."""
    imports = [
        f"    {importer} -> {imported}"
        for importer in sorted(circle)
        for imported in sorted(graph.find_modules_directly_imported_by(importer) & circle)
    ]
    return "\n".join([f"{len(circle)} modules: {', '.join(sorted(circle))}", *imports])


def test_the_cycle_finder_finds_a_circle_and_leaves_a_chain_alone() -> None:
    graph = {"a": ["b"], "b": ["c"], "c": ["a", "d"], "d": ["e"], "e": []}
    components = strongly_connected(graph, graph.__getitem__)
    assert sorted(sorted(c) for c in components) == [["a", "b", "c"], ["d"], ["e"]]


def test_no_import_circle_is_left() -> None:
    graph = grimp.build_graph("chainfleet", cache_dir=None)
    components = strongly_connected(graph.modules, graph.find_modules_directly_imported_by)
    circles = sorted((c for c in components if len(c) > 1), key=lambda c: sorted(c))
    report = "\n".join(describe(circle, graph) for circle in circles)
    assert not circles, f"{len(circles)} import circle(s):\n{report}"
