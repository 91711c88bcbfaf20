"""Training and evaluation loops, optimiser and schedule (the samplers that make resume exact are in
``lowpower.data.samplers``).

Example:
    >>> loss, steps, stopped = train_one_epoch(model, loader, criterion, optimizer, scheduler,
    ...                                        scaler, torch.device("cpu"), epoch=0)  # doctest: +SKIP
    >>> meter = evaluate(model, val_loader, torch.device("cpu"), num_classes=14)     # doctest: +SKIP
    >>> meter.summary()["mean_dice"]                                                  # doctest: +SKIP
"""
import math
import signal
import sys

import torch
from tqdm import tqdm

from evaluation.metrics import SegmentationMeter
from lowpower.train.aux_loss import split_outputs
from lowpower.train.distributed import all_reduce_arrays, any_process
from solution.postprocess import segment


class StopFlag:
    """Set by SIGTERM (a cluster's walltime) or SIGINT so the loop can save ``last.pt`` and exit."""

    def __init__(self):
        self.requested = False
        self.signal_name = None

    def install(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C means now
        self.requested = True
        self.signal_name = signal.Signals(signum).name


def build_optimizer(model, train_cfg):
    """SGD (momentum, nesterov off) or AdamW over the model's parameters; no decay on norms/biases."""
    decay, no_decay = [], []
    for param in model.parameters():
        if param.requires_grad:
            (no_decay if param.ndim <= 1 else decay).append(param)
    groups = [{"params": decay, "weight_decay": train_cfg["weight_decay"]},
              {"params": no_decay, "weight_decay": 0.0}]
    if train_cfg["optimizer"] == "adamw":
        return torch.optim.AdamW(groups, lr=train_cfg["lr"])
    return torch.optim.SGD(groups, lr=train_cfg["lr"], momentum=train_cfg["momentum"])


def poly_with_warmup(total_steps, warmup_steps, power):
    """LambdaLR factor: linear from 0.01 to 1 over the warm-up, then (1 - step/total) ** power.

    Example:
        >>> f = poly_with_warmup(100, 10, 1.0)
        >>> round(f(0), 3), f(10), round(f(55), 2), f(100)
        (0.01, 0.9, 0.45, 0.0)
    """
    warmup_steps = min(warmup_steps, max(total_steps - 1, 0))

    def factor(step):
        decay = max(0.0, 1.0 - step / max(1, total_steps)) ** power
        if step < warmup_steps:
            return decay * (0.01 + 0.99 * step / warmup_steps)
        return decay

    return factor


def cpu_has_fast_bf16():
    """True when this CPU computes bfloat16 natively (AVX512-BF16 or AMX), where bf16 autocast
    roughly halves convolution time; elsewhere it would emulate bf16 and be slower."""
    cpu = getattr(torch, "cpu", None)
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(cpu, name, lambda: False)() for name in checks)


def amp_dtype(device, enabled):
    """The autocast dtype mixed precision uses on ``device``, or None when it stays fp32.

    fp16 on CUDA; bf16 on a CPU with native bf16 (bf16 keeps fp32's range, so no loss scaling).
    """
    if not enabled:
        return None
    if device.type == "cuda":
        return torch.float16
    if device.type == "cpu" and cpu_has_fast_bf16():
        return torch.bfloat16
    return None


def autocast(device, enabled):
    """Mixed-precision context for ``device`` (see :func:`amp_dtype`); a no-op when fp32."""
    dtype = amp_dtype(device, enabled)
    return torch.autocast(device_type=device.type, dtype=dtype or torch.float32, enabled=dtype is not None)


def train_one_epoch(model, loader, criterion, optimizer, scheduler, scaler, device, epoch,
                    stop=None, clip_grad=None, amp=False, progress=True, total_steps=None,
                    channels_last=False, step_offset=0, extra_loss=None, aux_loss=None, terms=None):
    """One pass over ``loader``; stops early (after a whole step) when ``stop`` is requested.

    ``extra_loss(images, logits, masks)``, when given, is added to the criterion's loss (the
    distillation terms of :class:`lowpower.train.distill.Distiller`); so is ``aux_loss(aux, masks)``, on
    the auxiliary outputs the network returns beside its logits (:mod:`lowpower.train.aux_loss`).

    ``terms``, when a dict, gets each step's loss terms added to running sums under their names (the
    criterion's and the aux loss's ``terms``: "ce", "dice", "aux/<head>" ...) and "steps" counted up,
    for :func:`lowpower.train.tensorboard_log.epoch_term_means`. The distillation terms stay in the
    Distiller's own sums (``Distiller.epoch_record``).

    Raises:
        FloatingPointError: the loss is NaN or infinite (the message names the epoch and step).

    Returns:
        (mean loss over the steps taken, steps taken, stopped early)
    """
    model.train()
    loss_sum, steps = 0.0, 0
    bar = tqdm(loader, desc="epoch %d" % (epoch + 1), unit="step", total=total_steps,
               disable=not progress, file=sys.stderr, leave=False, dynamic_ncols=True)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    for images, masks in bar:
        images = images.to(device, non_blocking=True, memory_format=memory_format)
        masks = masks.to(device, non_blocking=True)
        with autocast(device, amp):
            logits, aux = split_outputs(model(images))
            loss = criterion(logits, masks)
            step_terms = dict(getattr(criterion, "terms", {}))  # read now: the aux heads call the criterion too
            if aux_loss is not None:
                loss = loss + aux_loss(aux, masks)
                step_terms.update(getattr(aux_loss, "terms", {}))
            if extra_loss is not None:
                loss = loss + extra_loss(images, logits, masks)
        if not math.isfinite(loss.item()):
            raise FloatingPointError("loss is %s at epoch %d step %d: lower train.lr, set train.clip_grad, "
                                     "or check the data (lowpower data check DATA_ROOT)"
                                     % (loss.item(), epoch + 1, step_offset + steps + 1))
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if clip_grad:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad)
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        loss_sum += loss.item()
        steps += 1
        if terms is not None:
            add_terms(terms, step_terms)
        bar.set_postfix(loss="%.4f" % (loss_sum / steps), lr="%.2e" % optimizer.param_groups[0]["lr"])
        if any_process(stop is not None and stop.requested):
            bar.close()
            return loss_sum / steps, steps, True
    bar.close()
    return (loss_sum / steps if steps else float("nan")), steps, False


def add_terms(sums, step_terms):
    """Add one step's ``{name: 0-d tensor}`` into the running ``sums`` and count the step.

    Example:
        >>> sums = {}; add_terms(sums, {"ce": torch.tensor(0.5)}); add_terms(sums, {"ce": torch.tensor(0.25)})
        >>> sums
        {'ce': 0.75, 'steps': 2}
    """
    for name, value in step_terms.items():
        sums[name] = sums.get(name, 0.0) + float(value)
    sums["steps"] = sums.get("steps", 0) + 1


def predict_masks(logits, size, min_class_area=0.0):
    """uint8 class ids at ``size`` (H, W): bilinear upsampling of the logits, then argmax.

    With ``min_class_area`` > 0, classes covering less than that share of an image are dropped
    after upsampling, by the packaged solution's own code (``solution.postprocess.segment``).

    Example:
        >>> predict_masks(torch.zeros(1, 14, 8, 8), (16, 16)).shape
        torch.Size([1, 16, 16])
    """
    return segment(logits.float(), size, min_class_area)


def summary_metrics(summary):
    """Plain-number validation record (JSON- and weights_only-safe)."""
    return {
        "mean_dice": float(summary["mean_dice"]),
        "miou": float(summary["miou"]),
        "per_class_dice": [float(v) for v in summary["per_class_dice"]],
        "per_class_iou": [float(v) for v in summary["per_class_iou"]],
        "images": int(summary["images"]),
        "confusion_matrix": summary["confusion_matrix"].tolist(),
    }


@torch.no_grad()
def evaluate(model, loader, device, num_classes, amp=False, progress=False, channels_last=False,
             on_batch=None, min_class_area=0.0):
    """Score a model on a loader of (image, mask) batches with the referee's rules.

    Logits are upsampled to each mask's size (the referee's 512 for LPCVC) before the argmax.
    Under torchrun every rank scores its shard and the accumulators are summed, so every rank
    returns the same totals.

    ``on_batch(predictions, masks)``, when given, sees every batch as (N, H, W) numpy arrays.

    Returns:
        a :class:`evaluation.metrics.SegmentationMeter` holding the whole split.
    """
    model.eval()
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    meter = SegmentationMeter(num_classes)
    for images, masks in tqdm(loader, desc="validate", unit="batch", disable=not progress,
                              file=sys.stderr, leave=False, dynamic_ncols=True):
        with autocast(device, amp):
            logits = model(images.to(device, non_blocking=True, memory_format=memory_format))
        preds = predict_masks(logits, masks.shape[-2:], min_class_area).cpu().numpy()
        meter.update_batch(masks.numpy(), preds)
        if on_batch is not None:
            on_batch(preds, masks.numpy())
    return SegmentationMeter.from_state(all_reduce_arrays(meter.state()))


def validate_ranks(model, loader, device, cfg, distributed=False, progress=False):
    """Referee-rule scores of a run config's validation split, summed over the ranks.

    Args:
        model: the unwrapped model.
        loader: this rank's shard of the split (``lowpower.data.samplers.ShardSampler``).
        device: where the model is.
        cfg: resolved run config (num_classes, amp, channels_last, min_class_area).
        distributed: under torchrun; rank 0's BatchNorm buffers are broadcast first.
        progress: a bar over the batches.

    Returns:
        the meter's summary dict (mean_dice, miou, per-class scores, confusion matrix, images).
    """
    if distributed:
        # Ranks drift apart in BatchNorm statistics between broadcasts; score rank 0's weights,
        # the ones the checkpoint holds.
        for buffer in model.buffers():
            torch.distributed.broadcast(buffer, 0)
    meter = evaluate(model, loader, device, cfg["data"]["num_classes"], amp=cfg["train"]["amp"], progress=progress,
                     channels_last=cfg["train"]["channels_last"], min_class_area=cfg["eval"]["min_class_area"])
    return meter.summary()
