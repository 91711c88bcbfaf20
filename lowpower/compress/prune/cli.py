"""Prune a trained checkpoint's channels to a FLOPs target and write a shippable pruned checkpoint.

    lowpower prune runs/demo/best.pt --target-flops 0.5 [--importance l1|l2|taylor|bn]
        [--steps K] [--round-to 8] [--finetune-steps N] [--out runs/demo_pruned/pruned.pt]

Torch-Pruning removes whole channels (``lowpower.compress.prune.core``); the classifier keeps its output
channels. With ``--steps K`` the FLOPs come down in K equal steps, with ``--finetune-steps N``
optimiser steps on the checkpoint's training data between them. The report gives params, FLOPs
(counted as ``lowpower.measure.bench`` counts them, at the checkpoint's input size) and CPU forward latency
(batch 1, median, the two networks timed in turns) before and after.

The pruned checkpoint stores the new widths as plain data, ``arch_kwargs["width_plan"]``
(``networks.widths``): ``test.py``, ``compress.sh`` and the packaged program rebuild it from the
networks source, no pickled modules. It is not resumable (no optimiser state); fine-tune it with a
config that names it in ``model.init_from`` (configs/synthetic/prune_finetune.yaml).

``--out`` is never the checkpoint; an existing file is replaced only with ``--force``; both are
checked before any work, and the file is written to a temporary file beside it, then renamed.
"""
import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

from lowpower import checkpoint as ckpt
from lowpower.compress.prune.core import IMPORTANCES, TICKS, PruneError, prune_to_flops, rebuild_check, width_plan
from lowpower.compress.prune.finetune import Tuner
from lowpower.measure.flops import count_flops
from lowpower.safe import UserError
from lowpower.safe.bounds import bounded
from lowpower.safe.write import add_force_argument, check_output

DROPPED = ("optimizer", "scheduler", "scaler", "rng", "step_in_epoch", "epoch_loss", "distill")
# Limits of the numeric options, each with its reason.
TARGET_FLOPS = bounded(float, 0.01, 0.99, "the share of the FLOPs to keep: 1 prunes nothing, 0 leaves no network")
STEPS = bounded(int, 1, TICKS, "each step takes at least one of the pruner's %d ticks" % TICKS)
ROUND_TO = bounded(int, 0, 128, "channel counts become multiples of this; a layer narrower than it cannot be pruned")
FINETUNE_STEPS = bounded(int, 0, 100000, "a longer fine-tune is a training run: train.py with model.init_from")
LR_SCALE = bounded(float, 1e-4, 1.0, "a share of the checkpoint's train.lr; above it the fine-tune undoes the training")
REPEATS = bounded(int, 1, 1000, "timed forward calls per network; the median settles after a few")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="lowpower prune", description=__doc__.split("\n\n")[2],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path, help="float checkpoint to prune (best.pt of a train.py run)")
    parser.add_argument("--target-flops", type=TARGET_FLOPS, default=0.5,
                        help="share of the forward FLOPs to keep, 0.01-0.99 (default 0.5: remove half)")
    parser.add_argument("--importance", choices=IMPORTANCES, default="l1",
                        help="channel ranking: l1/l2 weight norm, taylor (|weight x gradient| on training "
                             "batches), bn (BatchNorm scale) (default l1)")
    parser.add_argument("--steps", type=STEPS, default=1,
                        help="prune in this many equal FLOPs steps, 1-%d (default 1)" % TICKS)
    parser.add_argument("--round-to", type=ROUND_TO, default=8,
                        help="keep channel counts multiples of this, 0-128 (default 8; 0: any count)")
    parser.add_argument("--finetune-steps", type=FINETUNE_STEPS, default=0,
                        help="optimiser steps of fine-tuning between pruning steps, 0-100000 (default 0)")
    parser.add_argument("--finetune-lr-scale", type=LR_SCALE, default=0.1,
                        help="that fine-tune's learning rate as a share of the checkpoint's train.lr, "
                             "0.0001-1 (default 0.1)")
    parser.add_argument("--data", help="data folder overriding the checkpoint's data.root (taylor, fine-tune)")
    parser.add_argument("--repeats", type=REPEATS, default=20,
                        help="timed forward calls per network, 1-1000 (default 20)")
    parser.add_argument("--out", type=Path,
                        help="pruned checkpoint (default: NAME_pruned.pt beside CKPT); never CKPT itself")
    add_force_argument(parser, "replace OUT when it exists (never allowed when it is the checkpoint)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser.parse_args(argv)


def read_float_checkpoint(path):
    """The checkpoint at ``path``; one without float weights (int8, QAT) is refused (prune the float one first)."""
    state = ckpt.load_checkpoint(path)
    kind = ckpt.kind_of(state)
    if not kind.float_weights:
        raise PruneError("%s is a quantized checkpoint, %s (%s); prune the float checkpoint, then quantize"
                         % (path, kind.title, kind.describe(state)))
    return state


def forward_latencies(models, example, repeats, progress=True):
    """Median ms of one forward call of each model, timed in turns (A, B, A, B, ...) after a warm-up,
    so a change in the machine's load touches both alike.

    Example:
        >>> forward_latencies([model_a, model_b], torch.zeros(1, 3, 128, 128), 10)  # doctest: +SKIP
        [21.3, 11.8]
    """
    times = [[] for _ in models]
    with torch.inference_mode():
        for model in models:
            model.eval()(example)
        for _ in tqdm(range(repeats), desc="latency", disable=not progress, leave=False, file=sys.stderr):
            for index, model in enumerate(models):
                start = time.perf_counter()
                model(example)
                times[index].append(1000 * (time.perf_counter() - start))
    return [statistics.median(values) for values in times]


def measure(model, example):
    """Parameters and forward FLOPs at ``example``'s size."""
    return {"params": sum(p.numel() for p in model.parameters()), "flops": count_flops(model, example)}


def make_tuner(state, args):
    """The training-data helper (gradients, fine-tune), or None when neither is asked for."""
    if args.importance != "taylor" and not args.finetune_steps:
        return None
    cfg = state["config"]
    if args.data:
        cfg = dict(cfg, data=dict(cfg["data"], root=str(Path(args.data).resolve())))
    return Tuner(cfg, args.finetune_steps, args.finetune_lr_scale, progress=not args.no_progress)


def prune_checkpoint(state, args, log=print):
    """Prune the checkpoint dict ``state`` as ``args`` asks; returns (pruned state, report dict)."""
    torch.manual_seed(0)
    original = ckpt.build_model(state).eval()
    model = ckpt.build_model(state).eval()
    size = int(state.get("input_size") or state["config"]["data"]["input_size"])
    example = torch.randn(1, 3, size, size)
    num_classes = int(state["arch_kwargs"].get("num_classes", 14))
    tuner = make_tuner(state, args)
    prune_to_flops(model, example, args.target_flops, num_classes, args.importance, args.steps, args.round_to,
                   between_steps=tuner.finetune if tuner and args.finetune_steps else None,
                   gradients=tuner.gradients if tuner else None, log=log)
    base_kwargs = ckpt.PRUNED.unpruned_kwargs(state)
    kwargs = dict(base_kwargs, **{ckpt.PRUNED.KEY: width_plan(state["arch"], base_kwargs, model)})
    rebuilt = rebuild_check(state["arch"], kwargs, model, example)
    before, after = measure(original, example), measure(rebuilt, example)
    before["latency_ms"], after["latency_ms"] = forward_latencies([original, rebuilt], example, args.repeats,
                                                                  not args.no_progress)
    report = {"input_size": size, "before": before, "after": after, "target_flops": args.target_flops,
              "importance": args.importance, "steps": args.steps, "round_to": args.round_to,
              "finetune_steps": args.finetune_steps, "threads": torch.get_num_threads(),
              "unpruned_metrics": state.get("metrics") or {}}
    pruned = {key: value for key, value in state.items() if key not in DROPPED}
    pruned.update(arch_kwargs=kwargs, model={k: v.contiguous() for k, v in rebuilt.state_dict().items()},
                  metrics={}, best_mean_dice=-1.0, prune=report, optimizer=None, scheduler=None, scaler=None)
    return pruned, report


def format_report(report):
    """The before/after table as text."""
    before, after = report["before"], report["after"]
    lines = ["%-12s %12s %12s %8s" % ("", "before", "after", "ratio")]
    for key, scale, unit in (("params", 1e6, "M"), ("flops", 1e9, "GFLOPs"), ("latency_ms", 1, "ms")):
        lines.append("%-12s %12.3f %12.3f %8.3f" % ("%s (%s)" % (key.split("_")[0], unit), before[key] / scale,
                                                    after[key] / scale, after[key] / before[key]))
    lines.append("FLOPs at %dx%d, batch 1; latency: median of timed forward calls in turns, %d threads, CPU "
                 "(a loaded machine skews both alike)" % (report["input_size"], report["input_size"],
                                                          report["threads"]))
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    out = args.out or args.checkpoint.with_name(args.checkpoint.stem + "_pruned.pt")
    try:
        # Before any work, so a refusal costs nothing.
        check_output(out, inputs=[args.checkpoint], force=args.force, what="--out" if args.out else "output")
        state = read_float_checkpoint(args.checkpoint)
        pruned, report = prune_checkpoint(state, args)
    except (PruneError, UserError, ckpt.CheckpointError, FileNotFoundError, ValueError) as error:
        print("lowpower prune: error: %s" % error, file=sys.stderr)
        return 2
    out.parent.mkdir(parents=True, exist_ok=True)
    ckpt.save_checkpoint(pruned, out)  # atomic: a temporary file renamed into place, stale ones removed
    print(format_report(report))
    print("wrote %s (%d pruned layers); fine-tune it with model.init_from: %s" % (
        out, len(ckpt.PRUNED.plan(pruned)), out))
    return 0
