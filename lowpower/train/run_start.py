"""The start of a training run before its model exists: processes, run folder, logging, threads,
config.yaml, stale temporary files, synthetic data and the data check (every rank calls these).

Example:
    >>> info = setup(args, cfg, folder)          # doctest: +SKIP
    >>> check_data(cfg, info, progress=True)     # doctest: +SKIP
"""
import logging

import torch

from lowpower import checkpoint as ckpt
from lowpower.config import ConfigError, save_config
from lowpower.data import DataError
from lowpower.data.build import data_root, ensure_synthetic, validates_on_train
from lowpower.data.check import check_dataset, require_no_problems
from lowpower.train import distributed
from lowpower.train.run_config import setup_logging

LOG = logging.getLogger("lowpower.train.trainer")  # one log for the whole run (log.txt)


def on_rank0(work, info):
    """Run ``work()`` on rank 0 alone; if it fails, every rank raises (none waits at a barrier)."""
    error = None
    if info.rank == 0:
        try:
            work()
        except (ConfigError, DataError) as caught:
            error = caught
    if distributed.any_process(error is not None):
        raise error or DataError("rank 0 stopped the run; see its log")


def setup(args, cfg, folder):
    """Processes, run folder, logging, threads, config.yaml, stale temp files, synthetic data.

    Every process has planned ``folder`` (a :class:`~lowpower.train.run_config.RunFolder`) before
    the process group forms, so rank 0 alone claims it (moving an earlier run aside under --force).
    """
    info = distributed.init_distributed_mode(cfg["train"]["device"])
    out = folder.out
    if info.rank == 0:
        folder.claim()
    distributed.barrier()
    setup_logging(LOG, out, info.rank == 0)
    if folder.moved:
        LOG.info("--force: moved the earlier run in %s aside to %s (nothing deleted)", out, folder.aside)
    if cfg["train"]["threads"]:
        torch.set_num_threads(cfg["train"]["threads"])
    if info.rank == 0:
        save_config(cfg, out / "config.yaml")
        # A save killed between its write and its rename leaves NAME.pt.<random>.tmp; only rank 0
        # saves, and not yet, so anything matching is garbage from an earlier job.
        for path in ckpt.remove_stale_temps(out):
            LOG.info("removed %s, a stale temporary file of a save that was killed", path.name)
    on_rank0(lambda: ensure_synthetic(cfg, LOG.info, progress=not args.no_progress), info)
    return info


def check_data(cfg, info, progress):
    """Without the cache no file is read before it is needed, so a corrupt validation image would
    surface only after a whole epoch: read every train and val file once now, and list every problem.
    With ``data.cache`` the caching reads every file at start-up anyway. First of all, validation
    on the training images is refused unless ``data.val_on_train``."""

    def work():
        root = data_root(cfg)
        if validates_on_train(cfg, root):  # refused unless data.val_on_train says it is meant
            LOG.warning("data.val_on_train: validating on the training images of %s; the val score will not "
                        "measure new images", root)
        if cfg["data"]["cache"]:  # caching reads every file at start-up anyway
            return
        report = check_dataset(root, cfg["data"]["dataset"], cfg["data"]["num_classes"],
                               splits=("train", "val"), progress=progress)
        require_no_problems(report)
        LOG.info("data check: %s pairs read, no problems; pixel share per class:\n%s",
                 " + ".join("%d %s" % (n, split) for split, n in report.pairs.items()), report.share_table())
    on_rank0(work, info)
