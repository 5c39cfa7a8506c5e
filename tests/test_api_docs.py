"""help(sanet) is a one-screen map that stays true, and the public library calls say what they return.

Static checks only (imports and docstrings; no model runs): a module added to sanet/ without a line in the map, a
name in the map or its example that no longer exists, or a console command renamed in pyproject.toml fails here.
"""
import ast
import builtins
import importlib
import inspect
import re
from pathlib import Path

import pytest

import sanet

PACKAGE = Path(sanet.__file__).parent
MODULES = sorted(path.stem for path in PACKAGE.glob("*.py") if path.stem != "__init__")
MAP_LINE = re.compile(r"^  ([a-z0-9_]+(?:, [a-z0-9_]+)*) {2,}(\S.*)$")  # "  data, synth, metrics    what they do"
# Names the map mentions as code: called "name(", snake_case "a_b", or CamelCase "TrtRunner" (not "TensorRT", "SANet").
CODE_NAME = re.compile(r"\b([A-Za-z_]\w*)(?=\()|\b([a-z0-9]+(?:_[a-z0-9]+)+)\b|\b([A-Z][a-z0-9]+(?:[A-Z][a-z0-9]+)+)\b")


def map_lines():
    """[(modules, description)] from the module map of sanet's docstring."""
    lines = [MAP_LINE.match(line) for line in sanet.__doc__.splitlines()]
    return [(match.group(1).split(", "), match.group(2)) for match in lines if match]


def example_source():
    """The indented library-use example at the end of sanet's docstring, dedented."""
    lines = sanet.__doc__.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("Library use"))
    return "\n".join(line[4:] for line in lines[start + 1:] if line.startswith("    "))


def test_help_fits_one_screen():
    lines = sanet.__doc__.strip().splitlines()
    assert len(lines) <= 45, "sanet's docstring has {} lines: help(sanet) must fit one screen".format(len(lines))
    wide = [line for line in lines if len(line) > 116]  # help() indents by 4: stays within 120 columns
    assert not wide, wide


def test_map_names_every_module_once():
    listed = [module for modules, _ in map_lines() for module in modules]
    assert sorted(listed) == MODULES, "modules missing from the map: {}; listed but absent: {}; twice: {}".format(
        sorted(set(MODULES) - set(listed)), sorted(set(listed) - set(MODULES)),
        sorted({m for m in listed if listed.count(m) > 1}))


def test_map_names_exist():
    missing = []
    for modules, description in map_lines():
        loaded = [importlib.import_module("sanet." + module) for module in modules]
        for groups in CODE_NAME.findall(description):
            name = next(group for group in groups if group)
            if name not in modules and not any(hasattr(module, name) for module in loaded):
                missing.append("{}: {}".format(", ".join(modules), name))
    assert not missing, "the map names what its modules lack: {}".format(missing)


def test_console_commands_match_pyproject():
    pyproject = (PACKAGE.parent / "pyproject.toml").read_text()
    section = pyproject.split("[project.scripts]", 1)[1].split("\n[", 1)[0]
    declared = set(re.findall(r"^(sanet-[a-z0-9-]+)\s*=", section, re.M))
    documented = set(re.findall(r"\bsanet-[a-z0-9]+\b", sanet.__doc__))
    assert declared and documented == declared


def test_example_uses_only_existing_names():
    tree = ast.parse(example_source())  # parsed, never run: it would export an ONNX and read CamVid
    imported, assigned, used = {}, set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            module = importlib.import_module(node.module)
            for alias in node.names:
                assert hasattr(module, alias.name), "{} has no {}".format(node.module, alias.name)
                imported[alias.asname or alias.name] = getattr(module, alias.name)
        elif isinstance(node, ast.Name):
            (assigned if isinstance(node.ctx, ast.Store) else used).add(node.id)
    assert {"load_model", "TorchRunner", "evaluate", "compare"} <= set(imported)
    unknown = used - set(imported) - assigned - set(dir(builtins))
    assert not unknown, "the example uses undefined names: {}".format(sorted(unknown))
    # Methods it calls on the classes it imports, e.g. Pipeline(model).onnx(...).
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Call) and isinstance(node.value.func, ast.Name):
            owner = imported.get(node.value.func.id)
            if inspect.isclass(owner):
                assert hasattr(owner, node.attr), "{} has no {}".format(owner.__name__, node.attr)


def public_callables():
    from sanet import checkpoints, engines, evaluate, parity, pipeline, runners

    return {
        "checkpoints.load_model": checkpoints.load_model,
        "checkpoints.shipped_checkpoint": checkpoints.shipped_checkpoint,
        "runners.Runner": runners.Runner,
        "runners.Runner.predict": runners.Runner.predict,
        "runners.Runner.infer": runners.Runner.infer,
        "runners.TorchRunner": runners.TorchRunner,
        "runners.OrtRunner": runners.OrtRunner,
        "runners.OpenVinoRunner": runners.OpenVinoRunner,
        "engines.TrtRunner": engines.TrtRunner,
        "pipeline.Pipeline": pipeline.Pipeline,
        "pipeline.Pipeline.onnx": pipeline.Pipeline.onnx,
        "pipeline.Pipeline.qdq": pipeline.Pipeline.qdq,
        "pipeline.Pipeline.engine": pipeline.Pipeline.engine,
        "pipeline.Pipeline.route": pipeline.Pipeline.route,
        "parity.compare": parity.compare,
        "evaluate.evaluate": evaluate.evaluate,
    }


@pytest.mark.parametrize("name", sorted(public_callables()))
def test_public_callable_says_what_it_returns(name):
    doc = inspect.getdoc(public_callables()[name]) or ""
    assert re.search(r"Return|returns|->", doc), "{}'s docstring does not say what it returns".format(name)


def test_budget_and_result_fields_are_documented():
    """compare's docstring names every ParityResult field, Budget's every limit (a renamed field fails here)."""
    import dataclasses

    from sanet.parity import Budget, ParityResult, compare

    for doc, fields in ((inspect.getdoc(compare), [f.name for f in dataclasses.fields(ParityResult) if f.name != "budget"]),
                        (inspect.getdoc(Budget), [f.name for f in dataclasses.fields(Budget)])):
        assert not [name for name in fields if name not in doc]


@pytest.mark.parametrize("name", ["checkpoints.load_model", "runners.TorchRunner", "runners.OrtRunner",
                                  "runners.OpenVinoRunner", "engines.TrtRunner", "pipeline.Pipeline", "parity.compare",
                                  "evaluate.evaluate"])
def test_documented_arguments_are_the_real_ones(name):
    """Every parameter of the signature is described in its docstring's Args (a renamed argument fails here)."""
    target = public_callables()[name]
    doc = inspect.getdoc(target)
    params = [p for p in inspect.signature(target).parameters if p != "self"]
    undocumented = [p for p in params if not re.search(r"\b{}\b".format(p), doc)]
    assert "Args:" in doc and not undocumented, "{}: undocumented {}".format(name, undocumented)


def test_evaluate_documents_every_key_it_returns():
    """The keys of evaluate's dict (the confusion-matrix summary plus what evaluate adds) all appear in its docstring."""
    from sanet.evaluate import evaluate
    from sanet.metrics import ConfusionMatrix

    keys = set(ConfusionMatrix(2).summary(["a", "b"]))
    for node in ast.walk(ast.parse(inspect.getsource(evaluate).lstrip())):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "update" and node.args \
                and isinstance(node.args[0], ast.Dict):
            keys.update(key.value for key in node.args[0].keys)
    doc = inspect.getdoc(evaluate)
    assert {"miou", "images", "runner"} <= keys and not [key for key in keys if "``{}``".format(key) not in doc]
