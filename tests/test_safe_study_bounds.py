"""Issue 23 for ``lowpower quantize study`` and the measuring commands: nothing of the user's is
overwritten, a result belongs to the checkpoint it was measured on, and numbers have bounds.

- study: rows are keyed by the checkpoint's sha256 (and settings), so a second checkpoint into the
  same ``--out`` gets rows of its own; int8 and QAT checkpoints are refused; ``--out`` never lands on
  the checkpoint, a file the study did not write (without ``--force``), a folder or an unwritable place.
- bounds: ``bench sweep --sizes 10000`` stops in argparse (exit 2, the bound named) before any model
  is built; every measuring command refuses a zero or negative count where one makes no sense.

Every command runs in-process through ``lowpower.cli.main`` (which hands it to ``lowpower.cli.run``),
as the ``lowpower`` program runs it: a refusal is one line and exit 1, a bad number argparse's exit 2.
"""
import csv
import hashlib
import os
import shutil

import pytest
import torch

from lowpower import cli
from lowpower.checkpoint import load_checkpoint, save_checkpoint

pytestmark = pytest.mark.usefixtures("single_torch_thread")

STUDY = "quantize study"
TINY = ["--weight-bits", "4", "--act-bits", "8", "--calib-batches", "1", "--no-progress"]


def lowpower(words, argv):
    """``lowpower WORDS ARGV`` in this process; its exit status."""
    return cli.main(words.split() + [str(arg) for arg in argv])


def sha256_of(path):
    with open(path, "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()


def study(checkpoint, out, *extra):
    """``lowpower quantize study CHECKPOINT --out OUT`` with tiny settings; its exit status."""
    return lowpower(STUDY, [str(checkpoint), "--out", str(out), *TINY, *extra])


def csv_rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def one_line_error(capsys, *words):
    """The command's stderr is one line, and it names ``words``.

    torch's own warnings (reading an int8 checkpoint warns once per process, when pytest does not
    capture warnings) are not the command's: a ``...Warning:`` line and its indented source line are
    left out.
    """
    lines = [line for line in capsys.readouterr().err.strip().splitlines()
             if "Warning: " not in line and not line.startswith(" ")]
    err = "\n".join(lines)
    assert len(lines) == 1 and "error" in err, err
    for word in words:
        assert str(word) in err, (word, err)
    return err


def argparse_error(capsys, *words):
    """argparse's refusal: usage, then one error line naming ``words``."""
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1, err
    for word in words:
        assert str(word) in errors[0], (word, err)
    return errors[0]


@pytest.fixture
def checkpoint(float_checkpoint, tmp_path):
    """A private copy of the session's float checkpoint."""
    return shutil.copy(float_checkpoint, tmp_path / "a.pt")


@pytest.fixture
def other_checkpoint(float_checkpoint, tmp_path):
    """The session's float checkpoint with every weight moved: another network of the same config."""
    state = load_checkpoint(float_checkpoint)
    generator = torch.Generator().manual_seed(0)
    for name, tensor in state["model"].items():
        if tensor.is_floating_point() and "running" not in name:
            tensor.add_(torch.randn(tensor.shape, generator=generator) * (tensor.std() if tensor.numel() > 1 else 0.1))
    path = tmp_path / "b.pt"
    save_checkpoint(state, path)
    return path


# ------------------------------------------------------------------------------------ study: its rows


def test_study_of_a_second_checkpoint_into_the_same_out_measures_its_own_rows(checkpoint, other_checkpoint,
                                                                              tmp_path, capsys):
    out = tmp_path / "study"
    assert study(checkpoint, out) == 0
    first = csv_rows(out / "study.csv")
    capsys.readouterr()

    assert study(other_checkpoint, out) == 0
    assert "already in" not in capsys.readouterr().err  # nothing of the first checkpoint is reused
    rows = csv_rows(out / "study.csv")
    assert rows[:len(first)] == first  # the first checkpoint's rows are kept as they were
    second = rows[len(first):]
    assert [(r["weight_bits"], r["act_bits"]) for r in second] == [("32", "32"), ("4", "8")]
    assert {r["checkpoint_sha256"] for r in first} == {sha256_of(checkpoint)}
    assert {r["checkpoint_sha256"] for r in second} == {sha256_of(other_checkpoint)}
    assert [r["val_mean_dice"] for r in second] != [r["val_mean_dice"] for r in first]
    assert float(second[0]["dice_drop"]) == 0.0  # each checkpoint is compared with its own fp32 row
    assert "b.pt" in (out / "study.md").read_text() and "| range | 4 | 8 | - | 0 |" in (out / "study.md").read_text()

    assert study(checkpoint, out) == 0  # the first again: its rows are found among the others
    assert "2 of 2 rows already in" in capsys.readouterr().err
    assert len(csv_rows(out / "study.csv")) == 4


def test_study_rows_are_keyed_by_the_fine_tune_learning_rate(checkpoint, tmp_path, capsys):
    out = tmp_path / "study"
    assert study(checkpoint, out, "--qat-epochs", "1", "--lr", "0.001") == 0
    capsys.readouterr()
    assert study(checkpoint, out, "--qat-epochs", "1", "--lr", "0.01") == 0
    assert "rows already in" not in capsys.readouterr().err  # fp32 is trained at the study's lr too
    assert [(r["weight_bits"], r["qat_epochs"], r["lr"]) for r in csv_rows(out / "study.csv")] == [
        ("32", "1", "0.001"), ("4", "1", "0.001"), ("32", "1", "0.01"), ("4", "1", "0.01")]
    assert study(checkpoint, out, "--qat-epochs", "1", "--lr", "0.001") == 0
    assert "2 of 2 rows already in" in capsys.readouterr().err


@pytest.mark.parametrize("kind", ["int8", "qat"])
def test_study_refuses_int8_and_qat_checkpoints_in_one_line(kind, int8_checkpoint, qat_checkpoint, tmp_path,
                                                            capsys):
    source = {"int8": int8_checkpoint, "qat": qat_checkpoint}[kind]
    assert study(source, tmp_path / "study") != 0
    one_line_error(capsys, source, kind if kind == "int8" else "QAT", "float checkpoint")
    assert not (tmp_path / "study" / "study.csv").exists()


def test_study_refuses_a_negative_learning_rate(checkpoint, tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        study(checkpoint, tmp_path / "study", "--lr", "-1")
    assert stop.value.code == 2
    argparse_error(capsys, "--lr", "-1")
    assert not (tmp_path / "study").exists()


# ------------------------------------------------------------------------------------ study: its --out


def test_study_out_onto_the_checkpoint_is_refused_and_the_checkpoint_is_unchanged(checkpoint, capsys):
    before = sha256_of(checkpoint)
    assert study(checkpoint, checkpoint) == 1
    one_line_error(capsys, checkpoint, "checkpoint")
    assert sha256_of(checkpoint) == before
    assert study(checkpoint, checkpoint, "--force") == 1  # never, even with --force
    one_line_error(capsys, checkpoint)
    assert sha256_of(checkpoint) == before


def test_study_out_onto_an_existing_file_is_refused(checkpoint, tmp_path, capsys):
    mine = tmp_path / "notes.txt"
    mine.write_text("my notes\n")
    assert study(checkpoint, mine) == 1
    one_line_error(capsys, mine, "not a folder")
    assert mine.read_text() == "my notes\n"


def test_study_replaces_a_study_csv_it_did_not_write_only_with_force(checkpoint, tmp_path, capsys):
    out = tmp_path / "study"
    out.mkdir()
    foreign = out / "study.csv"
    foreign.write_text("name,score\nmine,1\n")
    before = sha256_of(foreign)
    assert study(checkpoint, out) == 1
    one_line_error(capsys, foreign, "--force")
    assert sha256_of(foreign) == before and not (out / "study.md").exists()

    assert study(checkpoint, out, "--force") == 0
    assert [r["weight_bits"] for r in csv_rows(foreign)] == ["32", "4"]


def test_study_refuses_a_study_md_without_its_csv(checkpoint, tmp_path, capsys):
    out = tmp_path / "study"
    out.mkdir()
    (out / "study.md").write_text("my report\n")
    assert study(checkpoint, out) == 1
    one_line_error(capsys, out / "study.md", "--force")
    assert (out / "study.md").read_text() == "my report\n" and not (out / "study.csv").exists()


def test_study_refuses_an_older_study_csv_without_checkpoint_hashes(checkpoint, tmp_path, capsys):
    out = tmp_path / "study"
    out.mkdir()
    old = out / "study.csv"
    old.write_text("weight_bits,act_bits,qat_epochs,val_mean_dice,val_miou,dice_drop,weight_memory_kib,"
                   "weight_memory_ratio,act_memory_kib_per_image,act_memory_ratio,seconds\n"
                   "32,32,0,0.9,0.8,0.0,1.0,1.0,1.0,1.0,1.0\n")
    before = sha256_of(old)
    assert study(checkpoint, out) == 1
    one_line_error(capsys, old, "older")
    assert sha256_of(old) == before


def test_study_refuses_a_folder_where_a_file_goes(checkpoint, tmp_path, capsys):
    out = tmp_path / "study"
    (out / "study.csv").mkdir(parents=True)
    assert study(checkpoint, out) == 1
    one_line_error(capsys, out / "study.csv", "folder")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into any folder")
def test_study_refuses_an_unwritable_out_before_any_work(checkpoint, tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        assert study(checkpoint, locked / "study") == 1
        one_line_error(capsys, locked, "permission denied")
        assert study(checkpoint, locked) == 1
        one_line_error(capsys, locked, "permission denied")
    finally:
        locked.chmod(0o700)


def test_study_refuses_an_out_under_a_file(checkpoint, tmp_path, capsys):
    mine = tmp_path / "notes.txt"
    mine.write_text("my notes\n")
    assert study(checkpoint, mine / "study") == 1
    one_line_error(capsys, mine, "not a folder")
    assert mine.read_text() == "my notes\n"


# ------------------------------------------------------------------------------------ bounded numbers


def test_sweep_of_a_10000_pixel_side_stops_in_argparse_before_any_model(float_checkpoint, monkeypatch, capsys):
    from lowpower.measure import sweep

    def no_model(*args, **kwargs):
        raise AssertionError("a model was built before the size was checked")

    monkeypatch.setattr(sweep, "load_config", no_model)
    monkeypatch.setattr(sweep, "build_model", no_model)
    with pytest.raises(SystemExit) as stop:
        lowpower("bench sweep", [str(float_checkpoint), "--sizes", "256,10000", "--no-progress"])
    assert stop.value.code == 2
    line = argparse_error(capsys, "--sizes", "10000", "over 2048", "GB")
    assert "23.7 GB" in line  # the reason: what the unbounded run cost


# Per measuring command, a number that makes no sense at zero or below. The positional arguments are
# never read: argparse refuses first. (``lowpower demo`` takes no number.)
ZERO_OR_NEGATIVE = [
    ("bench models", ["--models", "cunet"], "--size", "0"),
    ("bench models", ["--models", "cunet"], "--threads", "0"),
    ("bench models", ["--models", "cunet"], "--repeats", "0"),
    ("bench models", ["--models", "cunet"], "--warmup", "-1"),
    ("bench models", ["--models", "cunet"], "--num-classes", "0"),
    ("bench compare", ["a.pyz", "b.pyz"], "--samples", "0"),
    ("bench compare", ["a.pyz", "b.pyz"], "--runs", "0"),
    ("bench compare", ["a.pyz", "b.pyz"], "--timeout", "-5"),
    ("bench sweep", ["best.pt"], "--sizes", "128,0"),
    ("bench sweep", ["best.pt"], "--warmup", "-1"),
    ("bench sweep", ["best.pt"], "--time-images", "0"),
    ("bench sweep", ["best.pt"], "--threads", "0"),
    ("bench pareto", ["a.pyz"], "--samples", "-1"),
    ("bench pareto", ["a.pyz"], "--runs", "0"),
    ("bench pareto", ["a.pyz"], "--timeout", "0"),
    ("bench variants", ["best.pt"], "--calib", "0"),
    ("bench variants", ["best.pt"], "--calls", "0"),
    ("bench variants", ["best.pt"], "--forward-size", "-1"),
    ("bench variants", ["best.pt"], "--package-runs", "0"),
    ("bench pipeline", ["base=best.pt", "--images", "test"], "--calls", "0"),
    ("bench pipeline", ["base=best.pt", "--images", "test"], "--forward-size", "0"),
    ("bench pipeline", ["base=best.pt", "--images", "test"], "--package-runs", "-2"),
    ("bench solution", ["s.pyz", "--images", "IMG"], "--repeats", "0"),
    ("bench solution", ["s.pyz", "--images", "IMG"], "--threads", "-1"),
    ("bench sample", ["solution", "--images", "IMG"], "--runs", "0"),
    ("bench sample", ["solution", "--images", "IMG"], "--seed", "-1"),
    ("quantize study", ["best.pt"], "--calib-batches", "0"),
    ("quantize study", ["best.pt"], "--qat-epochs", "-1"),
    ("quantize study", ["best.pt"], "--lr", "0"),
    ("quantize study", ["best.pt"], "--weight-bits", "4,0"),
]


@pytest.mark.parametrize("words, before, option, value", ZERO_OR_NEGATIVE,
                         ids=["%s %s %s" % (w, o, v) for w, _, o, v in ZERO_OR_NEGATIVE])
def test_a_zero_or_negative_number_is_refused_by_argparse(words, before, option, value, tmp_path, monkeypatch,
                                                          capsys):
    monkeypatch.chdir(tmp_path)  # nothing may be written, and nothing here is an input
    with pytest.raises(SystemExit) as stop:
        lowpower(words, [*before, option, value])
    assert stop.value.code == 2
    argparse_error(capsys, option, "%s is under" % value.split(",")[-1])  # a list names its bad entry
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------ measuring outputs


def tiny_sweep(checkpoint, out, *extra):
    return lowpower("bench sweep", [str(checkpoint), "--sizes", "32", "--warmup", "0", "--time-images", "1",
                                   "--out", str(out), "--no-progress", *extra])


def test_sweep_out_never_lands_on_the_checkpoint_or_a_users_csv(checkpoint, tmp_path, capsys):
    before = sha256_of(checkpoint)
    assert tiny_sweep(checkpoint, checkpoint) == 1
    one_line_error(capsys, checkpoint)
    assert sha256_of(checkpoint) == before

    out = tmp_path / "sweep"
    out.mkdir()
    (out / "sweep.csv").write_text("mine\n1\n")
    assert tiny_sweep(checkpoint, out) == 1
    one_line_error(capsys, out / "sweep.csv", "--force")
    assert (out / "sweep.csv").read_text() == "mine\n1\n" and not (out / "sweep.png").exists()
    assert tiny_sweep(checkpoint, out, "--force") == 0

    assert tiny_sweep(checkpoint, out) == 0  # an earlier sweep's files are its own: replaced on a rerun
    assert {path.name for path in out.iterdir()} == {"sweep.csv", "sweep.png", "sweep_args.json"}


def test_bench_models_refuses_an_existing_report_before_measuring(tmp_path, monkeypatch, capsys):
    from lowpower.measure import bench

    monkeypatch.setattr(bench, "measure_in_subprocess", lambda *args: pytest.fail("measured before the check"))
    mine = tmp_path / "notes.md"
    mine.write_text("my notes\n")
    assert lowpower("bench models", ["--models", "cunet", "--md", str(mine)]) == 1
    one_line_error(capsys, mine, "--force")
    assert lowpower("bench models", ["--models", "cunet", "--md", str(tmp_path / "r"), "--csv",
                                    str(tmp_path / "r")]) == 1
    one_line_error(capsys, "--md and --csv")
    assert mine.read_text() == "my notes\n" and not (tmp_path / "r").exists()


def test_pareto_never_builds_a_package_over_an_input(tmp_path, capsys):
    run = tmp_path / "demo"
    run.mkdir()
    (run / "best.pt").write_bytes(b"a checkpoint")
    mine = tmp_path / "out" / "packages" / "demo-best.pyz"  # where pareto would package demo/best.pt
    mine.parent.mkdir(parents=True)
    mine.write_bytes(b"my package")
    assert lowpower("bench pareto", [str(mine), str(run / "best.pt"), "--out", str(tmp_path / "out")]) == 1
    one_line_error(capsys, mine)
    assert mine.read_bytes() == b"my package"
    assert lowpower("bench pareto", [str(mine), "--out", str(mine)]) == 1
    one_line_error(capsys, mine)
    assert mine.read_bytes() == b"my package"


def test_variants_and_pipeline_refuse_an_out_that_is_an_input(tmp_path, capsys):
    checkpoint = tmp_path / "best.pt"
    checkpoint.write_bytes(b"a checkpoint")
    assert lowpower("bench variants", [str(checkpoint), "--out", str(checkpoint)]) == 1
    one_line_error(capsys, checkpoint)
    assert lowpower("bench pipeline", ["base=%s" % checkpoint, "--images", str(tmp_path), "--out",
                                      str(checkpoint)]) == 1
    one_line_error(capsys, checkpoint)
    assert checkpoint.read_bytes() == b"a checkpoint"


def test_pipeline_replaces_a_pipeline_csv_it_did_not_write_only_with_force(tmp_path, capsys):
    from lowpower.measure import pipeline

    out = tmp_path / "report"
    out.mkdir()
    (out / "pipeline.csv").write_text("mine\n")
    argv = ["pipeline", "base=best.pt", "--images", str(tmp_path), "--out", str(out)]
    assert lowpower("bench pipeline", argv[1:]) == 1
    one_line_error(capsys, out / "pipeline.csv", "--force")
    assert pipeline.parse_args(argv[1:] + ["--force"]).force
    (out / "pipeline.csv").write_text(",".join(pipeline.CSV_FIELDS) + "\n")  # an earlier run's: its own
    assert pipeline.parse_args(argv[1:]).out == str(out)


def test_bench_sample_never_writes_into_the_samples_folder(tmp_path, capsys):
    solution = tmp_path / "solution"
    (solution / "utils").mkdir(parents=True)
    (solution / "main.py").write_text("print('the sample')\n")
    assert lowpower("bench sample", [str(solution), "--images", str(tmp_path), "--out", str(solution / "runs")]) == 1
    one_line_error(capsys, solution)
    nested = tmp_path / "bench" / "sample" / "solution"  # the folder the benchmark replaces with its copy
    shutil.copytree(solution, nested)
    assert lowpower("bench sample", [str(nested), "--images", str(tmp_path), "--out", str(tmp_path / "bench")]) == 1
    one_line_error(capsys, nested, "replaces")
    assert (nested / "main.py").read_text() == "print('the sample')\n"
    assert sorted(path.name for path in solution.iterdir()) == ["main.py", "utils"]
