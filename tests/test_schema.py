"""Bad inputs generated from the declared schemas (``zoo/options.py``): every option of every verb and function.

For each declared option the declaration itself yields values out of its range, of the wrong type and
missing, and each cross-option rule yields the inputs that break it. Every one is tried on the command
line (in process) and through the Python function that takes the option: exit code 2 or the library's own
exception, one line naming the option, before the verb or function starts any work, and nothing written.
The verbs' work is replaced by a tripwire, so an input the schema failed to refuse fails its test at once
instead of training anything. Saved files get the same treatment from their declared structure.
"""
import inspect
import json
import math
import subprocess
import sys
from dataclasses import replace

import pytest
import torch

import inference
from core.schema import flag
from core.signed import PosteriorFileError, read, write
from inference import FitError, Posterior
from zoo import TransformerClassifier, cli, options
from zoo.models.backbone import BackboneError
from zoo.models.classifier import ModelError
from zoo.models.lora import parse_adapter
from zoo.study import StudyError, run_study

pytestmark = pytest.mark.usefixtures("one_thread")


class Tripwire(AssertionError):
    """Raised where a verb or function would start its work: the schema let a bad input through."""


def trip(*args, **kwargs):
    raise Tripwire("reached the work: the input was not refused first")


def bad_values(option):
    """(case, Python value, command-line text or None) that ``option``'s declaration refuses."""
    cases = []
    if option.choices is not None:
        cases.append(("not a choice", "no-such-choice", "no-such-choice"))
    if option.kind in ("int", "float") and option.choices is None:
        step = 1 if option.kind == "int" else (0 if "low" not in option.closed else 0.5)
        if option.low is not None:
            cases.append(("below range", option.low - step, str(option.low - step)))
        if option.high is not None:
            high = option.high + (1 if option.kind == "int" or "high" in option.closed else 0)
            cases.append(("above range", high, str(high)))
        cases.append(("text", "abc", "abc"))
        cases.append(("fraction" if option.kind == "int" else "not finite", 1.5 if option.kind == "int" else math.nan,
                      "1.5" if option.kind == "int" else None))
        cases.append(("boolean", True, None))
    if option.kind == "bool":
        cases.append(("text", "yes", None))
    if option.kind in ("str", "path") and option.choices is None:
        cases.append(("number", 3, None))
    if option.kind == "str" and option.choices is None:
        cases.append(("empty text", "", ""))  # not the default in disguise (--prior '')
    if option.kind == "path":
        cases.append(("empty path", "", ""))
    if option.kind == "list":
        cases.append(("object", object(), None))
    if option.kind == "size":
        cases.append(("zero bytes", 0, None))
    if option.required:
        cases.append(("missing", None, None))
    if option.repeat:
        cases = [(case, [value] if value is not None else value, text) for case, value, text in cases]
    return cases


def spelled(schema, name):
    option = schema[name]
    return cli.spelling(schema, name) if option.cli != "" else name


# --- the command line ----------------------------------------------------------------------------------------------

REQUIRED = {"pretrain": {"exclude": ["--exclude", "GunPoint"], "out": ["--out", "b"]}, "diagnose": {"run_dir": ["r"]},
            "bench": {"which": ["speed"]}}


def argv_for(verb, schema, given):
    """``given`` (name -> text, or None for left out) on the command line, with the verb's other required inputs."""
    positional, flags = [], []
    for name, text in {**{n: None for n in REQUIRED.get(verb, {})}, **given}.items():
        option = schema[name]
        if name not in given:
            words = REQUIRED[verb][name]
        elif text is None:
            continue
        elif option.kind == "bool":
            words = [option.spelling]
        else:
            words = [text] if option.cli == "positional" else [option.spelling, text]
        (positional if option.cli == "positional" else flags).extend(words)
    return [verb, *positional, *flags]


def cli_cases():
    for verb, schema in options.VERBS.items():
        for option in schema.options:
            if option.cli == "" or (option.cli == "positional" and option.kind == "list"):
                continue
            for case, _, text in bad_values(option):
                if text is not None or case == "missing":
                    yield pytest.param(verb, {option.name: text}, option.name, id=f"{verb}-{option.name}-{case}")
        for i, rule in enumerate(schema.rules):
            values = rule.violation(schema)
            texts = {n: (v if schema[n].kind == "bool" else str(v)) for n, v in values.items()}
            yield pytest.param(verb, texts, next(iter(values)), id=f"{verb}-rule{i}-{'-'.join(values)}")


@pytest.fixture
def tripwired(monkeypatch, tmp_path):
    """Every verb's work replaced by the tripwire; the current folder an empty one, so a default output lands there."""
    for verb in options.VERBS:
        monkeypatch.setattr(cli.command(verb), "run", trip)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("verb, given, name", list(cli_cases()))
def test_the_command_line_refuses_every_generated_bad_input_in_one_line(verb, given, name, tripwired, capsys):
    schema = options.VERBS[verb]
    try:
        code = cli.main(argv_for(verb, schema, given))
    except SystemExit as e:  # argparse's refusals: a text that is not a number, a required argument left out
        code = e.code
    out, err = capsys.readouterr()
    assert code == 2, err
    assert err.strip() and "\n" not in err.strip() and "Traceback" not in err and not out, err
    assert spelled(schema, name) in err or name in err, err
    assert list(tripwired.iterdir()) == []


def test_every_verb_and_every_declared_option_gets_generated_inputs():
    tried = {(p.values[0], name) for p in cli_cases() for name in p.values[1]}
    declared = {(verb, o.name) for verb, schema in options.VERBS.items() for o in schema.options
                if o.cli != "" and any(text is not None or case == "missing" for case, _, text in bad_values(o))}
    assert declared <= tried and len(declared) >= 40
    functions = {(p.values[0], name) for p in api_cases() for name in p.values[1]}
    assert {function for function, _ in functions} == set(FUNCTIONS) and len(functions) >= 40


# --- the Python API ------------------------------------------------------------------------------------------------

def tiny():
    torch.manual_seed(0)
    return TransformerClassifier(2, input_dim=1, d_model=8, depth=1, heads=2, mlp_ratio=1, max_len=16)


def toy():
    x = torch.randn(12, 6, 1, generator=torch.Generator().manual_seed(0))
    return x, (x.mean((1, 2)) > 0).long()


def call_fit(tmp, **kwargs):
    return inference.fit(tiny(), toy(), **{"guide": "map", "steps": 1, "progress": False, **kwargs})


def call_study(tmp, **kwargs):
    return run_study(**{"out": tmp / "s", "progress": False, **kwargs})


def call_pretrain(tmp, **kwargs):
    from zoo.pretrain import pretrain
    return pretrain(**{"out": tmp / "b", "exclude": ["GunPoint"], "progress": False, **kwargs})


def call_load(tmp, **kwargs):
    return Posterior.load(**{"path": tmp / "p.pt", **kwargs})


def call_adapter(tmp, **kwargs):
    (name, value), = kwargs.items()
    return parse_adapter(f"lora:{name}={value}")


FUNCTIONS = {  # the schema, the call, the library's exception, the names the function takes
    "inference.fit": (options.FIT_OPTIONS, call_fit, FitError),
    "run_study": (options.STUDY, call_study, StudyError),
    "pretrain": (options.PRETRAIN, call_pretrain, BackboneError),
    "Posterior.load": (options.LOAD, call_load, PosteriorFileError),
    "parse_adapter": (options.ADAPTER, call_adapter, ModelError),
}


def takes(function, name):
    if function == "pretrain":
        from zoo.pretrain import DEFAULTS, pretrain
        return name in DEFAULTS or name in inspect.signature(pretrain).parameters
    return True


def api_cases():
    for function, (schema, _, _) in FUNCTIONS.items():
        for option in schema.options:
            if not takes(function, option.name):
                continue
            for case, value, _ in bad_values(option):
                if function == "parse_adapter" and option.kind not in ("int", "float"):
                    continue  # the spec is text: only its numbers can be out of range
                yield pytest.param(function, {option.name: value}, option.name, id=f"{function}-{option.name}-{case}")
        for i, rule in enumerate(schema.rules):
            values = rule.violation(schema)
            yield pytest.param(function, values, next(iter(values)), id=f"{function}-rule{i}-{'-'.join(values)}")


@pytest.fixture
def no_work(monkeypatch, tmp_path):
    """The study's plan, the pretraining corpus and the fit loop replaced by the tripwire."""
    import zoo.pretrain
    import zoo.study.run

    monkeypatch.setattr(zoo.study.run, "make_plan", trip)
    monkeypatch.setattr(zoo.pretrain, "corpus", trip)
    monkeypatch.setattr(sys.modules["inference.svi"], "svi", trip)
    return tmp_path


@pytest.mark.parametrize("function, values, name", list(api_cases()))
def test_the_python_api_refuses_every_generated_bad_input_with_its_own_exception(function, values, name, no_work):
    schema, call, error = FUNCTIONS[function]
    with pytest.raises(error) as caught:
        call(no_work, **values)
    message = str(caught.value)
    assert type(caught.value) is error and "\n" not in message
    assert name in message or flag(name) in message, message
    assert list(no_work.iterdir()) == []


def test_an_adapter_value_that_is_not_a_number_is_named():
    with pytest.raises(ModelError, match="rank must be a number, got 'abc'"):
        parse_adapter("lora:rank=abc")


def test_the_schema_check_can_fail(monkeypatch, tmp_path):
    """A declaration broken on purpose (no lower bound on --jobs) lets ``--jobs 0`` through to the verb."""
    jobs = options.STUDY["jobs"].but(low=None)
    broken = replace(options.STUDY, options=tuple(jobs if o.name == "jobs" else o for o in options.STUDY.options))
    monkeypatch.setitem(options.VERBS, "study", broken)
    monkeypatch.setattr(cli.command("study"), "run", trip)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(Tripwire):
        cli.main(["study", "--jobs", "0"])


# --- what the schemas mirror, and what they cost ----------------------------------------------------------------------

def test_the_names_the_help_lists_are_the_registries():
    from zoo.models import MAX_TOKENS
    from zoo.models.classifier import WHERE
    assert tuple(options.GUIDE_NAMES) == tuple(inference.method_names())
    assert tuple(options.WHERE) == tuple(WHERE) and options.MAX_TOKENS == MAX_TOKENS


@pytest.mark.parametrize("name", ["d_model", "depth", "heads", "mlp_ratio", "dropout", "patch"])
def test_the_model_flags_accept_what_the_model_accepts(name):
    from zoo.models.transformer import SIZES
    option = options.FIT[name]
    for value in (-1, 0, 0.5, 1, 0.999, 1.5, 2, math.nan, "1", True):
        assert option.accepts(value) == SIZES[name].ok(value), (name, value)


def test_the_declarations_are_a_leaf_and_help_imports_no_torch():
    """In a fresh interpreter: ``zoo.options`` brings in no module of the library but ``core.schema`` and
    ``zoo.recipes`` (every layer may import it), and ``bzoo --help`` and every ``bzoo VERB --help`` no torch."""
    code = ("import sys, time, contextlib, io\nimport zoo.options\n"
            "ours = [m for m in sys.modules if m.split('.')[0] in ('core', 'zoo', 'inference', 'priors')]\n"
            "print(','.join(sorted(ours)))\n"
            "from zoo import cli\nstart = time.perf_counter()\n"
            "for verb in ['', *cli.COMMANDS]:\n"
            "    with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
            "        cli.main([verb, '--help'] if verb else ['--help'])\n"
            "print('torch' in sys.modules, time.perf_counter() - start)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    modules, help_run = done.stdout.splitlines()
    assert modules.split(",") == ["core", "core.schema", "zoo", "zoo.options", "zoo.recipes"]
    torch_loaded, seconds = help_run.split()
    assert torch_loaded == "False" and float(seconds) < 2.0, done.stdout


# --- saved files: structure, not only checksum --------------------------------------------------------------------

def mistyped(types):
    """A value none of ``types`` accepts."""
    types = types if isinstance(types, tuple) else (types,)
    return next(v for v in ([1, 2], "text", 3, None, {"a": 1}) if not isinstance(v, types))


def structure_cases(fields):
    for name, types in fields.types.items():
        if types is object:
            continue
        yield f"{name}-missing", lambda obj, n=name: obj.pop(n), name
        yield f"{name}-mistyped", lambda obj, n=name, t=types: obj.__setitem__(n, mistyped(t)), name
    for name in fields.entries:
        yield f"{name}-entry", lambda obj, n=name: obj.__setitem__(n, {"w": "not a tensor"}), name


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A posterior and a checkpoint of a 2-step MAP fit."""
    root = tmp_path_factory.mktemp("saved")
    posterior = inference.fit(tiny(), toy(), guide="map", steps=2, progress=False, checkpoint=root / "c.pt",
                              checkpoint_every=1)
    posterior.save(root / "p.pt")
    return root


def rewritten(source, target, change):
    """``source`` changed by ``change`` and signed again, so only its structure is wrong."""
    kind = "posterior" if source.name == "p.pt" else "checkpoint"
    obj = read(source, kind)
    change(obj)
    write(obj, target)
    return target


POSTERIOR_CASES = list(structure_cases(__import__("inference.persist", fromlist=["POSTERIOR"]).POSTERIOR))
CHECKPOINT_CASES = list(structure_cases(__import__("inference.persist", fromlist=["CHECKPOINT"]).CHECKPOINT))


@pytest.mark.parametrize("change, field", [c[1:] for c in POSTERIOR_CASES], ids=[c[0] for c in POSTERIOR_CASES])
def test_a_signed_posterior_with_a_missing_or_mistyped_field_is_refused_in_one_line(saved, tmp_path, change, field):
    path = rewritten(saved / "p.pt", tmp_path / "p.pt", change)
    with pytest.raises(PosteriorFileError) as caught:
        Posterior.load(path)
    assert f"'{field}'" in str(caught.value) and "\n" not in str(caught.value)


def test_a_posterior_with_neither_state_nor_draws_is_refused(saved, tmp_path):
    path = rewritten(saved / "p.pt", tmp_path / "p.pt", lambda obj: obj.__setitem__("guide_state", None))
    with pytest.raises(PosteriorFileError, match="neither"):
        Posterior.load(path)


@pytest.mark.parametrize("change, field", [c[1:] for c in CHECKPOINT_CASES], ids=[c[0] for c in CHECKPOINT_CASES])
def test_a_signed_checkpoint_with_a_missing_or_mistyped_field_is_refused_in_one_line(saved, tmp_path, change, field):
    path = rewritten(saved / "c.pt", tmp_path / "c.pt", change)
    with pytest.raises(PosteriorFileError) as caught:
        inference.fit(tiny(), toy(), guide="map", steps=2, progress=False, checkpoint=path, checkpoint_every=1)
    assert f"'{field}'" in str(caught.value) and "\n" not in str(caught.value)


def test_a_signed_study_cell_with_a_mistyped_field_is_recomputed_with_a_warning(tmp_path):
    from zoo.study.folder import OK_CELL, StudyFolder, checksum

    folder = StudyFolder(tmp_path, {}, "f", overwrite=False, resuming=True)
    record = {"dataset": "d", "seed": 0, "method": "map", "key": "k", "status": "ok", "accuracy": 0.5, "nll": 0.7,
              "ece": 0.1, "brier": 0.3, "fit_seconds": 1.0, "seconds": 1.0, "cpu_seconds": 1.0}
    folder.write_cell({"record": record, "arrays": {"probs": torch.ones(2).numpy()}})
    assert folder.read_cell("d", 0, "map", "k")["accuracy"] == 0.5
    path = folder.cell_path("d", 0, "map")
    arrays = folder.cell_path("d", 0, "map", ".npz").read_bytes()
    for name, types in OK_CELL.types.items():
        if name == "checksum":
            continue
        broken = {**record, name: mistyped(types)}
        path.write_text(json.dumps({**broken, "checksum": checksum(broken, arrays)}))
        with pytest.warns(UserWarning, match=f"'{name}'"):
            assert folder.read_cell("d", 0, "map", broken["key"]) is None
