"""train.py: train a network from a YAML config, on one CPU/GPU or many under torchrun.

    python train.py --cfg configs/synthetic/demo.yaml --out runs/demo
    python train.py --cfg configs/synthetic/demo.yaml --set train.epochs=1 train.lr=1e-3 --set data.workers=0
    torchrun --nproc_per_node=4 train.py --cfg configs/lpcvc/deeplabv3_r18_512.yaml
    python train.py --cfg ... --out runs/x --resume auto          # continue runs/x/last.pt if any
    python train.py --cfg ... --out runs/x --force                # runs/x holds a run: move it to runs/x.old-<time>

Writes ``OUT/config.yaml`` (the resolved config), ``OUT/log.txt``, ``OUT/last.pt`` (every epoch
and on SIGTERM), ``OUT/best.pt`` (best validation mean Dice), ``OUT/history.json`` and
``OUT/curves.png``. ``train.batch_size`` is per process: the global batch is
batch_size x processes, and ``train.lr`` is not rescaled for you. A run stopped mid-epoch and
resumed ends with the same weights, bit for bit, as one that ran straight through.
With ``data.cache: false`` every file is read once before the first epoch
(``lowpower data check`` does the same by hand).

An OUT that holds an earlier run is refused unless ``--resume`` continues it or ``--force`` moves it
aside (to ``OUT.old-<date>-<time>``; nothing is deleted). A run that fails before its first
checkpoint removes what it made: the folder when it created it, else its config.yaml and log.txt.
"""
import argparse
import json
import logging
import math
import sys
import time

import torch

from evaluation.metrics import format_table
from lowpower import checkpoint as ckpt
from lowpower.compress.quantize import fixed_point_train, qat
from lowpower.config import ConfigError
from lowpower.data import DataError
from lowpower.data.build import build_loaders, class_names
from lowpower.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from lowpower.safe import UserError
from lowpower.safe.write import add_force_argument
from lowpower.train import distributed, sync_bn
from lowpower.train.aux_loss import AuxiliaryLoss, unused_heads
from lowpower.train.distill import build_distiller, check_distill_config
from lowpower.train.ema import WeightAverage
from lowpower.train.engine import (
    StopFlag,
    build_optimizer,
    poly_with_warmup,
    summary_metrics,
    train_one_epoch,
    validate_ranks,
)
from lowpower.train.init_from import model_from_config
from lowpower.train.losses import criterion_from_config
from lowpower.train.plots import plot_curves
from lowpower.train.run_config import (
    FORCE_HELP,
    close_log_file,
    plan_run_folder,
    resolve_config,
    resolve_resume,
    run_folder,
    weight_inputs,
)
from lowpower.train.run_start import check_data, setup
from lowpower.train.tensorboard_log import TensorBoardLog, epoch_term_means

LOG = logging.getLogger("lowpower.train.trainer")
EXIT_STOPPED = 143  # 128 + SIGTERM: the job ended early but saved last.pt


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="train.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cfg", help="YAML run config (see configs/ and the config reference in docs/training.md); "
                                      "optional with --resume, which then reuses the checkpoint's config")
    parser.add_argument("--set", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                        help="overrides that win over the file, e.g. train.epochs=5 model.kwargs.base_width=8; "
                             "may be given several times (all apply, later ones win)")
    parser.add_argument("--out", help="run folder (default runs/<config name>); one that holds an earlier run is "
                                      "refused unless --resume continues it or --force moves it aside")
    parser.add_argument("--resume", metavar="CKPT",
                        help="continue from a checkpoint; 'auto' takes OUT/last.pt when it exists")
    add_force_argument(parser, help=FORCE_HELP)
    parser.add_argument("--override-config", action="store_true",
                        help="with --resume and --cfg: continue with the --cfg config although it differs from "
                             "the checkpoint's (without it train.py refuses and lists the keys that differ)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars (log lines only)")
    return parser.parse_args(argv)


def training_state(cfg, model, optimizer, scheduler, scaler, **counters):
    """The checkpoint dict of a training run (see ``lowpower.checkpoint`` for the keys).

    Args:
        cfg: resolved run config.
        model: the unwrapped model (no DDP ``module.`` prefix); a pruned one's width plan goes into
            ``arch_kwargs``.
        optimizer, scheduler, scaler: their ``state_dict()`` is stored.
        counters: epoch, step_in_epoch, epoch_loss, rng, best_mean_dice, metrics, history.

    Example:
        >>> save_checkpoint(training_state(cfg, model, opt, sched, scaler, epoch=3), "runs/x/last.pt")  # doctest: +SKIP
    """
    return dict({
        "arch": cfg["model"]["arch"],
        "arch_kwargs": dict(cfg["model"]["kwargs"], num_classes=cfg["data"]["num_classes"],
                            **ckpt.PRUNED.model_kwargs(model)),
        "model": {name: value.contiguous() for name, value in model.state_dict().items()},
        "config": cfg,
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict(),
        "classes": list(class_names(cfg)),
        "mean": list(IMAGENET_MEAN),
        "std": list(IMAGENET_STD),
        "input_size": cfg["data"]["input_size"],
    }, **counters)


class Run:
    """One training run: the config, its folder and processes, the model and its optimiser, the
    loaders and the counters that ``last.pt`` carries. Each method does one job.

    Example:
        >>> run = Run(load_config("configs/synthetic/demo.yaml"), Path("runs/demo"), info, True)  # doctest: +SKIP
        >>> run.build(); run.loop()                                                               # doctest: +SKIP
    """

    def __init__(self, cfg, out, info, progress):
        self.cfg, self.out, self.info, self.progress = cfg, out, info, progress
        self.is_main = info.rank == 0
        self.start_epoch, self.start_step, self.best, self.history, self.metrics = 0, 0, -1.0, [], {}
        self.rng, self.epoch_loss, self.terms, self.tensorboard = None, (0.0, 0), {}, None
        self.started = time.time()

    def build(self, fresh=True):
        """Model (DDP-wrapped later), loaders, loss, optimiser, schedule and loss scaler."""
        cfg, info = self.cfg, self.info
        torch.manual_seed(cfg["train"]["seed"])
        # Under torchrun only rank 0 reads pretrained weights: DDP copies rank 0's weights to every process.
        model = model_from_config(cfg, load_pretrained=self.is_main, log=LOG.info)
        model = qat.prepare_model(model, cfg, fresh, LOG.info)  # fake-quant int8 under quant.qat
        self.fixed_point = fixed_point_train.wrap(model, cfg, LOG.info)  # None unless quant.fixed_point
        model = (self.fixed_point.model if self.fixed_point else model).to(info.device)
        if cfg["train"]["channels_last"]:
            model = model.to(memory_format=torch.channels_last)
        if info.distributed and cfg["train"]["sync_bn"]:  # torch's SyncBatchNorm on CUDA, ours on the CPU
            model = sync_bn.convert_sync_batchnorm(model, info.device)
            LOG.info("train.sync_bn: %d BatchNorm layers synchronised across %d processes",
                     sync_bn.count_synchronised(model), info.world_size)
        self.model = self.model_without_ddp = model
        self.train_set, self.train_loader, self.val_loader = build_loaders(
            cfg, info.world_size, info.rank, pin_memory=info.device.type == "cuda", progress=self.progress)
        if fresh and self.fixed_point:  # a resumed run's ranges and steps come from its checkpoint
            fixed_point_train.calibrate(self.fixed_point, self.train_loader, cfg, info.device, LOG.info)
        self.criterion = criterion_from_config(cfg, self.train_set, info.device, LOG.info)
        self.aux_loss = AuxiliaryLoss.from_config(cfg, model, self.criterion)  # sets model.aux_outputs
        self.optimizer = build_optimizer(model, cfg["train"])
        self.ema = WeightAverage.from_config(cfg, model)  # None: train.ema off
        if self.ema is not None:
            self.ema.follow(self.optimizer)
        self.distiller = build_distiller(cfg, model, self.optimizer, info.device, LOG.info)  # None: no teacher
        self.steps_per_epoch = len(self.train_loader.sampler) // cfg["train"]["batch_size"]
        total_steps = self.steps_per_epoch * cfg["train"]["epochs"]
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, poly_with_warmup(
            total_steps, cfg["train"]["warmup_iters"], cfg["train"]["poly_power"]))
        self.scaler = torch.amp.GradScaler(info.device.type,
                                           enabled=cfg["train"]["amp"] and info.device.type == "cuda")

    def resume(self, state, path):
        """Load a checkpoint's weights, optimiser, schedule, counters and random states."""
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            if self.distiller is not None and state.get("distill"):  # adapters and the epoch's term sums
                self.distiller.load_state_dict(state["distill"])
        except (RuntimeError, ValueError, KeyError) as error:
            detail = [line.strip() for line in str(error).splitlines() if line.strip()]
            raise ConfigError("the weights in %s do not fit the configured model or optimiser (%s); with "
                              "--override-config change only keys that keep them (epochs, lr, data, ...)"
                              % (path, detail[-1][:200] if detail else type(error).__name__)) from None
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        if self.ema is not None and state.get("ema"):
            self.ema.load_state_dict(state["ema"])
        elif self.ema is not None:  # train.ema turned on with --override-config: the average starts now
            LOG.info("train.ema: %s holds no average; it starts from the resumed weights", path)
        self.start_epoch, self.start_step = state["epoch"], state.get("step_in_epoch", 0)
        self.best, self.metrics = state.get("best_mean_dice", -1.0), state.get("metrics", {})
        self.history = list(state.get("history", []))
        self.epoch_loss = tuple(state.get("epoch_loss", (0.0, 0)))
        self.terms = dict(state.get("epoch_terms") or {})  # the stopped epoch's loss-term sums
        rng = state.get("rng") or []
        if len(rng) == self.info.world_size:
            self.rng = rng[self.info.rank]
        elif self.start_step:
            LOG.warning("%s holds random states for %d process(es), not %d: the rest of epoch %d is reseeded, "
                        "so it will not repeat an uninterrupted run exactly", path, len(rng),
                        self.info.world_size, self.start_epoch + 1)
        LOG.info("resumed from %s: %d epochs done%s", path, self.start_epoch,
                 " and %d steps of the next" % self.start_step if self.start_step else "")

    @property
    def scored_model(self):
        """The weights that validation scores and ``best.pt`` holds: the EMA's under train.ema."""
        return self.model_without_ddp if self.ema is None else self.ema.module

    def save(self, name, epoch, step, epoch_loss=(0.0, 0)):
        """Every rank's random states, then rank 0 writes ``OUT/name`` (all ranks must call it).

        ``last.pt`` holds the raw weights and the EMA beside them; ``best.pt`` the scored weights."""
        rng = distributed.all_gather_objects(ckpt.capture_rng_state())
        distill = self.distiller.state_dict() if self.distiller is not None else None  # a collective: all ranks
        if self.is_main:
            model = self.scored_model if name == "best.pt" else self.model_without_ddp
            state = training_state(
                self.cfg, model, self.optimizer, self.scheduler, self.scaler, epoch=epoch,
                step_in_epoch=step, epoch_loss=[float(epoch_loss[0]), int(epoch_loss[1])], rng=rng,
                best_mean_dice=self.best, metrics=self.metrics, history=self.history, distill=distill,
                epoch_terms=dict(self.terms) if step else {},
                ema=self.ema.state_dict() if self.ema is not None else None)
            ckpt.save_checkpoint(state, self.out / name)

    def train_epoch(self, epoch, stop):
        """Train one epoch (its rest, when resumed inside it); returns (mean loss, stopped)."""
        train = self.cfg["train"]
        skip = self.start_step if epoch == self.start_epoch else 0
        self.train_loader.sampler.set_position(epoch, skip * train["batch_size"])
        if skip and self.rng is not None:
            ckpt.restore_rng_state(self.rng)  # exactly where the stopped run was, after its step `skip`
        else:  # a function of (seed, epoch, rank), so a resume at an epoch boundary needs no saved state
            torch.manual_seed(train["seed"] * 100003 + epoch * 1009 + self.info.rank)
        qat.start_epoch(self.model_without_ddp, self.cfg, epoch, LOG.info)  # freezes observers / BN when due
        done_sum, done_steps = self.epoch_loss if skip else (0.0, 0)
        self.terms = self.terms if skip else {}
        loss, steps, stopped = train_one_epoch(
            self.model, self.train_loader, self.criterion, self.optimizer, self.scheduler, self.scaler,
            self.info.device, epoch, stop, clip_grad=train["clip_grad"], amp=train["amp"], progress=self.progress,
            total_steps=self.steps_per_epoch - skip, channels_last=train["channels_last"], step_offset=skip,
            extra_loss=self.distiller, aux_loss=self.aux_loss, terms=self.terms)
        loss_sum = done_sum + (distributed.all_reduce_mean(loss) * steps if steps else 0.0)
        steps += done_steps
        if stopped:  # the running sum goes into last.pt, so the epoch's loss averages all of its steps
            self.save("last.pt", epoch, skip + steps - done_steps, epoch_loss=(loss_sum, steps))
        return (loss_sum / steps if steps else float("nan")), stopped

    def end_epoch(self, epoch, loss):
        """Validate when due, log, append to the history, save best.pt / last.pt and the curves."""
        cfg, epochs = self.cfg, self.cfg["train"]["epochs"]
        record = {"epoch": epoch + 1, "loss": loss, "seconds": round(time.time() - self.started, 1)}
        record.update(self.distiller.epoch_record(loss) if self.distiller is not None else {})
        record.update(epoch_term_means(self.terms))  # a collective: all ranks
        self.summary = None
        if (epoch + 1) % cfg["train"]["val_every"] == 0 or epoch + 1 == epochs:
            with qat.observers_paused(self.model_without_ddp):  # val images must not move int8 ranges
                self.summary = validate_ranks(self.scored_model, self.val_loader, self.info.device, cfg,
                                              self.info.distributed, self.progress)
            self.metrics = summary_metrics(self.summary)
            record.update(mean_dice=self.metrics["mean_dice"], miou=self.metrics["miou"])
            score = -1.0 if math.isnan(self.metrics["mean_dice"]) else self.metrics["mean_dice"]
            improved = score > self.best
            self.best = max(self.best, score)
            LOG.info("epoch %d/%d  loss %.4f  val mean Dice %.4f  mIoU %.4f%s  (%.0f s)", epoch + 1, epochs, loss,
                     self.metrics["mean_dice"], self.metrics["miou"], "  best" if improved else "",
                     time.time() - self.started)
            self.history.append(record)
            if improved:
                self.save("best.pt", epoch + 1, 0)
                if self.is_main:
                    qat.after_best(self.out, cfg, LOG.info)  # best_int8.pt under quant.qat
        else:
            self.history.append(record)
            LOG.info("epoch %d/%d  loss %.4f  (%.0f s)", epoch + 1, epochs, loss, time.time() - self.started)
        self.log_tensorboard(epoch, record)
        self.save("last.pt", epoch + 1, 0)
        if self.is_main:
            write_outputs(self.out, self.history, cfg)

    def log_tensorboard(self, epoch, record):
        """Scalars every epoch and, after a validation, panels of the scored model (rank 0 alone)."""
        if self.tensorboard is None:
            return
        validated = self.summary is not None
        self.tensorboard.log_epoch(epoch + 1, record, self.optimizer.param_groups[0]["lr"],
                                   metrics=self.metrics if validated else None)
        if validated:  # the bare model: a DDP wrapper's forward would wait for the other ranks
            with qat.observers_paused(self.model_without_ddp):
                self.tensorboard.log_panels(epoch + 1, self.scored_model, self.val_loader, self.info.device, self.cfg)

    def loop(self):
        """The epochs from the resume point on; returns the exit status (0, or EXIT_STOPPED)."""
        stop, last_summary, epochs = StopFlag().install(), None, self.cfg["train"]["epochs"]
        self.tensorboard = TensorBoardLog.from_config(self.cfg, self.out, self.is_main, start_epoch=self.start_epoch)
        try:
            return self.epochs(stop, last_summary, epochs)
        finally:
            if self.tensorboard is not None:
                self.tensorboard.close()

    def epochs(self, stop, last_summary, epochs):
        """The body of :meth:`loop`."""
        for epoch in range(self.start_epoch, epochs):
            loss, stopped = self.train_epoch(epoch, stop)
            if stopped:
                distributed.barrier()  # no rank exits (and makes torchrun stop the others) before the save
                LOG.info("%s received: saved %s in epoch %d; continue with --resume auto --out %s",
                         stop.signal_name or "stop", self.out / "last.pt", epoch + 1, self.out)
                return EXIT_STOPPED
            self.end_epoch(epoch, loss)
            last_summary = self.summary or last_summary
            if distributed.any_process(stop.requested):
                LOG.info("%s received after epoch %d: last.pt is saved; continue with --resume auto --out %s",
                         stop.signal_name or "stop", epoch + 1, self.out)
                return EXIT_STOPPED
        if self.start_epoch >= epochs:
            LOG.info("nothing to do: the checkpoint already finished %d epochs", epochs)
        if last_summary is not None:
            LOG.info("validation after the last epoch (val split, %d images):\n%s", last_summary["images"],
                     format_table(last_summary, class_names(self.cfg)))
        if self.history:
            LOG.info("best val mean Dice %.4f; outputs in %s (best.pt, last.pt, config.yaml, curves.png, log.txt)",
                     self.best, self.out)
        return 0


def write_outputs(out, history, cfg):
    (out / "history.json").write_text(json.dumps(history, indent=1))
    plot_curves(history, out / "curves.png", title="%s on %s" % (cfg["model"]["arch"], cfg["data"]["dataset"]))


def run(args):
    """Train as ``args`` (from :func:`parse_args`) says; returns the process exit status.

    A run that fails before its first checkpoint removes the files and folders it made (a folder that
    existed before stays) and moves a run that ``--force`` moved aside back.
    """
    out = run_folder(args)
    resume_path = resolve_resume(args, out)
    resume_state = ckpt.load_checkpoint(resume_path) if resume_path else None
    cfg, changed = resolve_config(args, resume_state, resume_path)
    qat.check_config(cfg, args.cfg or resume_path)
    check_distill_config(cfg)  # before minutes of data caching: the weights and the teacher file
    # every process plans before any writes (the process group forms only in setup), so all see one state
    folder = plan_run_folder(out, resume_path, args.force, auto=args.resume == "auto", inputs=weight_inputs(cfg))
    try:
        return train(args, cfg, folder, resume_state, resume_path, changed)
    except BaseException:
        if folder.claimed and not folder.has_checkpoint():
            close_log_file(LOG)
            folder.undo()
        raise


def train(args, cfg, folder, resume_state, resume_path, changed):
    """Set up, build, resume and loop: the part of :func:`run` after the run folder is planned."""
    out = folder.out
    info = setup(args, cfg, folder)
    progress = info.rank == 0 and not args.no_progress
    try:
        if resume_state is None:
            check_data(cfg, info, progress)
        session = Run(cfg, out, info, progress)
        session.build(fresh=resume_state is None)
        if resume_state is not None:
            if changed:
                LOG.info("--override-config: continuing %s with %s", resume_path, "; ".join(changed))
            session.resume(resume_state, resume_path)
        if info.distributed:
            # heads of weight 0 in loss.aux_weights get no gradient
            session.model = distributed.wrap_ddp(session.model, info, unused_heads(session.model_without_ddp))
        parameters = sum(p.numel() for p in session.model_without_ddp.parameters())
        LOG.info("run folder %s | %s (%.2f M parameters) | %d train, %d val images | %d process(es) on %s | "
                 "%d steps per epoch, %d epochs", out, cfg["model"]["arch"], parameters / 1e6, len(session.train_set),
                 len(session.val_loader.dataset), info.world_size, info.device, session.steps_per_epoch,
                 cfg["train"]["epochs"])
        return session.loop()
    finally:
        distributed.cleanup()


def main(argv=None):
    args = parse_args(argv)
    try:
        return run(args)
    except (ConfigError, DataError, UserError, FileNotFoundError, FloatingPointError) as error:
        print("train.py: error: %s" % error, file=sys.stderr)
        return 2
