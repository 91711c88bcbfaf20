"""Checkpoints that carry everything needed to rebuild, resume and package a model.

A checkpoint is a dict saved with ``torch.save``::

    arch, arch_kwargs      networks.create_model(arch, **arch_kwargs) rebuilds it
    model                  the unwrapped model's state dict
    config                 the resolved run config (nested dict, as written to config.yaml)
    epoch                  epochs completed
    optimizer, scheduler, scaler   training state for --resume (None when absent)
    best_mean_dice         best validation mean Dice so far
    metrics                validation summary at this epoch (mean_dice, miou, ...) or {}
    history                per-epoch records (loss, mean_dice, miou) for the curves
    classes, mean, std, input_size   what the packager writes into the manifest
    step_in_epoch, epoch_loss  mid-epoch position and the epoch's running loss sum / step count
    rng                    per-process random states (python, numpy, torch, CUDA) for exact resume
    distill                distillation adapters and the epoch's term sums (lowpower.train.distill), or None;
                           never packaged

Writes are atomic (temporary file in the same folder, then ``os.replace``) so a
job killed mid-save never leaves a truncated ``last.pt``.
"""
import os
import random
import tempfile
from pathlib import Path

import numpy as np
import torch

import networks

REQUIRED_KEYS = ("arch", "arch_kwargs", "model")
# The temporary names save_checkpoint writes (mkstemp: NAME.<random>.tmp) for the files train.py saves.
TEMP_PATTERNS = ("last.pt.*.tmp", "best.pt.*.tmp", "best_int8.pt.*.tmp")  # best_int8.pt: a QAT run's int8 copy


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read or is not ours; the message names the file."""


def save_checkpoint(state, path):
    """Write `state` to `path` atomically.

    Args:
        state: the checkpoint dict (see module docstring).
        path: destination file; its folder must exist.

    Example:
        >>> save_checkpoint({"arch": "unet", "arch_kwargs": {}, "model": m.state_dict()}, "runs/x/last.pt")
    """
    path = Path(path)
    handle, temp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(handle)
    try:
        torch.save(state, temp)
        os.replace(temp, path)
    finally:
        if os.path.exists(temp):
            os.remove(temp)


def load_checkpoint(path, map_location="cpu"):
    """Read a checkpoint and check it has what rebuilds a model.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a lowpower checkpoint (names the missing keys).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError("checkpoint %s does not exist (train.py writes runs/NAME/best.pt and last.pt)" % path)
    # Our checkpoints hold plain containers, numbers and tensors only, so the safe loader reads them.
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # truncated zip, not a torch file, pickled objects: all mean "not readable"
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError("cannot read checkpoint %s (truncated, or not a torch checkpoint: %s); "
                              "use another one, e.g. best.pt of the same run" % (path, reason[:160])) from None
    missing = [key for key in REQUIRED_KEYS if key not in state] if isinstance(state, dict) else REQUIRED_KEYS
    if missing:
        raise CheckpointError("%s is not a lowpower checkpoint: missing %s" % (path, ", ".join(missing)))
    return state


def remove_stale_temps(folder):
    """Delete the temporary files a save killed half-way left in ``folder``; returns their paths.

    ``save_checkpoint`` removes its temporary file itself unless the process dies (SIGKILL, node
    failure) in between, so at start-up any ``last.pt.*.tmp`` / ``best.pt.*.tmp`` is garbage.
    Call it only where one process writes (rank 0), before its first save.

    Example:
        >>> remove_stale_temps("runs/demo")  # doctest: +SKIP
        [PosixPath('runs/demo/last.pt.k2j4x9.tmp')]
    """
    stale = sorted(path for pattern in TEMP_PATTERNS for path in Path(folder).glob(pattern) if path.is_file())
    for path in stale:
        path.unlink()
    return stale


def capture_rng_state():
    """This process's random states as tensors and plain data (the safe loader reads them back).

    python ``random``, numpy's global generator, torch's CPU generator and, when CUDA is in use,
    every CUDA device's generator. With these restored, a run resumed mid-epoch draws the same
    numbers (dropout, anything else random in the main process) as the uninterrupted run.

    Example:
        >>> restore_rng_state(capture_rng_state())
    """
    version, internal, gauss = random.getstate()
    numpy_state = np.random.get_state(legacy=False)
    state = {
        "python": {"version": version, "state": torch.tensor(internal, dtype=torch.int64), "gauss": gauss},
        "numpy": {"bit_generator": numpy_state["bit_generator"],
                  "key": torch.from_numpy(numpy_state["state"]["key"].astype(np.int64)),
                  "pos": int(numpy_state["state"]["pos"]), "has_gauss": int(numpy_state["has_gauss"]),
                  "gauss": float(numpy_state["gauss"])},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state):
    """Set the random states :func:`capture_rng_state` returned (CUDA ones when both have CUDA)."""
    python = state["python"]
    random.setstate((python["version"], tuple(int(v) for v in python["state"].tolist()), python["gauss"]))
    numpy = state["numpy"]
    np.random.set_state({"bit_generator": numpy["bit_generator"], "has_gauss": numpy["has_gauss"],
                         "gauss": numpy["gauss"],
                         "state": {"key": numpy["key"].numpy().astype(np.uint32), "pos": numpy["pos"]}})
    torch.set_rng_state(state["torch"].cpu())
    if state.get("cuda") and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def model_from_config(cfg, load_pretrained=True, log=None):
    """Build the configured network, with ImageNet backbone weights when ``model.pretrained`` asks
    and ``load_pretrained`` (a process that gets its weights otherwise, like DDP ranks > 0, needs
    neither the file nor a network).

    Example:
        >>> model_from_config(load_config("configs/synthetic/demo.yaml"))  # doctest: +SKIP
    """
    if cfg["model"].get("init_from"):  # a pruned checkpoint: its narrower layout and its weights
        from lowpower.train.init_from import model_from_init

        return model_from_init(cfg, log)
    model = networks.create_model(cfg["model"]["arch"], num_classes=cfg["data"]["num_classes"],
                                  **cfg["model"]["kwargs"])
    pretrained = cfg["model"]["pretrained"]
    if pretrained and load_pretrained:
        from lowpower.train.pretrained import load_pretrained_backbone

        weights = "IMAGENET1K_V1" if pretrained is True else pretrained
        missing = load_pretrained_backbone(model, cfg["model"]["arch"], weights)
        if log:
            log("loaded %s backbone weights (%d backbone keys not in the file)" % (weights, len(missing)))
    return model


def is_int8(state):
    """True for an int8 checkpoint (``lowpower.compress.quantize ptq`` or a converted QAT run): it has "quant".

    Example:
        >>> is_int8(load_checkpoint("runs/demo/int8_ptq.pt"))  # doctest: +SKIP
        True
    """
    return bool(state.get("quant"))


def build_model(state):
    """Rebuild the network a checkpoint describes and load its weights.

    An int8 checkpoint (``"quant": {"engine", "mode", "per_channel"}``) rebuilds the float network,
    turns it into the int8 structure for its engine (``networks.quant.int8_skeleton``) and loads
    the int8 weights strictly; it runs on the CPU only. When this torch lacks the engine it was
    calibrated for, a fallback engine is used and a warning says which.

    Example:
        >>> model = build_model(load_checkpoint("runs/demo/best.pt")).eval()
    """
    model = networks.create_model(state["arch"], **state["arch_kwargs"])
    if is_int8(state):
        import warnings

        from networks import quant

        engine, warning = quant.select_engine(state["quant"]["engine"])
        if warning:
            warnings.warn(warning, stacklevel=2)
        model = quant.int8_skeleton(model, engine)
        model.load_state_dict(state["model"], strict=True)
        return model
    if (state.get("config") or {}).get("quant", {}).get("qat"):  # a QAT run's best.pt / last.pt: fake-quant
        from lowpower.compress.quantize.qat import fake_quant_model

        return fake_quant_model(state)
    model.load_state_dict(state["model"])
    return model


def width_plan_kwargs(model):
    """``{"width_plan": plan}`` for a pruned model (``networks.widths`` sets ``model.width_plan``), else {}.

    Example:
        >>> width_plan_kwargs(networks.create_model("unet"))
        {}
    """
    plan = getattr(model, "width_plan", None)
    return {"width_plan": plan} if plan else {}


def training_state(cfg, model, optimizer, scheduler, scaler, **counters):
    """The checkpoint dict of a training run (see the module docstring for the keys).

    Args:
        cfg: resolved run config.
        model: the unwrapped model (no DDP ``module.`` prefix).
        optimizer, scheduler, scaler: their ``state_dict()`` is stored.
        counters: epoch, step_in_epoch, epoch_loss, rng, best_mean_dice, metrics, history.

    Example:
        >>> save_checkpoint(training_state(cfg, model, opt, sched, scaler, epoch=3), "runs/x/last.pt")  # doctest: +SKIP
    """
    from lowpower.data.build import class_names
    from lowpower.data.transforms import IMAGENET_MEAN, IMAGENET_STD

    return dict({
        "arch": cfg["model"]["arch"],
        "arch_kwargs": dict(cfg["model"]["kwargs"], num_classes=cfg["data"]["num_classes"],
                            **width_plan_kwargs(model)),
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
