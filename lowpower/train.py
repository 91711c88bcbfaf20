"""train.py: train a network from a YAML config, on one CPU/GPU or many under torchrun.

    python train.py --cfg configs/synthetic/demo.yaml --out runs/demo
    python train.py --cfg configs/synthetic/demo.yaml --set train.epochs=1 train.lr=0.01
    torchrun --nproc_per_node=4 train.py --cfg configs/lpcvc/deeplabv3_r18_512.yaml
    python train.py --cfg ... --out runs/x --resume auto          # continue runs/x/last.pt if any

Writes ``OUT/config.yaml`` (the resolved config), ``OUT/log.txt``, ``OUT/last.pt`` (every epoch
and on SIGTERM), ``OUT/best.pt`` (best validation mean Dice), ``OUT/history.json`` and
``OUT/curves.png``. ``train.batch_size`` is per process: the global batch is
batch_size x processes, and ``train.lr`` is not rescaled for you.
"""
import argparse
import json
import logging
import math
import sys
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

import networks
from evaluation.metrics import format_table
from lowpower import distributed
from lowpower.checkpoint import load_checkpoint, save_checkpoint
from lowpower.config import ConfigError, apply_override, check_consistency, check_model_kwargs, \
    load_config, save_config
from lowpower.data import DataError
from lowpower.data.build import REPO_ROOT, build_dataset, class_names, ensure_synthetic
from lowpower.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from lowpower.engine import EpochSampler, ShardSampler, StopFlag, build_optimizer, evaluate, \
    poly_with_warmup, summary_metrics, train_one_epoch
from lowpower.losses import SegmentationLoss, inverse_sqrt_weights, mask_pixel_counts
from lowpower.plots import plot_curves

LOG = logging.getLogger("lowpower.train")
EXIT_STOPPED = 143  # 128 + SIGTERM: the job ended early but saved last.pt


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="train.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cfg", help="YAML run config (see configs/ and the README's config reference); "
                                      "optional with --resume, which then reuses the checkpoint's config")
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE",
                        help="overrides that win over the file, e.g. train.epochs=5 model.kwargs.base_width=8")
    parser.add_argument("--out", help="run folder (default runs/<config name>)")
    parser.add_argument("--resume", metavar="CKPT",
                        help="continue from a checkpoint; 'auto' takes OUT/last.pt when it exists")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars (log lines only)")
    return parser.parse_args(argv)


def resolve_resume(args, out):
    """The checkpoint path to resume from, or None."""
    if not args.resume:
        return None
    if args.resume == "auto":
        last = out / "last.pt"
        return last if last.is_file() else None
    return Path(args.resume)


def resolve_config(args, resume_state):
    """File config (or the checkpoint's) with the command line's overrides applied last."""
    if args.cfg:
        return load_config(args.cfg, args.set)
    if resume_state is None:
        raise ConfigError("give --cfg FILE (or --resume CKPT to reuse a checkpoint's config)")
    cfg = resume_state["config"]
    for text in args.set:
        apply_override(cfg, text)
    check_model_kwargs(cfg, "checkpoint config")
    check_consistency(cfg, "checkpoint config")
    return cfg


def setup_logging(out, is_main):
    """Rank 0 logs to stderr and OUT/log.txt; other ranks only report warnings."""
    LOG.handlers.clear()
    LOG.setLevel(logging.INFO if is_main else logging.WARNING)
    LOG.propagate = False
    stream = logging.StreamHandler(sys.stderr)
    stream.setFormatter(logging.Formatter("%(message)s"))
    LOG.addHandler(stream)
    if is_main:
        handler = logging.FileHandler(out / "log.txt")
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S"))
        LOG.addHandler(handler)


def make_model(cfg, load_pretrained=True):
    """Build the configured network, with ImageNet backbone weights when ``model.pretrained`` asks
    and ``load_pretrained`` (under torchrun only rank 0 loads them: DDP copies rank 0's weights to
    every process, so compute nodes other than the first need neither the file nor a network)."""
    model = networks.create_model(cfg["model"]["arch"], num_classes=cfg["data"]["num_classes"],
                                  **cfg["model"]["kwargs"])
    pretrained = cfg["model"]["pretrained"]
    if pretrained and load_pretrained:
        from lowpower.pretrained import load_pretrained_backbone

        weights = "IMAGENET1K_V1" if pretrained is True else pretrained
        missing = load_pretrained_backbone(model, cfg["model"]["arch"], weights)
        LOG.info("loaded %s backbone weights (%d backbone keys not in the file)", weights, len(missing))
    return model


def make_criterion(cfg, train_set, device):
    """The loss the config asks for; 'inverse_sqrt' weights come from the training masks."""
    weights = cfg["train"]["class_weights"]
    if weights == "inverse_sqrt":
        counts = mask_pixel_counts(train_set, cfg["data"]["num_classes"])
        weights = inverse_sqrt_weights(counts).tolist()
        LOG.info("class weights (inverse sqrt of pixel share): %s", " ".join("%.2f" % w for w in weights))
    return SegmentationLoss(cfg["data"]["num_classes"], weights, cfg["train"]["dice_weight"]).to(device)


def make_loaders(cfg, info, progress):
    """Training loader with a resumable sampler, and a validation loader sharded across ranks."""
    train_set = build_dataset(cfg, "train", progress=progress)
    val_set = build_dataset(cfg, "val", progress=progress)
    batch = cfg["train"]["batch_size"]
    if len(train_set) < batch * info.world_size:
        raise ConfigError("the training split has %d images, fewer than one step needs (%d = "
                          "train.batch_size x %d processes)" % (len(train_set), batch * info.world_size,
                                                                 info.world_size))
    sampler = EpochSampler(train_set, info.world_size, info.rank, cfg["train"]["seed"])
    workers = cfg["data"]["workers"]
    pin = info.device.type == "cuda"
    train_loader = DataLoader(train_set, batch_size=batch, sampler=sampler, num_workers=workers,
                              pin_memory=pin, drop_last=True, persistent_workers=False)
    val_loader = DataLoader(val_set, batch_size=cfg["eval"]["batch_size"],
                            sampler=ShardSampler(val_set, info.world_size, info.rank),
                            num_workers=min(workers, 2), pin_memory=pin)
    return train_set, train_loader, val_loader


def checkpoint_state(cfg, model, optimizer, scheduler, scaler, epoch, step, best, metrics, history):
    """Everything that rebuilds, resumes and packages the run (see lowpower.checkpoint)."""
    return {
        "arch": cfg["model"]["arch"],
        "arch_kwargs": dict(cfg["model"]["kwargs"], num_classes=cfg["data"]["num_classes"]),
        "model": {name: value.contiguous() for name, value in model.state_dict().items()},
        "config": cfg,
        "epoch": epoch,
        "step_in_epoch": step,
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict(),
        "best_mean_dice": best,
        "metrics": metrics,
        "history": history,
        "classes": list(class_names(cfg)),
        "mean": list(IMAGENET_MEAN),
        "std": list(IMAGENET_STD),
        "input_size": cfg["data"]["input_size"],
    }


def validate(model, val_loader, info, cfg, progress):
    """Referee-rule scores of the split, summed over ranks; logs the per-class table."""
    if info.distributed:
        # Ranks drift apart in BatchNorm statistics between broadcasts; score rank 0's weights,
        # the ones the checkpoint holds.
        for buffer in model.buffers():
            torch.distributed.broadcast(buffer, 0)
    meter = evaluate(model, val_loader, info.device, cfg["data"]["num_classes"],
                     amp=cfg["train"]["amp"], progress=progress, channels_last=cfg["train"]["channels_last"],
                     min_class_area=cfg["eval"]["min_class_area"])
    return meter.summary()


def write_outputs(out, history, cfg):
    (out / "history.json").write_text(json.dumps(history, indent=1))
    plot_curves(history, out / "curves.png", title="%s on %s" % (cfg["model"]["arch"], cfg["data"]["dataset"]))


def run(args):
    """Train as ``args`` (from :func:`parse_args`) says; returns the process exit status."""
    cfg_name = Path(args.cfg).stem if args.cfg else None
    out = Path(args.out) if args.out else None
    if out is None and args.resume and args.resume != "auto":
        out = Path(args.resume).parent
    if out is None:
        if cfg_name is None:
            raise ConfigError("give --out DIR or --cfg FILE")
        out = REPO_ROOT / "runs" / cfg_name
    resume_path = resolve_resume(args, out)
    resume_state = load_checkpoint(resume_path) if resume_path else None
    cfg = resolve_config(args, resume_state)

    info = distributed.init_distributed_mode(cfg["train"]["device"])
    is_main = info.rank == 0
    progress = is_main and not args.no_progress
    if is_main:
        out.mkdir(parents=True, exist_ok=True)
    distributed.barrier()
    setup_logging(out, is_main)
    if cfg["train"]["threads"]:
        torch.set_num_threads(cfg["train"]["threads"])
    if is_main:
        save_config(cfg, out / "config.yaml")
        ensure_synthetic(cfg, LOG.info)
    distributed.barrier()

    torch.manual_seed(cfg["train"]["seed"])
    model = make_model(cfg, load_pretrained=is_main).to(info.device)
    if cfg["train"]["channels_last"]:
        model = model.to(memory_format=torch.channels_last)
    if info.distributed and cfg["train"]["sync_bn"]:
        if info.device.type == "cuda":
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        else:  # SyncBatchNorm has no CPU kernel: it would fail on the first training step
            LOG.warning("train.sync_bn ignored on CPU: each process keeps its own BatchNorm statistics")
    train_set, train_loader, val_loader = make_loaders(cfg, info, progress)
    criterion = make_criterion(cfg, train_set, info.device)
    optimizer = build_optimizer(model, cfg["train"])
    steps_per_epoch = len(train_loader.sampler) // cfg["train"]["batch_size"]
    total_steps = steps_per_epoch * cfg["train"]["epochs"]
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, poly_with_warmup(total_steps, cfg["train"]["warmup_iters"], cfg["train"]["poly_power"]))
    scaler = torch.amp.GradScaler(info.device.type, enabled=cfg["train"]["amp"] and info.device.type == "cuda")

    start_epoch, start_step, best, history, metrics = 0, 0, -1.0, [], {}
    if resume_state is not None:
        model.load_state_dict(resume_state["model"])
        optimizer.load_state_dict(resume_state["optimizer"])
        scheduler.load_state_dict(resume_state["scheduler"])
        scaler.load_state_dict(resume_state["scaler"])
        start_epoch = resume_state["epoch"]
        start_step = resume_state.get("step_in_epoch", 0)
        best = resume_state.get("best_mean_dice", -1.0)
        history = list(resume_state.get("history", []))
        metrics = resume_state.get("metrics", {})
        LOG.info("resumed from %s: %d epochs done%s", resume_path, start_epoch,
                 " and %d steps of the next" % start_step if start_step else "")
    model_without_ddp = model
    if info.distributed:
        model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[info.local_rank] if info.device.type == "cuda" else None)

    parameters = sum(p.numel() for p in model_without_ddp.parameters())
    LOG.info("run folder %s | %s (%.2f M parameters) | %d train, %d val images | %d process(es) on %s | "
             "%d steps per epoch, %d epochs", out, cfg["model"]["arch"], parameters / 1e6, len(train_set),
             len(val_loader.dataset), info.world_size, info.device, steps_per_epoch, cfg["train"]["epochs"])

    stop = StopFlag().install()
    last_summary = None
    epochs = cfg["train"]["epochs"]
    started = time.time()

    def save(name, epoch, step):
        if is_main:
            save_checkpoint(checkpoint_state(cfg, model_without_ddp, optimizer, scheduler, scaler, epoch,
                                             step, best, metrics, history), out / name)

    for epoch in range(start_epoch, epochs):
        skip = start_step if epoch == start_epoch else 0
        train_loader.sampler.set_position(epoch, skip * cfg["train"]["batch_size"])
        torch.manual_seed(cfg["train"]["seed"] * 100003 + epoch * 1009 + info.rank + skip)
        loss, steps, stopped = train_one_epoch(
            model, train_loader, criterion, optimizer, scheduler, scaler, info.device, epoch, stop,
            clip_grad=cfg["train"]["clip_grad"], amp=cfg["train"]["amp"], progress=progress,
            total_steps=steps_per_epoch - skip, channels_last=cfg["train"]["channels_last"])
        loss = distributed.all_reduce_mean(loss)
        if stopped:
            save("last.pt", epoch, skip + steps)
            distributed.barrier()  # no rank exits (and makes torchrun stop the others) before the save
            LOG.info("%s received: saved %s at epoch %d step %d; continue with --resume auto --out %s",
                     stop.signal_name or "stop", out / "last.pt", epoch + 1, skip + steps, out)
            distributed.cleanup()
            return EXIT_STOPPED
        record = {"epoch": epoch + 1, "loss": loss, "seconds": round(time.time() - started, 1)}
        if (epoch + 1) % cfg["train"]["val_every"] == 0 or epoch + 1 == epochs:
            summary = last_summary = validate(model_without_ddp, val_loader, info, cfg, progress)
            metrics = summary_metrics(summary)
            record.update(mean_dice=metrics["mean_dice"], miou=metrics["miou"])
            score = -1.0 if math.isnan(metrics["mean_dice"]) else metrics["mean_dice"]
            improved = score > best
            if improved:
                best = score
            LOG.info("epoch %d/%d  loss %.4f  val mean Dice %.4f  mIoU %.4f%s  (%.0f s)", epoch + 1, epochs,
                     loss, metrics["mean_dice"], metrics["miou"], "  best" if improved else "",
                     time.time() - started)
            history.append(record)
            if improved:
                save("best.pt", epoch + 1, 0)
        else:
            history.append(record)
            LOG.info("epoch %d/%d  loss %.4f  (%.0f s)", epoch + 1, epochs, loss, time.time() - started)
        save("last.pt", epoch + 1, 0)
        if is_main:
            write_outputs(out, history, cfg)
        if distributed.any_process(stop.requested):
            LOG.info("%s received after epoch %d: last.pt is saved; continue with --resume auto --out %s",
                     stop.signal_name or "stop", epoch + 1, out)
            distributed.cleanup()
            return EXIT_STOPPED
    if start_epoch >= epochs:
        LOG.info("nothing to do: the checkpoint already finished %d epochs", epochs)
    if last_summary is not None:
        LOG.info("validation after the last epoch (val split, %d images):\n%s", last_summary["images"],
                 format_table(last_summary, class_names(cfg)))
    if is_main and history:
        LOG.info("best val mean Dice %.4f; outputs in %s (best.pt, last.pt, config.yaml, curves.png, log.txt)",
                 best, out)
    distributed.cleanup()
    return 0


def main(argv=None):
    args = parse_args(argv)
    try:
        return run(args)
    except (ConfigError, DataError, FileNotFoundError) as error:
        print("train.py: error: %s" % error, file=sys.stderr)
        return 2
