"""A folder of one kind (a run, a study, a backbone) is never written by another verb, --overwrite or not."""
import json

import pytest

from zoo import cli
from zoo.folder_kinds import MARKERS, kind_of


def snapshot(root):
    return {p.relative_to(root): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def holding(tmp_path, kind):
    root = tmp_path / kind
    root.mkdir()
    (root / MARKERS[kind][0]).write_text(json.dumps({"kind": kind}))
    (root / "notes.txt").write_text("the user's own file")
    return root


FIT = ["fit", "--guide", "map", "--steps", "1", "--d-model", "8", "--depth", "1", "--heads", "2"]
STUDY = ["study", "--methods", "map", "--quick", "--no-progress"]
PRETRAIN = ["pretrain", "--exclude", "ItalyPowerDemand", "--steps", "1"]


@pytest.mark.parametrize("verb, args, kind", [
    ("fit", FIT, "study"), ("fit", FIT, "backbone"),
    ("study", STUDY, "run"), ("study", STUDY, "backbone"),
    ("pretrain", PRETRAIN, "run"), ("pretrain", PRETRAIN, "study"),
])
@pytest.mark.parametrize("overwrite", [False, True])
def test_a_verb_refuses_a_folder_of_another_kind_in_one_line_and_touches_nothing(tmp_path, capsys, verb, args, kind,
                                                                                 overwrite):
    root = holding(tmp_path, kind)
    before = snapshot(root)
    code = cli.main([*args, "--out", str(root), *(["--overwrite"] if overwrite and verb != "pretrain" else [])])
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0 and len(err) == 1, err
    assert f"holds a {kind}" in err[0] and MARKERS[kind][0] in err[0]
    assert snapshot(root) == before


def test_kind_of_names_the_marker_and_knows_new_folders(tmp_path):
    assert kind_of(tmp_path / "missing") == (None, None) and kind_of(tmp_path) == (None, None)
    assert kind_of(holding(tmp_path, "backbone")) == ("backbone", "backbone.pt")


def test_diagnose_on_a_study_folder_says_it_is_a_study(tmp_path, capsys):
    root = holding(tmp_path, "study")
    assert cli.main(["diagnose", str(root)]) != 0
    err = capsys.readouterr().err
    assert "holds a study (study.json), not a run" in err and "bzoo fit --out" not in err


def test_an_adapter_without_a_backbone_is_refused_before_any_work(tmp_path, capsys):
    assert cli.main(["fit", "--adapter", "lora:rank=0", "--steps", "1", "--out", str(tmp_path / "r")]) != 0
    assert "--adapter lora:rank=0 needs --backbone" in capsys.readouterr().err and not (tmp_path / "r").exists()


def test_a_single_seed_or_a_wrong_type_is_a_one_line_study_error():
    from zoo.study.plan import StudyError
    from zoo.study.run import run_study
    for seeds, words in ((-1, "'-1' is not a seed"), (object(), "must be None or a comma-separated string or a list")):
        with pytest.raises(StudyError, match=words):
            run_study(seeds=seeds)
