"""Issue 23: nothing of the user's is overwritten. Every command that writes (package / compress.sh,
quantize ptq, quantize qat-convert, prune, export) refuses an output that is one of its inputs (even
with --force), an existing file without --force, a folder, or a folder it cannot write, each in one
line and before any work; it writes through a temporary file that it renames into place, cleans up
its own stale temporaries, and gives its files the mode the umask gives (0644 under 022).

The commands run in-process through ``lowpower.cli.main`` (so a refusal goes through the dispatcher
as on the command line); the session's checkpoints (conftest) are copied into tmp_path first.
"""
import hashlib
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
import torch

from lowpower import cli
from lowpower.checkpoint import load_checkpoint, save_checkpoint

REPO_ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.usefixtures("single_torch_thread")


@pytest.fixture(autouse=True)
def restore_engine():
    """ptq and qat-convert set the process-wide quantized engine; give the next test the one it had."""
    engine = torch.backends.quantized.engine
    yield
    torch.backends.quantized.engine = engine


# ----------------------------------------------------------------------------- the commands

# name: (fixture of the input checkpoint, command words, output option, options that keep the run short)
COMMANDS = {
    "package": ("float_checkpoint", "package", "-o", ["--no-verify", "--precision", "fp32"]),
    "ptq": ("float_checkpoint", "quantize ptq", "--out", ["--calib", "2", "--engine", "x86", "--no-progress"]),
    "qat-convert": ("qat_checkpoint", "quantize qat-convert", "-o", []),
    "prune": ("float_checkpoint", "prune", "--out",
              ["--target-flops", "0.6", "--round-to", "0", "--repeats", "1", "--no-progress"]),
    "export": ("float_checkpoint", "export", "--onnx", []),
}
# The commands that write a checkpoint (save_checkpoint): their temporaries and mode are checked.
CHECKPOINT_WRITERS = ["ptq", "qat-convert", "prune"]


def sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def lowpower(words, argv):
    """``lowpower WORDS ARGV`` in-process; returns the exit status."""
    return cli.main(words.split() + [str(arg) for arg in argv])


def argv_for(name, checkpoint, output, tmp_path, *extra):
    """The command line of ``name`` reading ``checkpoint`` and writing ``output``."""
    _, _, option, options = COMMANDS[name]
    argv = [checkpoint, option, output, *options, *extra]
    if name == "package":  # never the repository's build/ folder
        argv += ["--build-dir", tmp_path / "build"]
    return argv


@pytest.fixture(params=sorted(COMMANDS))
def command(request, tmp_path):
    """``(name, words, checkpoint)``: one writing command and a copy of its input checkpoint in tmp_path."""
    name = request.param
    fixture, words, _, _ = COMMANDS[name]
    source = request.getfixturevalue(fixture)
    folder = tmp_path / "run"
    folder.mkdir()
    checkpoint = folder / "best.pt"
    shutil.copy(source, checkpoint)
    return name, words, checkpoint


def one_line_error(capsys):
    """The command's stderr, which must be exactly one line saying ``error``."""
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "error" in err, err
    return err


def temporaries(path):
    path = Path(path)
    return sorted(path.parent.glob(path.name + ".*.tmp"))


# ----------------------------------------------------------------------------- refusals

@pytest.mark.parametrize("force", [[], ["--force"]], ids=["plain", "force"])
def test_output_that_is_the_input_is_refused_even_with_force(command, tmp_path, capsys, force):
    name, words, checkpoint = command
    before = sha256(checkpoint)
    assert lowpower(words, argv_for(name, checkpoint, checkpoint, tmp_path, *force)) != 0
    err = one_line_error(capsys)
    assert "input" in err and str(checkpoint) in err
    assert sha256(checkpoint) == before
    assert not temporaries(checkpoint)


def test_output_that_is_the_input_by_another_name_is_refused(command, tmp_path, capsys):
    name, words, checkpoint = command
    before = sha256(checkpoint)
    other_name = checkpoint.parent / ".." / checkpoint.parent.name / checkpoint.name
    assert lowpower(words, argv_for(name, checkpoint, other_name, tmp_path)) != 0
    assert "input" in one_line_error(capsys)
    assert sha256(checkpoint) == before


def test_existing_output_is_refused_without_force(command, tmp_path, capsys):
    name, words, checkpoint = command
    existing = tmp_path / "notes.txt"
    existing.write_text("the user's notes\n")
    assert lowpower(words, argv_for(name, checkpoint, existing, tmp_path)) != 0
    err = one_line_error(capsys)
    assert str(existing) in err and "--force" in err
    assert existing.read_text() == "the user's notes\n"
    assert not (tmp_path / "build").exists()  # refused before any work


def test_existing_output_is_replaced_with_force(command, tmp_path, capsys):
    name, words, checkpoint = command
    existing = tmp_path / "out.bin"
    existing.write_text("an old output\n")
    before = sha256(checkpoint)
    assert lowpower(words, argv_for(name, checkpoint, existing, tmp_path, "--force")) == 0, capsys.readouterr().err
    assert existing.read_bytes() != b"an old output\n" and existing.stat().st_size > 1000
    assert sha256(checkpoint) == before and not temporaries(existing)


def test_output_onto_a_folder_is_one_line(command, tmp_path, capsys):
    name, words, checkpoint = command
    folder = tmp_path / "a_folder"
    folder.mkdir()
    assert lowpower(words, argv_for(name, checkpoint, folder, tmp_path)) != 0
    assert "is a folder" in one_line_error(capsys)
    assert not any(folder.iterdir())


def test_output_below_a_file_is_one_line(command, tmp_path, capsys):
    name, words, checkpoint = command
    (tmp_path / "plain").write_text("a file, not a folder\n")
    assert lowpower(words, argv_for(name, checkpoint, tmp_path / "plain" / "out.bin", tmp_path)) != 0
    assert "not a folder" in one_line_error(capsys)
    assert (tmp_path / "plain").read_text() == "a file, not a folder\n"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only folder anyway")
def test_output_in_an_unwritable_folder_is_one_line(command, tmp_path, capsys):
    name, words, checkpoint = command
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        assert lowpower(words, argv_for(name, checkpoint, locked / "out.bin", tmp_path)) != 0
        assert "permission denied" in one_line_error(capsys)
        assert not any(locked.iterdir())
    finally:
        locked.chmod(0o700)


# ----------------------------------------------------------------------------- per command

def test_ptq_of_a_qat_checkpoint_names_qat_convert(qat_checkpoint, tmp_path, capsys):
    shutil.copy(qat_checkpoint, tmp_path / "best.pt")
    out = tmp_path / "int8.pt"
    assert lowpower("quantize ptq", [tmp_path / "best.pt", "--out", out, "--no-progress"]) != 0
    err = one_line_error(capsys)
    assert "lowpower quantize qat-convert" in err and "QAT" in err
    assert not out.exists()


@pytest.mark.parametrize("name", CHECKPOINT_WRITERS)
def test_checkpoint_writers_remove_stale_temporaries_and_write_0644(name, request, tmp_path, capsys):
    fixture, words, _, _ = COMMANDS[name]
    checkpoint = tmp_path / "best.pt"
    shutil.copy(request.getfixturevalue(fixture), checkpoint)
    out = tmp_path / "written.pt"
    stale = [out.with_name(out.name + ".k1l2l3.tmp"), out.with_name(out.name + ".zz9.tmp")]  # a killed run's
    for path in stale:
        path.write_bytes(b"half a checkpoint")
    mask = os.umask(0o022)
    try:
        assert lowpower(words, argv_for(name, checkpoint, out, tmp_path)) == 0, capsys.readouterr().err
    finally:
        os.umask(mask)
    assert not temporaries(out)
    assert stat.S_IMODE(out.stat().st_mode) == 0o644
    assert load_checkpoint(out)["arch"] == "unet"


def test_save_checkpoint_writes_the_umasks_mode(tmp_path):
    mask = os.umask(0o022)
    try:
        save_checkpoint({"arch": "unet", "arch_kwargs": {}, "model": {}}, tmp_path / "c.pt")
    finally:
        os.umask(mask)
    assert stat.S_IMODE((tmp_path / "c.pt").stat().st_mode) == 0o644


def test_export_that_fails_its_check_leaves_no_onnx(float_checkpoint, tmp_path, monkeypatch, capsys):
    import lowpower.ship.export as export

    monkeypatch.setattr(export, "compare_with_onnxruntime",
                        lambda *args, **kwargs: {"agreement": 0.5, "max_diff": 3.0, "pixels": 4})
    out = tmp_path / "m.onnx"
    assert lowpower("export", [float_checkpoint, "--onnx", out]) == 1
    captured = capsys.readouterr()
    assert "50.0000%" in captured.out  # the table still says why
    assert "not written" in captured.err and len(captured.err.strip().splitlines()) == 1
    assert not out.exists() and not temporaries(out)


def test_export_that_crashes_leaves_no_onnx(float_checkpoint, tmp_path, monkeypatch, capsys):
    import lowpower.ship.export as export

    def broken_checker(path):
        assert Path(path).stat().st_size > 0  # the exporter has written its file by now
        raise RuntimeError("the checker refused it")

    monkeypatch.setattr(export, "check_onnx", broken_checker)
    out = tmp_path / "m.onnx"
    assert lowpower("export", [float_checkpoint, "--onnx", out]) != 0
    assert "the checker refused it" in one_line_error(capsys)
    assert not out.exists() and not temporaries(out)


@pytest.mark.parametrize("size", ["0", "-64", "16", "100000"])
def test_export_input_size_out_of_range_is_refused(float_checkpoint, tmp_path, capsys, size):
    with pytest.raises(SystemExit) as exit_:
        lowpower("export", [float_checkpoint, "--onnx", tmp_path / "m.onnx", "--input-size", size])
    assert exit_.value.code == 2
    assert "argument --input-size: %s is" % size in capsys.readouterr().err
    assert not (tmp_path / "m.onnx").exists()


@pytest.mark.parametrize("words, argv", [
    ("package", ["--input-size", "0"]), ("package", ["--batch-size", "0"]), ("package", ["--min-class-area", "1"]),
    ("quantize ptq", ["--calib", "0"]), ("prune", ["--steps", "0"]), ("prune", ["--round-to", "-8"]),
    ("prune", ["--repeats", "0"]), ("prune", ["--finetune-steps", "-1"]), ("export", ["--opset", "10"]),
])
def test_numeric_options_are_bounded_with_a_reason(words, argv, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        lowpower(words, [tmp_path / "best.pt", *argv])
    assert exit_.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert "argument %s: %s is" % (argv[0], argv[1]) in last and ": " in last.split(" is ", 1)[1]


def test_package_without_a_checkpoint_replaces_the_default_output_and_says_so(float_checkpoint, tmp_path,
                                                                              monkeypatch, capsys):
    import lowpower.ship.package as package

    default = tmp_path / "evaluation" / "solution.pyz"  # never the repository's evaluation/solution.pyz
    default.parent.mkdir()
    default.write_bytes(b"an older package")
    monkeypatch.setattr(package, "NEWEST_OUTPUT", default)
    (tmp_path / "runs" / "r").mkdir(parents=True)
    shutil.copy(float_checkpoint, tmp_path / "runs" / "r" / "best.pt")
    assert lowpower("package", ["--runs", tmp_path / "runs", "--no-verify", "--build-dir", tmp_path / "b"]) == 0
    err = capsys.readouterr().err
    assert "replacing %s" % default in err
    assert default.read_bytes() != b"an older package" and not temporaries(default)


def test_package_without_a_checkpoint_but_with_an_existing_o_needs_force(float_checkpoint, tmp_path, capsys):
    (tmp_path / "runs" / "r").mkdir(parents=True)
    shutil.copy(float_checkpoint, tmp_path / "runs" / "r" / "best.pt")
    existing = tmp_path / "mine.pyz"
    existing.write_bytes(b"keep")
    argv = ["--runs", tmp_path / "runs", "-o", existing, "--no-verify", "--build-dir", tmp_path / "b"]
    assert lowpower("package", argv) != 0
    assert "--force" in capsys.readouterr().err.strip().splitlines()[-1]
    assert existing.read_bytes() == b"keep"


def test_compress_sh_refuses_an_existing_output(float_checkpoint, tmp_path):
    shutil.copy(float_checkpoint, tmp_path / "best.pt")
    existing = tmp_path / "notes.txt"
    existing.write_text("not a package\n")
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    result = subprocess.run([str(REPO_ROOT / "compress.sh"), "best.pt", "-o", "notes.txt", "--no-verify",
                             "--build-dir", str(tmp_path / "b")],
                            cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    err = result.stderr.strip()
    assert len(err.splitlines()) == 1 and "notes.txt exists; pass --force" in err, err
    assert existing.read_text() == "not a package\n" and not (tmp_path / "b").exists()
