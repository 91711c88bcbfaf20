"""The last step of ``make demo``: one summary of what the demo trained, scored and packaged.

    lowpower demo runs/demo

Reads ``RUN/val.json`` (test.py), ``evaluation/output/solution.json`` (evaluate.bash) and the
run's config, fits the nearest-class-mean-colour baseline on the same data for comparison, and
prints where every output is.
"""
import argparse
import json
import sys
import zipfile
from pathlib import Path

import numpy as np
import yaml

from evaluation.metrics import SegmentationMeter, format_number
from lowpower.data.build import class_names, data_root, raw_dataset
from lowpower.data.synthetic.colour_baseline import fit_class_means, predict_by_colour

# The demo before 2026-12-03 (configs/synthetic/demo_unet.yaml, packaged fp32 in batches of 4), run on
# the same 50 test images in turns with today's demo package on this 2-core CPU:
#   lowpower bench compare runs/demo_unet/solution.pyz runs/demo/solution.pyz --images data/synthetic/test -n 5
# (docs/results.md, "The demo"). Figures, not a run: the old demo would double the demo's time. The
# ratio in turns is the fair one; this run's time against a recorded time also carries the drift.
PREVIOUS_DEMO = {"what": "UNet 128 fp32 (configs/synthetic/demo_unet.yaml)", "date": "2026-12-03",
                 "mean_dice": 0.7381, "ms_per_image": 35.2, "ratio_in_turns": 2.04}


def colour_baseline(cfg, fit_images=100):
    """Mean Dice (referee rule) on val of the nearest-class-mean-colour pixel classifier.

    Args:
        cfg: the run config (its data set is used).
        fit_images: training images the class colours are fitted on (the first ones).
    """
    train, val = raw_dataset(cfg, "train"), raw_dataset(cfg, "val")
    count = min(fit_images, len(train))
    means = fit_class_means((train.load_pair(i) for i in range(count)), cfg["data"]["num_classes"])
    meter = SegmentationMeter(cfg["data"]["num_classes"])
    for index in range(len(val)):
        image, mask = val.load_pair(index)
        meter.update(mask, predict_by_colour(image, means))
    return meter.summary()["mean_dice"]


def package_description(pyz):
    """'int8 (x86 engine), input 128, timer model' from a package's manifest, or '' without one."""
    if not pyz.is_file():
        return ""
    with zipfile.ZipFile(pyz) as archive:
        manifest = json.loads(archive.read("solution/manifest.json").decode("utf-8"))
    engine = (manifest.get("quant") or {}).get("engine")
    return "%s%s, input %s, timer %s" % (manifest.get("precision"), " (%s engine)" % engine if engine else "",
                                         manifest.get("input_size"), manifest.get("timer"))


def previous_demo_line(evaluation, previous=PREVIOUS_DEMO):
    """The previous demo's recorded score beside this package's, and their ratio.

    Example:
        >>> previous_demo_line({"score": 50.0}, {"what": "UNet", "date": "d", "mean_dice": 0.75, "ms_per_image": 30.0})
        '  previous demo, UNet, recorded d on this CPU: mean Dice 0.7500, 30.0 ms/image, score 25.00; this one 2.00x'
    """
    score = previous["mean_dice"] / (previous["ms_per_image"] / 1000.0)
    line = ("  previous demo, %s, recorded %s on this CPU: mean Dice %.4f, %.1f ms/image, score %.2f; this one %.2fx"
            % (previous["what"], previous["date"], previous["mean_dice"], previous["ms_per_image"], score,
               evaluation.get("score", float("nan")) / score))
    if previous.get("ratio_in_turns"):
        line += "\n  (the two packages run in turns on the same images: %.2fx the score; docs/results.md)" % (
            previous["ratio_in_turns"])
    return line


def summary_text(run, val, evaluation, baseline, names):
    lines = ["", "=" * 72, "lowpower demo summary", "=" * 72]
    lines.append("validation split (%d images), model input %s:" % (val["images"], val.get("input_size", "?")))
    lines.append("  mean Dice (referee rule) %s   mIoU %s" % (format_number(val["mean_dice"]),
                                                             format_number(val["miou"])))
    lines.append("  nearest-class-mean-colour baseline on the same split: mean Dice %s"
                 % format_number(baseline))
    lines.append("  %-28s %7s %7s" % ("class", "Dice", "IoU"))
    for name, dice, iou in zip(names, val["per_class_dice"], val["per_class_iou"]):
        lines.append("  %-28s %7s %7s" % (name, format_number(dice), format_number(iou)))
    if evaluation:
        if evaluation.get("status") == "scored":
            lines.append("packaged solution %s" % package_description(run / "solution.pyz"))
            lines.append("packaged solution on the test split (evaluate.bash): %d images, mean Dice %s, "
                         "%.1f ms/image reported, score %s (mean Dice / reported s per image, on this CPU)"
                         % (evaluation.get("images", 0), format_number(evaluation.get("mean_dice", float("nan"))),
                            1000 * evaluation.get("reported_seconds", 0) / max(1, evaluation.get("images", 1)),
                            format_number(evaluation.get("score", float("nan")), 2)))
            lines.append(previous_demo_line(evaluation))
        else:
            lines.append("packaged solution: %s (%s)" % (evaluation.get("status"), evaluation.get("reason")))
    lines.append("outputs:")
    for label, path in (("checkpoints", run / "best.pt"), ("resolved config", run / "config.yaml"),
                        ("training log", run / "log.txt"), ("curves", run / "curves.png"),
                        ("prediction panels", run / "val_panels"), ("package", run / "solution.pyz"),
                        ("referee-style report", Path("evaluation/output/solution.json"))):
        lines.append("  %-22s %s" % (label, path))
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="lowpower demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="the demo's run folder (runs/demo)")
    parser.add_argument("--evaluation", default="evaluation/output/solution.json",
                        help="evaluate.bash's JSON report of the packaged demo")
    args = parser.parse_args(argv)
    run = Path(args.run)
    val_path = run / "val.json"
    if not val_path.is_file():
        sys.exit("%s is missing: run test.py --checkpoint %s --json %s first" % (val_path, run / "best.pt", val_path))
    val = json.loads(val_path.read_text())
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    val["input_size"] = cfg["data"]["input_size"]
    evaluation_path = Path(args.evaluation)
    evaluation = json.loads(evaluation_path.read_text()) if evaluation_path.is_file() else None
    if not data_root(cfg).is_dir():
        sys.exit("data folder %s is missing" % data_root(cfg))
    baseline = colour_baseline(cfg)
    print(summary_text(run, val, evaluation, baseline, class_names(cfg)))
    if not np.isfinite(val["mean_dice"]):
        return 1
    return 0
