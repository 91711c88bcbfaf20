"""One checkpoint at every precision, side by side: fp32, fp16 weights, int8 PTQ, int8 QAT.

    lowpower bench variants runs/demo/best.pt --qat runs/demo_qat/best_int8.pt \\
        [--engine x86] [--calib 64] [--images data/synthetic/test] [-n 30] [--package-runs 3]

For each variant it reports:

- the on-disk size of the package's ``weights.npz`` and of the whole ``solution.pyz``;
- forward latency in this process (batch 1, the checkpoint's input size or ``--forward-size``, a real
  validation image):
  median, min and max over ``-n`` calls, the variants in turns call by call (A B C D A B C D ...),
  so a change in the machine's load falls on every variant alike;
- package model seconds per image: each package run by ``lowpower.ship.runner.run_pyz`` (the referee's
  command) on ``--images``, the packages in turns, median over ``--package-runs`` of the seconds
  it printed divided by the image count; with the folder's GT, the package's mean Dice too;
- val mean Dice in this process by the referee's rule (``lowpower.train.engine.evaluate``, as test.py).

fp16 means what an fp16 package does on a CPU: weights rounded to fp16, computed in fp32. The int8
PTQ checkpoint is made here (``lowpower.compress.quantize.ptq``) unless ``--ptq`` names one; int8 QAT is
``--qat`` (a converted QAT checkpoint, best_int8.pt of a ``quant.qat`` run) and skipped without it.
Timings only: nothing here is a test.
"""
import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from evaluation.folders import score_folders
from evaluation.pairing import list_pngs
from lowpower.checkpoint import build_model, load_checkpoint, save_checkpoint
from lowpower.compress.quantize.ptq import quantize_checkpoint
from lowpower.data.build import build_dataset, data_root
from lowpower.measure.compare import run_figures
from lowpower.measure.limits import CALIB, CALLS, RUNS, SIDE
from lowpower.measure.report import check_result_folder
from lowpower.ship.build import build_package
from lowpower.ship.presubmit.run import sample_images
from lowpower.train.engine import evaluate, summary_metrics
from networks import quant

COLUMNS = ("variant", "weights.npz MB", "pyz MB", "forward ms (median, min-max)", "x fp32",
           "package ms/img", "x fp32", "val mean Dice", "package mean Dice")


def variant_list(checkpoint, ptq, qat, engine, calib, out):
    """``[(name, checkpoint path, package precision)]``: fp32, fp16, int8 PTQ (made when missing), int8 QAT."""
    variants = [("fp32", Path(checkpoint), "fp32"), ("fp16", Path(checkpoint), "fp16")]
    if ptq is None:
        ptq = out / "int8_ptq_{}.pt".format(engine)
        with torch.no_grad():
            _, state = quantize_checkpoint(load_checkpoint(checkpoint), engine, calib, path=checkpoint)
        save_checkpoint(state, ptq)
    variants.append(("int8 PTQ", Path(ptq), "int8"))
    if qat is not None:
        variants.append(("int8 QAT", Path(qat), "int8"))
    return variants


def load_variant(path, precision):
    """The variant's model in eval mode on the CPU; fp16 rounds every float weight to fp16 and back."""
    model = build_model(load_checkpoint(path)).eval()
    if precision == "fp16":
        with torch.no_grad():
            for tensor in list(model.parameters()) + list(model.buffers()):
                if tensor.is_floating_point():
                    tensor.copy_(tensor.half().float())
    return model


def val_loader(cfg):
    cfg = dict(cfg, data=dict(cfg["data"], cache=False))
    dataset = build_dataset(cfg, "val", train=False, root=data_root(cfg))
    return DataLoader(dataset, batch_size=cfg["eval"]["batch_size"], shuffle=False, num_workers=0)


def val_dice(model, cfg, loader):
    meter = evaluate(model, loader, torch.device("cpu"), cfg["data"]["num_classes"],
                     min_class_area=cfg["eval"].get("min_class_area", 0.0))
    return summary_metrics(meter.summary())["mean_dice"]


@torch.inference_mode()
def forward_times(models, image, calls, warmup=3):
    """Per model, the seconds of ``calls`` forward passes on ``image``, the models in turns call by call."""
    for model in models:
        for _ in range(warmup):  # allocator growth and kernel selection are paid before the clock
            model(image)
    times = [[] for _ in models]
    for _ in tqdm(range(calls), desc="forward", unit="turn", file=sys.stderr, leave=False):
        for index, model in enumerate(models):
            started = time.perf_counter()
            model(image)
            times[index].append(time.perf_counter() - started)
    return times


def package_seconds(packages, images, runs, workdir):
    """Per package, the printed model seconds of ``runs`` runs (packages in turns) and the last run's masks."""
    seconds = [[] for _ in packages]
    outs = [Path(workdir) / "out-{}".format(index) for index in range(len(packages))]
    for _ in tqdm(range(runs), desc="packages", unit="turn", file=sys.stderr, leave=False):
        for index, pyz in enumerate(packages):
            seconds[index].append(run_figures(pyz, images, outs[index])["model"])
    return seconds, outs


def measure(args):
    """Every figure of every variant, as a list of row dicts (see COLUMNS)."""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    engine, warning = quant.select_engine(args.engine)
    if warning:
        print("bench variants: warning: %s" % warning, file=sys.stderr)
    variants = variant_list(args.checkpoint, args.ptq, args.qat, engine, args.calib, out)
    cfg = load_checkpoint(args.checkpoint)["config"]
    loader = val_loader(cfg)
    models = [load_variant(path, precision) for _, path, precision in variants]
    rows = []
    for (name, path, precision), model in zip(variants, models):
        pyz = out / "{}.pyz".format(name.replace(" ", "_"))
        info = build_package(path, pyz, precision=precision, verify=False, build_dir=out / "build" / pyz.stem)
        rows.append({"variant": name, "engine": engine if precision == "int8" else "", "pyz": pyz,
                     "npz_bytes": info["weights_bytes"], "pyz_bytes": info["bytes"],
                     "val_dice": val_dice(model, cfg, loader)})
    image = loader.dataset[0][0][None]
    if args.forward_size:  # the same image at another size: int8 gains grow with the input (512 for LPCVC)
        image = torch.nn.functional.interpolate(image, size=(args.forward_size,) * 2, mode="bilinear",
                                                align_corners=False)
    for row, times in zip(rows, forward_times(models, image, args.calls)):
        row["forward"] = times
    images, gt, _ = sample_images(args.images, 0, out) if args.images else (None, None, "")
    if images is not None:
        count = len(list_pngs(str(images))[0])
        with tempfile.TemporaryDirectory(prefix="bench-variants-") as workdir:
            seconds, outs = package_seconds([row["pyz"] for row in rows], images, args.package_runs, workdir)
            for row, runs, masks in zip(rows, seconds, outs):
                row["package_per_image"] = statistics.median(runs) / count
                row["package_dice"] = score_folders(str(masks), str(gt))["mean_dice"] if gt else None
    return rows


def format_table(rows):
    """The Markdown table; ratios are against the fp32 row."""
    base = rows[0]
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in rows:
        ms = [t * 1000 for t in row["forward"]]
        forward = "{:.1f} ({:.1f}-{:.1f})".format(statistics.median(ms), min(ms), max(ms))
        ratio = statistics.median(row["forward"]) / statistics.median(base["forward"])
        package = row.get("package_per_image")
        cells = [row["variant"] + (" ({})".format(row["engine"]) if row["engine"] else ""),
                 "{:.2f}".format(row["npz_bytes"] / 1e6), "{:.2f}".format(row["pyz_bytes"] / 1e6), forward,
                 "{:.2f}".format(ratio),
                 "{:.1f}".format(package * 1000) if package is not None else "-",
                 "{:.2f}".format(package / base["package_per_image"]) if package is not None else "-",
                 "{:.4f}".format(row["val_dice"]),
                 "{:.4f}".format(row["package_dice"]) if row.get("package_dice") is not None else "-"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def parse_args(argv=None):
    """The command line of ``lowpower bench variants``."""
    sub = argparse.ArgumentParser(prog="lowpower bench variants", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sub.add_argument("checkpoint", help="the float checkpoint (train.py's best.pt)")
    sub.add_argument("--ptq", help="an int8 PTQ checkpoint of it (default: made here with --engine, --calib)")
    sub.add_argument("--qat", help="a converted int8 QAT checkpoint of it (best_int8.pt); skipped without")
    sub.add_argument("--engine", default="x86", help="quantized engine for the PTQ made here (default x86)")
    sub.add_argument("--calib", type=CALIB, default=64, help="calibration images for that PTQ (default 64)")
    sub.add_argument("--images", help="folder of PNGs or one holding IMG/ and GT/, for package runs and Dice")
    sub.add_argument("-n", "--calls", type=CALLS, default=30, help="forward calls per variant (default 30)")
    sub.add_argument("--forward-size", type=SIDE, help="input side of the forward timing, 8..2048 (default: the "
                                                       "checkpoint's; Dice and packages keep it)")
    sub.add_argument("--package-runs", type=RUNS, default=3, help="runs per package (default 3)")
    sub.add_argument("--out", default="runs/bench_variants", help="where the variants and packages are written "
                                                                  "(rebuilt on every run)")
    args = sub.parse_args(argv)
    check_out(args)  # before any work: a refusal costs nothing
    return args


def check_out(args):
    """Refuse an ``--out`` that is an input or would rebuild a variant file over one of the inputs.

    The packages and the PTQ checkpoint made in ``--out`` are the command's own and are replaced on a rerun.
    """
    products = ["{}.pyz".format(name) for name in ("fp32", "fp16", "int8_PTQ", "int8_QAT")]
    if args.ptq is None:
        products.append("int8_ptq_{}.pt".format(args.engine))
    check_result_folder(args.out, inputs=[args.checkpoint, args.ptq, args.qat, args.images], products=products)


def run(args):
    """``bench variants``: print the table; 2 with a one-line error for a missing checkpoint."""
    for path in (args.checkpoint, args.ptq, args.qat):
        if path is not None and not Path(path).is_file():
            print("bench variants: {}: no such checkpoint".format(path), file=sys.stderr)
            return 2
    print(format_table(measure(args)))
    return 0


def main(argv=None):
    """``lowpower bench variants``: returns the exit status."""
    return run(parse_args(argv))
