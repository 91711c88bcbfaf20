"""TensorBoard log of a training run (``train.tensorboard``), in ``OUT/tensorboard``.

Every epoch: ``loss/total``, each loss term (``loss/ce``, ``loss/dice``, ``loss/aux/<head>``, the distiller's
``loss/kd_loss`` ...), ``lr``, ``seconds``; after a validation ``val/mean_dice``, ``val/miou``, ``val_class/<name>``
and prediction panels (:mod:`lowpower.train.panels`). Only rank 0 writes; with the key off nothing imports
tensorboard. View with ``tensorboard --logdir OUT/tensorboard``.

Example:
    >>> log = TensorBoardLog.from_config(cfg, Path("runs/demo"), is_main=True)  # doctest: +SKIP
    >>> log.log_epoch(1, {"epoch": 1, "loss": 0.9, "loss/ce": 0.7, "loss/dice": 0.2}, lr=0.01)  # doctest: +SKIP
    >>> log.close()  # doctest: +SKIP
"""
import numbers

import torch
import torch.nn.functional as F

from lowpower.data.build import class_names
from lowpower.data.transforms import denormalize
from lowpower.train.distributed import all_reduce_mean
from lowpower.train.engine import autocast, predict_masks
from lowpower.train.panels import compose_panel

FOLDER = "tensorboard"


def epoch_term_means(terms):
    """``{"loss/<name>": mean per step}`` from :func:`lowpower.train.engine.train_one_epoch`'s ``terms`` sums,
    averaged over the processes under torchrun (``all_reduce_mean``, one collective per term in sorted
    order: every rank must call it, with the same names). Empty when no step was counted.

    Example:
        >>> epoch_term_means({"ce": 1.5, "dice": 0.5, "steps": 2})
        {'loss/ce': 0.75, 'loss/dice': 0.25}
    """
    steps, names = terms.get("steps", 0), sorted(name for name in terms if name != "steps")
    return {"loss/%s" % name: all_reduce_mean(terms[name] / steps) for name in names} if steps else {}


def loss_scalars(record):
    """The loss curves of an epoch record: ``loss/total``, its ``loss/...`` terms, and the distiller's
    ``*_loss`` means (``Distiller.epoch_record``) as ``loss/<key>``.

    Example:
        >>> loss_scalars({"epoch": 1, "loss": 1.0, "loss/ce": 0.8, "kd_loss": 0.2, "mean_dice": 0.5})
        {'loss/total': 1.0, 'loss/ce': 0.8, 'loss/kd_loss': 0.2}
    """
    scalars = {"loss/total": record["loss"]} if "loss" in record else {}
    for key, value in record.items():
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            if key.startswith("loss/"):
                scalars[key] = value
            elif key.endswith("_loss"):
                scalars["loss/" + key] = value
    return scalars


class TensorBoardLog:
    """A ``SummaryWriter`` on ``OUT/tensorboard`` and what a training run writes to it.

    Args:
        folder: the event files' folder.
        names: class names, indexed by class id (per-class scalars and the panels' legend).
        purge_step: a resumed run's first new epoch; TensorBoard hides what the earlier run wrote from
            there on, so the curves do not double back. None: a fresh run.
    """

    def __init__(self, folder, names=(), purge_step=None):
        # tensorboard is the heavy dependency: only a run with train.tensorboard on imports it
        from torch.utils.tensorboard import SummaryWriter

        self.folder, self.names = folder, tuple(names)
        self.writer = SummaryWriter(log_dir=str(folder), purge_step=purge_step)

    @classmethod
    def from_config(cls, cfg, out, is_main, start_epoch=0):
        """The run's log, or None when ``train.tensorboard`` is off or this is not rank 0.

        Args:
            cfg: resolved run config.
            out: the run folder (a Path); events go to ``out / "tensorboard"``.
            is_main: rank 0.
            start_epoch: epochs already done (a resume); later entries of the earlier run are hidden.

        Example:
            >>> TensorBoardLog.from_config({"train": {"tensorboard": False}}, Path("runs/x"), True) is None
            True
        """
        if not (cfg["train"]["tensorboard"] and is_main):
            return None
        return cls(out / FOLDER, class_names(cfg), purge_step=start_epoch + 1 if start_epoch else None)

    def log_epoch(self, epoch, record, lr, metrics=None):
        """One epoch's scalars at step ``epoch`` (the record's 1-based ``epoch``), then a flush.

        Args:
            epoch: the step (epochs done).
            record: the trainer's epoch record: ``loss``, ``loss/<term>`` means, the distiller's
                ``*_loss``, ``seconds`` and, after a validation, ``mean_dice`` and ``miou``.
            lr: the learning rate (``optimizer.param_groups[0]["lr"]``).
            metrics: the validation's :func:`lowpower.train.engine.summary_metrics`, for the per-class Dice
                (its mean_dice / miou win over the record's); None when the epoch did not validate.
        """
        scalars, values = dict(loss_scalars(record), lr=lr), dict(record, **(metrics or {}))
        for key, tag in (("seconds", "seconds"), ("mean_dice", "val/mean_dice"), ("miou", "val/miou")):
            if key in values:
                scalars[tag] = values[key]
        for name, dice in zip(self.names, values.get("per_class_dice", ())):
            scalars["val_class/" + name] = dice
        for tag, value in scalars.items():
            self.writer.add_scalar(tag, float(value), epoch)
        self.writer.flush()  # a run killed later keeps this epoch

    def log_panels(self, epoch, model, loader, device, cfg, count=4):
        """Prediction panels of the first ``count`` images of ``loader`` as images ``panels/<i>`` at step ``epoch``.

        Args:
            epoch: the step (epochs done).
            model: the bare model (not the DDP wrapper, whose forward would wait for the other ranks);
                it runs in eval mode without gradients, and gets its training mode back.
            loader: the validation loader: (normalised image, referee-sized mask) batches.
            device: where the model is; count: panels to draw.
            cfg: resolved run config (``train.amp``, ``eval.min_class_area``).
        """
        was_training, drawn = model.training, 0
        model.eval()
        try:
            with torch.no_grad():
                for images, masks in loader:
                    images, masks = images[:count - drawn], masks[:count - drawn]
                    with autocast(device, cfg["train"]["amp"]):
                        logits = model(images.to(device))
                    predictions = predict_masks(logits, masks.shape[-2:], cfg["eval"]["min_class_area"]).cpu()
                    # the panel's tiles share the mask's size; the model saw the image at data.input_size
                    shown = F.interpolate(images.float(), size=masks.shape[-2:], mode="bilinear", align_corners=False)
                    for image, mask, prediction in zip(shown, masks.numpy(), predictions.numpy()):
                        panel = compose_panel(denormalize(image), mask, prediction, self.names)
                        self.writer.add_image("panels/%d" % drawn, panel, epoch, dataformats="HWC")
                        drawn += 1
                    if drawn >= count:
                        break
        finally:
            model.train(was_training)
        self.writer.flush()

    def close(self):
        """Flush and close the event file (a run's last call)."""
        self.writer.close()
