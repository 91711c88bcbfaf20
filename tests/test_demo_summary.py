"""The demo's summary: the package's precision from its manifest, and its score beside the previous demo's."""
import json
import zipfile

from lowpower.measure import demo


def write_pyz(path, manifest):
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("solution/manifest.json", json.dumps(manifest))
    return path


def test_the_package_is_described_from_its_manifest(tmp_path):
    pyz = write_pyz(tmp_path / "solution.pyz", {"precision": "int8", "quant": {"engine": "x86"},
                                                "input_size": 128, "timer": "model"})
    assert demo.package_description(pyz) == "int8 (x86 engine), input 128, timer model"
    fp32 = write_pyz(tmp_path / "fp32.pyz", {"precision": "fp32", "input_size": 96, "timer": "model"})
    assert demo.package_description(fp32) == "fp32, input 96, timer model"
    assert demo.package_description(tmp_path / "missing.pyz") == ""


def test_the_score_is_set_beside_the_previous_demos():
    previous = {"what": "UNet 128 fp32", "date": "2026-12-03", "mean_dice": 0.74, "ms_per_image": 29.6}
    line = demo.previous_demo_line({"score": 50.0}, previous)
    assert "score 25.00" in line and "this one 2.00x" in line and "mean Dice 0.7400, 29.6 ms/image" in line


def test_the_recorded_previous_demo_is_filled_in():
    previous = demo.PREVIOUS_DEMO
    assert 0.7 <= previous["mean_dice"] <= 1 and previous["ms_per_image"] > 0
    assert demo.previous_demo_line({"score": 1.0}).startswith("  previous demo, UNet 128 fp32")
    assert "run in turns on the same images: %.2fx" % previous["ratio_in_turns"] in demo.previous_demo_line({})


def test_the_summary_holds_both_lines(tmp_path):
    write_pyz(tmp_path / "solution.pyz", {"precision": "int8", "quant": {"engine": "x86"}, "input_size": 128,
                                          "timer": "model"})
    val = {"images": 2, "mean_dice": 0.7, "miou": 0.6, "per_class_dice": [0.7], "per_class_iou": [0.6]}
    evaluation = {"status": "scored", "images": 50, "mean_dice": 0.73, "reported_seconds": 0.75, "score": 48.7}
    text = demo.summary_text(tmp_path, val, evaluation, 0.1, ["background"])
    assert "packaged solution int8 (x86 engine), input 128, timer model" in text
    assert "15.0 ms/image reported, score 48.70" in text
    previous = demo.PREVIOUS_DEMO
    ratio = 48.7 / (previous["mean_dice"] / (previous["ms_per_image"] / 1000))
    assert "this one %.2fx" % ratio in text
