"""lowpower.measure.bench pipeline on the session's tiny trained UNet and pruned form (conftest's float_checkpoint
and pruned_checkpoint) and that one's int8 PTQ: one row per step in order, ratios against the first, the report
files, and the one-line errors of bad arguments."""
import csv

import pytest
import torch

from lowpower.checkpoint import load_checkpoint, save_checkpoint
from lowpower.cli import main as lowpower_main
from lowpower.measure import pipeline as bench_pipeline

pytestmark = pytest.mark.usefixtures("single_torch_thread")


@pytest.fixture(scope="module")
def pipeline(trained_data, float_checkpoint, pruned_checkpoint, tmp_path_factory):
    """``(data root, [(label, checkpoint)])``: base (the session's float run), pruned (60% FLOPs), int8 PTQ of
    pruned."""
    int8 = tmp_path_factory.mktemp("pipeline_int8") / "pruned_int8.pt"
    engine = torch.backends.quantized.engine
    assert lowpower_main(["quantize", "ptq", str(pruned_checkpoint), "--calib", "4", "--engine", "x86", "--out",
                          str(int8), "--no-progress"]) == 0
    torch.backends.quantized.engine = engine  # ptq sets it process-wide
    return trained_data, [("base", float_checkpoint), ("pruned x0.6", pruned_checkpoint), ("int8", int8)]


@pytest.fixture(autouse=True)
def restore_engine():
    """measure selects the int8 steps' engine process-wide; give the next test the one it had."""
    engine = torch.backends.quantized.engine
    yield
    torch.backends.quantized.engine = engine


def steps_argv(steps):
    return ["{}={}".format(label, path) for label, path in steps]


@pytest.mark.slow  # times three networks and runs three packages
def test_each_step_is_a_row_in_order_with_ratios_to_the_first_and_a_report(pipeline, tmp_path):
    data, steps = pipeline
    out = tmp_path / "report"
    args = bench_pipeline.parse_args([*steps_argv(steps), "--images", str(data / "test"), "-n", "2",
                             "--package-runs", "1", "--out", str(out)])
    rows = bench_pipeline.measure(args)
    assert [row["label"] for row in rows] == ["base", "pruned x0.6", "int8"]
    assert [row["precision"] for row in rows] == ["fp32", "fp32", "int8"] and rows[2]["engine"] == "x86"
    assert rows[0]["forward_ratio"] == 1.0 and rows[0]["package_ratio"] == 1.0
    assert rows[1]["params"] < rows[0]["params"] and rows[1]["gflops"] < rows[0]["gflops"]
    assert rows[2]["params"] == rows[1]["params"]  # the int8 step counts its float layout's parameters
    assert rows[2]["npz_bytes"] < rows[1]["npz_bytes"] < rows[0]["npz_bytes"]
    for row in rows:
        assert 0.0 <= row["val_mean_dice"] <= 1.0 and 0.0 <= row["test_mean_dice"] <= 1.0
        assert len(row["forward"]) == 2 and row["forward_min_ms"] <= row["forward_median_ms"] <= row["forward_max_ms"]
        assert row["package_ms_per_image"] > 0 and row["network_ms_per_image"] > 0
        split = row["network_ms_per_image"] + row["postprocess_ms_per_image"]
        assert row["postprocess_ms_per_image"] >= 0 and split <= row["package_ms_per_image"] * (1 + 1e-9)
        assert split == pytest.approx(row["package_ms_per_image"], rel=1e-6)
        assert (out / (bench_pipeline.slug(rows.index(row) + 1, row["label"]) + ".pyz")).is_file()

    table = bench_pipeline.write_report(rows, out, "lowpower bench pipeline ...", references=["pruned x0.6"])
    lines = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| step")]
    assert [line.split("|")[1].strip() for line in lines] == ["base", "pruned x0.6", "int8"]
    assert "| int8 | int8 (x86) |" in table
    with open(str(out / "pipeline.csv"), newline="") as handle:
        written = list(csv.DictReader(handle))
    assert [row["label"] for row in written] == ["base", "pruned x0.6", "int8"]
    assert float(written[0]["package_ratio"]) == 1.0
    assert int(written[2]["npz_bytes"]) == rows[2]["npz_bytes"]
    assert (out / "pipeline.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "lowpower bench pipeline ..." in (out / "pipeline.md").read_text()


@pytest.mark.parametrize("step, message", [
    ("base", "'base' is not LABEL=CKPT"),
    ("=x.pt", "'=x.pt' is not LABEL=CKPT"),
    ("base=", "'base=' is not LABEL=CKPT"),
    ("base=missing.pt", "missing.pt: no such checkpoint"),
])
def test_a_malformed_or_missing_step_is_a_one_line_error(step, message, tmp_path, capsys):
    assert lowpower_main(["bench", "pipeline", step, "--images", str(tmp_path), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_a_label_twice_and_a_folder_without_img_and_gt_are_one_line_errors(trained_data, float_checkpoint, tmp_path,
                                                                           capsys):
    data, steps = trained_data, [("base", float_checkpoint)]
    twice = steps_argv(steps[:1]) * 2
    assert lowpower_main(["bench", "pipeline", *twice, "--images", str(data / "test"), "--out", str(tmp_path)]) == 2
    assert "label 'base' is given twice" in capsys.readouterr().err
    assert lowpower_main(["bench", "pipeline", *steps_argv(steps[:1]), "--images", str(data / "test" / "IMG"),
                       "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "needs IMG/ and GT/" in err and len(err.splitlines()) == 1


def test_a_reference_that_names_no_step_is_a_one_line_error(tmp_path, capsys):
    path = tmp_path / "base.pt"
    path.write_bytes(b"")
    argv = ["pipeline", "base={}".format(path), "--reference", "nope", "--images", str(tmp_path), "--out",
            str(tmp_path / "r")]
    assert lowpower_main(["bench"] + argv) == 2
    err = capsys.readouterr().err.strip()
    assert "--reference nope: no step has that label" in err and len(err.splitlines()) == 1


def test_a_path_may_hold_an_equals_sign(tmp_path):
    path = tmp_path / "a=b.pt"
    path.write_bytes(b"")
    assert bench_pipeline.parse_steps(["x={}".format(path)]) == [("x", path)]


def test_int8_steps_of_different_engines_are_a_one_line_error(pipeline, tmp_path, capsys):
    data, steps = pipeline
    state = load_checkpoint(steps[2][1])
    state["quant"] = dict(state["quant"], engine="qnnpack")
    other = tmp_path / "int8_qnnpack.pt"
    save_checkpoint(state, other)
    argv = ["pipeline", *steps_argv(steps), "q={}".format(other), "--images", str(data / "test"),
            "--out", str(tmp_path / "r")]
    assert lowpower_main(["bench"] + argv) == 2
    err = capsys.readouterr().err.strip()
    assert "different quantized engines (int8: x86, q: qnnpack)" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "r").exists()  # refused before any work
