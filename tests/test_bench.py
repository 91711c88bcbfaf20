"""lowpower.measure.bench: one small run over two tiny models, and the pieces it prints."""
import csv

import pytest
import torch

from lowpower.cli import main as lowpower_main
from lowpower.measure import bench, flops

TINY_RUN = ["bench", "models", "--models", "cunet,lraspp_mbv3_small", "--size", "64", "--threads", "1",
            "--repeats", "2", "--warmup", "1"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bench")
    md, table_csv = folder / "models.md", folder / "models.csv"
    status = lowpower_main(TINY_RUN + ["--md", str(md), "--csv", str(table_csv)])
    with open(table_csv, newline="") as handle:
        rows = list(csv.DictReader(handle))
    return status, md.read_text(), rows


@pytest.mark.slow  # bench models measures each model in a fresh interpreter (the module's tiny_run)
def test_csv_has_one_row_per_model_with_every_column(tiny_run):
    status, _, rows = tiny_run
    assert status == 0
    assert [row["model"] for row in rows] == ["cunet", "lraspp_mbv3_small"]
    assert list(rows[0]) == bench.COLUMNS + ["error"]
    for row in rows:
        assert row["error"] == ""
        assert int(row["params"]) > 0 and float(row["gflops"]) > 0
        assert float(row["weights_fp16_mb"]) < float(row["weights_fp32_mb"])
        assert 0 < float(row["latency_min_ms"]) <= float(row["latency_median_ms"]) <= float(row["latency_max_ms"])
        assert float(row["peak_memory_mb"]) >= 0 and float(row["peak_rss_mb"]) > 0
        assert float(row["load_1min"]) >= 0


@pytest.mark.slow  # bench models measures each model in a fresh interpreter (the module's tiny_run)
def test_csv_numbers_match_the_models(tiny_run):
    import networks

    _, _, rows = tiny_run
    for row in rows:
        model = networks.create_model(row["model"])
        assert int(row["params"]) == sum(p.numel() for p in model.parameters())
        fp32, fp16 = flops.weights_megabytes(model)
        assert float(row["weights_fp32_mb"]) == pytest.approx(fp32)


@pytest.mark.slow  # bench models measures each model in a fresh interpreter (the module's tiny_run)
def test_markdown_report_has_command_table_and_load(tiny_run):
    _, text, _ = tiny_run
    assert "`lowpower " + " ".join(TINY_RUN) + " --md " in text
    assert "load average" in text
    header = "| " + " | ".join(title for _, title, _ in bench.TABLE) + " |"
    lines = text.splitlines()
    start = lines.index(header)
    assert lines[start + 2].startswith("| cunet | 0.06 |")
    assert lines[start + 3].startswith("| lraspp_mbv3_small | 1.08 |")


def test_unknown_model_is_rejected_before_measuring():
    with pytest.raises(ValueError, match="Valid names"):
        lowpower_main(["bench", "models", "--models", "unet,no_such_net", "--size", "64"])


def test_flop_count_of_a_single_convolution():
    conv = torch.nn.Conv2d(3, 8, kernel_size=3, padding=1, bias=False)
    # 8 output channels x 16 x 16 pixels x 27 multiply-adds x 2 FLOPs
    assert flops.count_flops(conv, torch.zeros(1, 3, 16, 16)) == 2 * 8 * 16 * 16 * 27


def test_weights_megabytes_counts_fp16_as_half():
    fp32, fp16 = flops.weights_megabytes(torch.nn.Linear(1000, 1000))
    assert fp32 == pytest.approx(4.004) and fp16 == pytest.approx(2.002)


def test_error_rows_are_shown_in_the_table():
    table = bench.markdown_table([{"model": "broken", "error": "Traceback ...\nRuntimeError: out of memory"}])
    assert "| broken | error: RuntimeError: out of memory |" in table


# ----------------------------------------------------------------------------- bench_solution

FAKE_PROGRAM = """
import argparse, json, os, sys
parser = argparse.ArgumentParser()
parser.add_argument("-i")
parser.add_argument("-o")
args = parser.parse_args()
os.makedirs(args.o, exist_ok=True)
sequential = os.environ.get("LOWPOWER_SEQUENTIAL") == "1"
for name in sorted(os.listdir(args.i)):
    with open(os.path.join(args.o, name), "wb") as handle:
        handle.write(b"seq" if sequential and os.environ.get("DIFFER") else b"mask")
with open(os.environ["LOWPOWER_STATS"], "w") as handle:
    json.dump({"loop_seconds": 2.0 if sequential else 1.0, "model_seconds": 0.5, "read_seconds": 0.4,
               "write_seconds": 0.6, "device": "cpu"}, handle)
print("0.500000")
sys.exit(int(os.environ.get("EXIT", "0")))
"""


@pytest.fixture()
def fake_package(tmp_path):
    import zipapp

    src = tmp_path / "src"
    src.mkdir()
    (src / "__main__.py").write_text(FAKE_PROGRAM)
    images = tmp_path / "img"
    images.mkdir()
    for name in ("a.png", "b.png"):
        (images / name).write_bytes(b"image")
    zipapp.create_archive(str(src), str(tmp_path / "fake.pyz"))
    return tmp_path / "fake.pyz", images


def test_bench_solution_runs_both_modes_through_run_pyz(fake_package, capsys):
    from lowpower.measure import solution as bench_solution

    pyz, images = fake_package
    assert bench_solution.main([str(pyz), "--images", str(images), "--repeats", "2", "--compare-sequential"]) == 0
    out = capsys.readouterr().out
    assert "loop wall 0.500 (bar <= 0.80: met)" in out  # pooled 1.0 s / sequential 2.0 s
    assert "masks identical in both modes: yes" in out


def test_bench_solution_flags_different_masks_and_failed_runs(fake_package, capsys, monkeypatch):
    from lowpower.measure import solution as bench_solution

    pyz, images = fake_package
    monkeypatch.setenv("DIFFER", "1")
    assert bench_solution.main([str(pyz), "--images", str(images), "--repeats", "1", "--compare-sequential"]) == 1
    assert "masks identical in both modes: NO" in capsys.readouterr().out
    monkeypatch.setenv("EXIT", "2")
    with pytest.raises(SystemExit, match="the program failed \\(exit 2\\)"):
        bench_solution.main([str(pyz), "--images", str(images), "--repeats", "1", "--compare-sequential"])
