"""The house's import order (docs/architecture.md): core <- priors <- zoo.models, zoo.data <- inference <- the
study, the commands and the rest of zoo; no module circle anywhere, and no import against that order, including the
imports inside functions (grimp reads them all)."""
import grimp
import pytest

PACKAGES = ("core", "priors", "zoo", "inference", "benchmarks")
BELOW_INFERENCE = ("zoo.models", "zoo.data")  # what inference may build on from zoo
ABOVE_INFERENCE = ("zoo.study", "zoo.commands", "zoo.evaluation", "zoo.pretrain", "zoo.cli", "zoo.isolated",
                   "zoo.runs", "benchmarks")


@pytest.fixture(scope="module")
def graph():
    return grimp.build_graph(*PACKAGES)


def imports(graph, importer, imported):
    """(module, module it imports) for each import from package ``importer`` into package ``imported``."""
    found = []
    for module in graph.find_descendants(importer) | {importer}:
        for target in graph.find_modules_directly_imported_by(module):
            if target == imported or target.startswith(imported + "."):
                found.append((module, target))
    return sorted(found)


def circles(graph):
    """Strongly connected groups of two or more modules (Tarjan's algorithm over the direct imports)."""
    edges = {m: graph.find_modules_directly_imported_by(m) & graph.modules for m in graph.modules}
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = set()
            while not group or v not in group:
                group.add(stack.pop())
            on_stack.difference_update(group)
            if len(group) > 1:
                found.append(sorted(group))

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return found


def test_no_module_imports_itself_through_others(graph):
    assert circles(graph) == []


@pytest.mark.parametrize("importer, imported", [
    *[("core", p) for p in ("priors", "zoo", "inference", "benchmarks")],
    *[("priors", p) for p in ("zoo", "inference", "benchmarks")],
    *[(low, p) for low in BELOW_INFERENCE for p in ("inference", *ABOVE_INFERENCE, "benchmarks")],
    *[("inference", p) for p in ABOVE_INFERENCE],
])
def test_imports_run_one_way(graph, importer, imported):
    assert imports(graph, importer, imported) == []


@pytest.mark.parametrize("leaf", ["zoo.recipes", "zoo.options"])
def test_the_declarations_import_nothing_but_core_and_each_other(graph, leaf):
    """``zoo.recipes`` and ``zoo.options`` are read from every layer, so they may build on ``core`` alone."""
    allowed = ("core", "zoo.recipes", "zoo.options")
    targets = graph.find_modules_directly_imported_by(leaf)
    assert "core.schema" in targets or leaf == "zoo.recipes"  # the graph sees this module's imports
    assert sorted(t for t in targets if t.split(".")[0] in PACKAGES and not t.startswith(allowed)) == []


def test_the_check_sees_a_circle_and_an_import_against_the_order():
    """The checks above can fail: a graph with a circle and a backward import is caught by both."""
    graph = grimp.ImportGraph()
    for module in ("core", "core.a", "zoo", "zoo.models", "zoo.models.b", "inference", "inference.c"):
        graph.add_module(module)
    graph.add_import(importer="zoo.models.b", imported="inference.c")
    graph.add_import(importer="inference.c", imported="zoo.models.b")
    assert circles(graph) == [["inference.c", "zoo.models.b"]]
    assert imports(graph, "zoo.models", "inference") == [("zoo.models.b", "inference.c")]
