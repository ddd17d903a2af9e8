"""The method registry is an explicit table (issue 29): ``inference.methods.METHODS`` holds one line per method,
nothing fills it by being imported, and ``inference/__init__.py`` imports nothing for a side effect."""
import ast
import types
from pathlib import Path

import torch

import inference
from inference.fit import canonical, check_fit
from inference.guides import GUIDES
from inference.methods import METHODS
from zoo import TransformerClassifier
from zoo.options import GUIDE_NAMES

PACKAGE = Path(inference.__file__).parent


def tree(path):
    return ast.parse(path.read_text(), filename=str(path))


def test_every_method_is_a_line_of_the_table_naming_a_function_it_imports():
    module = tree(PACKAGE / "methods.py")
    imported = {alias.asname or alias.name for node in module.body if isinstance(node, ast.ImportFrom)
                for alias in node.names}
    table = next(node.value for node in module.body if isinstance(node, ast.Assign)
                 and [t.id for t in node.targets] == ["METHODS"])
    assert isinstance(table, ast.Dict)
    lines = {key.value: value.id for key, value in zip(table.keys, table.values)}
    assert lines.keys() == METHODS.keys() and set(lines.values()) <= imported
    for name, function in lines.items():
        assert METHODS[name].__name__ == function and METHODS[name].__module__.startswith("inference.")
        assert canonical(name) == name
        check_fit(name)  # the dispatcher takes the name
    assert sorted({*GUIDES, *METHODS}) == sorted(GUIDE_NAMES)  # the names the help lists, and no other
    assert {"blob", "ivon"} <= METHODS.keys() & GUIDES.keys()  # fitted by their method, loaded by their guide


def test_no_module_of_the_package_registers_itself():
    calls = [f"{path.relative_to(PACKAGE)}:{node.lineno}" for path in sorted(PACKAGE.rglob("*.py"))
             for node in ast.walk(tree(path)) if isinstance(node, ast.Call)
             and getattr(node.func, "id", getattr(node.func, "attr", None)) == "register_method"]
    assert calls == []


def test_the_package_imports_only_what_it_exports():
    """Every name ``inference/__init__.py`` imports is in ``__all__``: no import is kept for its side effect."""
    module = tree(PACKAGE / "__init__.py")
    imported = [alias.asname or alias.name for node in module.body if isinstance(node, (ast.Import, ast.ImportFrom))
                for alias in node.names]
    exported = [elt.value for node in module.body if isinstance(node, (ast.Assign, ast.AugAssign))
                for elt in node.value.elts]
    assert imported and sorted(set(imported) - set(exported)) == []


def test_register_method_adds_a_method_of_ones_own_at_run_time():
    seen = {}

    def fit_constant(model, data, *, steps, lr, batch_size, temperature, seed, progress, value=0):
        seen.update(steps=steps, value=value, rows=len(data[0]))
        return types.SimpleNamespace(info={})

    try:
        assert inference.register_method("constant")(fit_constant) is fit_constant
        assert "constant" in inference.method_names()
        torch.manual_seed(0)
        model = TransformerClassifier(2, input_dim=1, d_model=8, depth=1, heads=2, mlp_ratio=1, max_len=8)
        posterior = inference.fit(model, (torch.randn(4, 6, 1), torch.tensor([0, 1, 0, 1])), guide="constant",
                                  steps=3, progress=False, value=7)
    finally:
        METHODS.pop("constant", None)
    assert seen == {"steps": 3, "value": 7, "rows": 4} and "fit_seconds" in posterior.info
    assert "constant" not in inference.method_names()
