"""`pretrain` refuses bad input in one line before any training, and takes a single name as a name."""
import pytest

from zoo.models.backbone import BackboneError
from zoo.pretrain import pretrain


@pytest.mark.parametrize("options, words", [({"patch": 0}, "patch must be an integer >= 1"),
                                            ({"steps": -3}, "steps must be an integer >= 1"),
                                            ({"batch_size": 2.5}, "batch_size must be an integer >= 1")])
def test_bad_options_are_refused_before_training(tmp_path, options, words):
    with pytest.raises(BackboneError, match=words):
        pretrain(tmp_path / "b", ["GunPoint"], **options)
    assert not (tmp_path / "b").exists()


def test_a_single_dataset_name_is_one_name_not_its_letters(tmp_path):
    with pytest.raises(BackboneError, match="patch") as caught:
        pretrain(tmp_path / "b", "GunPoint", patch=0)
    assert "'G'" not in str(caught.value)


def test_an_unwritable_output_is_refused_before_training(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("mine")  # a folder cannot be made under a file, root or not
    with pytest.raises(BackboneError, match="cannot be written"):
        pretrain(blocker / "b", ["GunPoint"], steps=1)
    assert blocker.read_text() == "mine"
