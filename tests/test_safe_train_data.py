"""Nothing of the user's is overwritten (issue 23): the training run folder and the data sets.

- train --out onto an earlier run: refused without --resume / --force; --force moves it aside intact.
- synthetic generation writes only into a folder it made itself with the same parameters.
- validation on the training images only when data.val_on_train says so.
- a run that fails before its first checkpoint leaves nothing it made; a broken link is called one.

Every command runs in-process through ``lowpower.cli.run``, as ``lowpower`` and train.py run it.
"""
import hashlib
import os
import shutil

import pytest

from lowpower.cli import run
from lowpower.data.synthetic import COMPLETE_MARKER, PARTIAL_MARKER

pytestmark = pytest.mark.usefixtures("single_torch_thread", "restore_signal_handlers")


def sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def digest(folder):
    """``{relative path: sha256}`` of every file under ``folder``."""
    return {str(path.relative_to(folder)): sha256(path) for path in sorted(folder.rglob("*")) if path.is_file()}


def error_line(capsys):
    """The last stderr line, after checking it is an error and the only one of its kind."""
    lines = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in lines if ": error: " in line]
    assert len(errors) == 1 and errors[0] == lines[-1], lines
    return errors[0]


@pytest.fixture(scope="module")
def tiny_data(synthetic_data):
    return synthetic_data(train=4, val=2, test=0, seed=11)


@pytest.fixture(scope="module")
def finished_run(tiny_data, train_args, tmp_path_factory):
    """A finished one-epoch tiny run; tests copy it before they touch it."""
    out = tmp_path_factory.mktemp("finished") / "run"
    assert run("train", train_args(tiny_data, out, "train.epochs=1")) == 0
    return out


@pytest.fixture
def earlier_run(finished_run, tmp_path):
    """A copy of ``finished_run`` with a file derived from it (as ``quantize ptq`` would leave)."""
    out = tmp_path / "run"
    shutil.copytree(finished_run, out)
    (out / "int8_ptq.pt").write_bytes(b"derived from this run's best.pt")
    return out


# ----------------------------------------------------------------------------- the run folder
def test_train_onto_an_earlier_run_is_refused_without_resume_or_force(earlier_run, tiny_data, train_args, capsys):
    before = digest(earlier_run)
    assert run("train", train_args(tiny_data, earlier_run, "train.epochs=1")) != 0
    error = error_line(capsys)
    assert str(earlier_run) in error and "--resume" in error and "--force" in error
    assert digest(earlier_run) == before, "best.pt, last.pt, config.yaml and history.json are untouched"


def test_force_moves_the_earlier_run_aside_intact_and_trains_anew(earlier_run, tiny_data, train_args, capsys):
    before = digest(earlier_run)
    assert run("train", train_args(tiny_data, earlier_run, "train.epochs=1") + ["--force"]) == 0
    aside = list(earlier_run.parent.glob("run.old-*"))
    assert len(aside) == 1 and digest(aside[0]) == before, "the whole earlier run, with its derived files"
    assert sha256(aside[0] / "best.pt") == before["best.pt"]
    assert (earlier_run / "best.pt").is_file() and not (earlier_run / "int8_ptq.pt").exists()
    assert "moved the earlier run in %s aside to %s" % (earlier_run, aside[0]) in capsys.readouterr().err


def test_resume_auto_on_a_finished_run_still_works(earlier_run, tiny_data, train_args):
    before = sha256(earlier_run / "best.pt")
    assert run("train", train_args(tiny_data, earlier_run, "train.epochs=1") + ["--resume", "auto"]) == 0
    assert "nothing to do" in (earlier_run / "log.txt").read_text()
    assert sha256(earlier_run / "best.pt") == before and not list(earlier_run.parent.glob("run.old-*"))


def test_resume_from_another_run_into_an_earlier_run_is_refused(earlier_run, finished_run, tiny_data, train_args,
                                                                capsys):
    before = digest(earlier_run)
    args = train_args(tiny_data, earlier_run, "train.epochs=1") + ["--resume", str(finished_run / "last.pt")]
    assert run("train", args) != 0
    assert str(earlier_run) in error_line(capsys) and digest(earlier_run) == before


def test_force_refuses_to_move_a_file_the_run_still_reads(earlier_run, tiny_data, train_args, capsys):
    before = digest(earlier_run)
    args = train_args(tiny_data, earlier_run, "train.epochs=1", "model.init_from=%s" % (earlier_run / "best.pt"))
    assert run("train", args + ["--force"]) != 0
    error = error_line(capsys)
    assert "best.pt" in error and "inside --out" in error and digest(earlier_run) == before


def test_train_out_onto_a_file_is_one_line(tiny_data, train_args, tmp_path, capsys):
    target = tmp_path / "notes.txt"
    target.write_text("mine")
    assert run("train", train_args(tiny_data, target, "train.epochs=1")) != 0
    assert str(target) in error_line(capsys) and target.read_text() == "mine"


@pytest.mark.parametrize("before", ["missing", "empty", "holds a file"])
def test_a_run_that_fails_before_its_first_checkpoint_leaves_nothing_it_made(train_args, tmp_path, capsys, before):
    out = tmp_path / "new" / "run"
    if before != "missing":
        out.mkdir(parents=True)
    if before == "holds a file":
        (out / "notes.txt").write_text("mine")
    # data.root does not exist: the data check fails after config.yaml and log.txt were written
    args = train_args(tmp_path / "no_data", out, "train.epochs=1", "data.dataset=lpcvc")
    assert run("train", args) != 0
    assert "%s does not exist" % (tmp_path / "no_data") in capsys.readouterr().err
    if before == "missing":
        assert not (tmp_path / "new").exists(), "the folders the run made are removed"
    else:
        assert sorted(p.name for p in out.iterdir()) == (["notes.txt"] if before == "holds a file" else [])


def test_a_forced_run_that_fails_puts_the_earlier_run_back(earlier_run, train_args, tmp_path):
    before = digest(earlier_run)
    args = train_args(tmp_path / "no_data", earlier_run, "train.epochs=1", "data.dataset=lpcvc")
    assert run("train", args + ["--force"]) != 0
    assert digest(earlier_run) == before and not list(earlier_run.parent.glob("run.old-*"))


# ----------------------------------------------------------------------------- synthetic data
def synthetic(out, train=2, val=1, test=0, seed=0):
    """``lowpower data synthetic`` with small 64-pixel images on one process; returns the exit status."""
    return run("data synthetic", ["--out", str(out), "--train", str(train), "--val", str(val), "--test", str(test),
                                  "--seed", str(seed), "--size", "64", "--workers", "1"])


def test_synthetic_never_overwrites_a_users_image_of_the_same_name(tmp_path, capsys):
    root = tmp_path / "mine"
    (root / "LPCVC_Train/IMG/train").mkdir(parents=True)
    image = root / "LPCVC_Train/IMG/train/train_00000.png"
    image.write_bytes(b"a user's own photo")
    assert synthetic(root) == 1
    error = error_line(capsys)
    assert str(root) in error and "another --out" in error and "delete" in error
    assert image.read_bytes() == b"a user's own photo" and digest(root) == {"LPCVC_Train/IMG/train/train_00000.png":
                                                                              sha256(image)}


@pytest.mark.parametrize("change, named", [(dict(train=3), "train 2 (this asks for 3)"),
                                           (dict(seed=1), "seed 0 (this asks for 1)")])
def test_synthetic_with_other_parameters_is_refused_so_sets_never_mix(tmp_path, capsys, change, named):
    root = tmp_path / "set"
    assert synthetic(root) == 0
    before = digest(root)
    assert synthetic(root, **change) == 1
    error = error_line(capsys)
    assert str(root) in error and named in error and "delete" in error
    assert digest(root) == before


def test_synthetic_with_the_same_parameters_has_nothing_to_do_or_finishes(tmp_path, capsys):
    root = tmp_path / "set"
    assert synthetic(root) == 0
    before = digest(root)
    assert synthetic(root) == 0 and "nothing to do" in capsys.readouterr().err
    assert digest(root) == before
    # killed half way: the marker still says .incomplete and an image is missing
    os.replace(root / COMPLETE_MARKER, root / PARTIAL_MARKER)
    (root / "LPCVC_Val/GT/val/val_00000.png").unlink()
    assert synthetic(root) == 0 and digest(root) == before


def test_synthetic_out_onto_a_file_is_one_line(tmp_path, capsys):
    target = tmp_path / "data.png"
    target.write_bytes(b"mine")
    assert synthetic(target) == 1
    assert str(target) in error_line(capsys) and target.read_bytes() == b"mine"


def test_training_generates_synthetic_data_by_the_same_rule(tiny_data, train_args, tmp_path, capsys):
    root = tmp_path / "mine"
    (root / "LPCVC_Train/IMG/train").mkdir(parents=True)
    image = root / "LPCVC_Train/IMG/train/train_00000.png"
    image.write_bytes(b"a user's own photo")
    out = tmp_path / "run"
    assert run("train", train_args(root, out, "train.epochs=1")) != 0
    assert str(root) in error_line(capsys) and image.read_bytes() == b"a user's own photo"
    assert not out.exists()
    # a half-made set of other parameters is not finished with these
    half = tmp_path / "half"
    half.mkdir()
    (half / PARTIAL_MARKER).write_text("train 9 val 1 test 0 seed 0 size 512\n")
    assert run("train", train_args(half, out, "train.epochs=1", "data.synthetic_train=2")) != 0
    assert "train 9 (this asks for 2)" in error_line(capsys) and os.listdir(half) == [PARTIAL_MARKER]


@pytest.mark.parametrize("argv, words", [
    (["--size", "16"], "under 64"), (["--seed", "-1"], "under 0"), (["--train", "-1"], "under 0"),
    (["--workers", "0"], "under 1")])
def test_synthetic_numbers_are_bounded_with_a_reason(tmp_path, capsys, argv, words):
    with pytest.raises(SystemExit):
        run("data synthetic", ["--out", str(tmp_path / "d")] + argv)
    assert words in capsys.readouterr().err and not (tmp_path / "d").exists()


def test_config_seeds_are_bounded(tiny_data, train_args, tmp_path, capsys):
    assert run("train", train_args(tiny_data, tmp_path / "run", "train.seed=-1")) != 0
    assert "train.seed must be at least 0" in error_line(capsys) and not (tmp_path / "run").exists()


# ----------------------------------------------------------------------------- validation split
@pytest.fixture
def plain_root(tiny_data, tmp_path):
    """A data root of one plain IMG + GT pair (the synthetic training images)."""
    root = tmp_path / "plain"
    shutil.copytree(tiny_data / "LPCVC_Train/IMG/train", root / "IMG")
    shutil.copytree(tiny_data / "LPCVC_Train/GT/train", root / "GT")
    return root


def test_validation_on_the_training_images_is_refused_unless_meant(plain_root, train_args, tmp_path, capsys):
    out = tmp_path / "run"
    assert run("train", train_args(plain_root, out, "train.epochs=1", "data.dataset=lpcvc")) != 0
    error = error_line(capsys)
    assert str(plain_root) in error and "data.val_on_train=true" in error and not out.exists()
    args = train_args(plain_root, out, "train.epochs=1", "data.dataset=lpcvc", "data.val_on_train=true")
    assert run("train", args) == 0 and (out / "best.pt").is_file()
    assert "validating on the training images" in (out / "log.txt").read_text()


# ----------------------------------------------------------------------------- data check
def test_data_check_names_a_broken_link_and_its_target(tiny_data, tmp_path, capsys):
    root = tmp_path / "data"
    shutil.copytree(tiny_data, root)
    image = root / "LPCVC_Train/IMG/train/train_00001.png"
    image.unlink()
    os.symlink(tmp_path / "gone/train_00001.png", image)
    assert run("data check", [str(root), "--dataset", "synthetic", "--no-progress"]) == 1
    text = capsys.readouterr().out
    assert "%s is a broken link to %s" % (image, tmp_path / "gone/train_00001.png") in text
    assert "no image of the same name" not in text and "no mask" not in text


def test_data_check_num_classes_is_bounded(tiny_data, capsys):
    with pytest.raises(SystemExit):
        run("data check", [str(tiny_data), "--num-classes", "0"])
    assert "under 1" in capsys.readouterr().err


def test_training_names_a_broken_link_too(tiny_data, tmp_path):
    from lowpower.data.lpcvc import DataError, LPCVCDataset

    root = tmp_path / "data"
    shutil.copytree(tiny_data, root)
    mask = root / "LPCVC_Val/GT/val/val_00000.png"
    mask.unlink()
    os.symlink("../../../elsewhere/val_00000.png", mask)
    with pytest.raises(DataError, match="val_00000.png is a broken link to ../../../elsewhere/val_00000.png"):
        LPCVCDataset(root, "val")
