"""test.py: score a checkpoint on a split with the referee's rules, optionally drawing predictions.

    python test.py --checkpoint runs/demo/best.pt
    python test.py --checkpoint runs/demo/best.pt --split test --save-images runs/demo/pred --json m.json

Prints the mean Dice (the referee's per-image rule), mIoU, a per-class Dice/IoU table and the
confusion matrix. With ``--save-images DIR`` every image gets a panel ``DIR/NAME.png``: the input,
the ground truth and the prediction colour-coded, and the prediction over the input, under
column titles, with a legend of the class colours and names.
"""
import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader

from evaluation.metrics import format_table
from lowpower.checkpoint import CheckpointError, build_model, kind_of, load_checkpoint
from lowpower.config import ConfigError
from lowpower.data import DataError
from lowpower.data.build import build_dataset, class_names, data_root
from lowpower.safe.bounds import BATCH, SHARE, SIDE
from lowpower.train.distributed import pick_device
from lowpower.train.engine import evaluate, summary_metrics
from lowpower.train.panels import compose_panel


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="test.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="a train.py checkpoint (best.pt or last.pt)")
    parser.add_argument("--data", help="data folder (default: the checkpoint's data.root)")
    parser.add_argument("--split", default="val", choices=["train", "val", "test"],
                        help="split to score (default val; test is the referee layout test/{IMG,GT})")
    parser.add_argument("--save-images", metavar="DIR", help="write a colour-coded panel per image here")
    parser.add_argument("--save-predictions", metavar="DIR",
                        help="write each prediction as DIR/NAME.png in the data set's own format: class ids "
                             "(LPCVC), label ids (Cityscapes, what cityscapesscripts' evaluation reads)")
    parser.add_argument("--input-size", type=SIDE, help="side the model sees (default: as trained)")
    parser.add_argument("--batch-size", type=BATCH, help="images per step (default eval.batch_size)")
    parser.add_argument("--min-class-area", type=SHARE, metavar="SHARE",
                        help="drop classes covering less than this share of an image (default: the "
                             "checkpoint config's eval.min_class_area; 0 disables)")
    parser.add_argument("--device", default="auto", choices=["auto", "cuda", "cpu"])
    parser.add_argument("--json", metavar="FILE", help="also write the scores as JSON")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser.parse_args(argv)


def confusion_text(cm, names):
    """Confusion matrix as text: rows ground truth, columns predictions, ids as headers."""
    width = max(6, len(str(int(cm.max()))) + 1)
    lines = ["confusion matrix (rows: ground truth, columns: prediction, in pixels)",
             "    " + "".join(("%d" % j).rjust(width) for j in range(cm.shape[1]))]
    for i in range(cm.shape[0]):
        lines.append(("%2d  " % i) + "".join(("%d" % v).rjust(width) for v in cm[i]))
    return "\n".join(lines)


class PanelWriter:
    """Writes a titled input | ground truth | prediction | overlay panel with a class legend per image."""

    def __init__(self, dataset, folder, names):
        self.dataset, self.folder, self.names, self.index = dataset, Path(folder), names, 0
        self.folder.mkdir(parents=True, exist_ok=True)

    def __call__(self, predictions, masks):
        for prediction, mask in zip(predictions, masks):
            image = self.dataset.load_pair(self.index)[0]
            image = cv2.resize(image, (prediction.shape[1], prediction.shape[0]), interpolation=cv2.INTER_AREA)
            panel = compose_panel(image, np.asarray(mask), np.asarray(prediction), self.names)
            name = self.dataset.names[self.index]
            cv2.imwrite(str(self.folder / (name + ".png")), cv2.cvtColor(panel, cv2.COLOR_RGB2BGR))
            self.index += 1


class PredictionWriter:
    """Writes each prediction as ``DIR/NAME.png``, encoded as the data set scores it.

    A dataset with ``encode_prediction`` (Cityscapes: train ids -> label ids) decides the pixel
    values; otherwise the class ids are written as they are (the LPCVC referee's format).
    """

    def __init__(self, dataset, folder):
        self.dataset, self.folder, self.index = dataset, Path(folder), 0
        self.encode = getattr(dataset, "encode_prediction", None)
        self.folder.mkdir(parents=True, exist_ok=True)

    def __call__(self, predictions, masks):
        for prediction in predictions:
            pixels = self.encode(prediction) if self.encode else prediction
            name = self.dataset.names[self.index]
            cv2.imwrite(str(self.folder / (name + ".png")), pixels.astype(np.uint8))
            self.index += 1


def cpu_only(kind, state, cfg, wanted):
    """A kind whose model runs on the CPU only (int8 kernels): say so on stderr, turn off AMP and
    channels-last, return cpu."""
    if wanted == "cuda":
        raise ConfigError("%s runs on the CPU only; drop --device cuda" % kind.title)
    print("test.py: %s is %s (%s): scoring the %s model on the CPU"
          % (state.get("arch"), kind.title, kind.describe(state), kind.name), file=sys.stderr)
    cfg["train"]["amp"] = False
    cfg["train"]["channels_last"] = False
    return torch.device("cpu")


def rebuild(state, path):
    """The checkpoint's model, as its kind builds it; a checkpoint whose weights do not fit its own arch
    (edited, or corrupt inside a readable file) is a one-line ``CheckpointError`` naming it.

    Example:
        >>> model = rebuild(load_checkpoint("runs/demo/best.pt"), "runs/demo/best.pt")  # doctest: +SKIP
    """
    try:
        return build_model(state)
    except (RuntimeError, KeyError, TypeError, ValueError) as error:  # size mismatch, missing key, unknown kwarg
        raise CheckpointError("%s: cannot rebuild %s(%s) from it (%s); use another checkpoint, e.g. best.pt of the "
                              "same run" % (path, state.get("arch"), state.get("arch_kwargs"),
                                            " ".join(str(error).split())[:300])) from None


def run(args):
    state = load_checkpoint(args.checkpoint)
    cfg = state.get("config")
    if not cfg:
        raise ConfigError("%s has no config (not written by train.py); cannot tell its data set"
                          % args.checkpoint)
    cfg["data"]["cache"] = False  # scoring reads every file once anyway
    if args.input_size:
        cfg["data"]["input_size"] = args.input_size
    if args.batch_size:
        cfg["eval"]["batch_size"] = args.batch_size
    if args.min_class_area is not None:
        cfg["eval"]["min_class_area"] = args.min_class_area
    root = Path(args.data) if args.data else data_root(cfg)
    device = torch.device(pick_device(args.device))
    kind = kind_of(state)
    if kind.cpu_only:
        device = cpu_only(kind, state, cfg, args.device)
    dataset = build_dataset(cfg, args.split, train=False, root=root)
    loader = DataLoader(dataset, batch_size=cfg["eval"]["batch_size"], shuffle=False,
                        num_workers=min(2, cfg["data"]["workers"]))
    model = rebuild(state, args.checkpoint).to(device)
    if cfg["train"].get("channels_last"):
        model = model.to(memory_format=torch.channels_last)
    writers = []
    if args.save_images:
        writers.append(PanelWriter(dataset, args.save_images, class_names(cfg)))
    if args.save_predictions:
        writers.append(PredictionWriter(dataset, args.save_predictions))

    def on_batch(predictions, masks):
        for writer in writers:
            writer(predictions, masks)

    meter = evaluate(model, loader, device, cfg["data"]["num_classes"], amp=cfg["train"]["amp"],
                     progress=not args.no_progress, channels_last=cfg["train"].get("channels_last", False),
                     on_batch=on_batch if writers else None,
                     min_class_area=cfg["eval"].get("min_class_area", 0.0))
    summary = meter.summary()
    names = class_names(cfg)
    print("%s on %s split of %s (%d images, model input %d)" % (
        args.checkpoint, args.split, root, summary["images"], cfg["data"]["input_size"]))
    print(format_table(summary, names))
    print(confusion_text(summary["confusion_matrix"], names))
    if args.save_images:
        print("panels (input | ground truth | prediction | overlay, with a class legend) in %s" % args.save_images)
    if args.save_predictions:
        print("predictions (%d PNGs) in %s" % (summary["images"], args.save_predictions))
    if args.json:
        record = summary_metrics(summary)
        record.update(checkpoint=str(args.checkpoint), split=args.split, data=str(root),
                      classes=list(names), confusion_matrix=summary["confusion_matrix"].tolist())
        Path(args.json).write_text(json.dumps(record, indent=1))
    return 0


def main(argv=None):
    """test.py's entry point: the exit status; a refusal is one line on stderr and status 2.

    A checkpoint the safe loader refuses (truncated, not a torch file, pickled code that is never
    run, not a lowpower checkpoint) is one of them (``CheckpointError``).

    Example:
        >>> main(["--checkpoint", "runs/demo/best.pt", "--no-progress"])  # doctest: +SKIP
        0
    """
    args = parse_args(argv)
    try:
        return run(args)
    except (ConfigError, DataError, FileNotFoundError, CheckpointError) as error:
        print("test.py: error: %s" % " ".join(str(error).split()), file=sys.stderr)
        return 2
