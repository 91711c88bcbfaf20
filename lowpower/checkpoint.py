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

Writes are atomic (temporary file in the same folder, then ``os.replace``) so a
job killed mid-save never leaves a truncated ``last.pt``.
"""
import os
import tempfile
from pathlib import Path

import torch

import networks

REQUIRED_KEYS = ("arch", "arch_kwargs", "model")


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
    state = torch.load(path, map_location=map_location, weights_only=True)
    missing = [key for key in REQUIRED_KEYS if key not in state]
    if missing:
        raise ValueError("%s is not a lowpower checkpoint: missing %s" % (path, ", ".join(missing)))
    return state


def build_model(state):
    """Rebuild the network a checkpoint describes and load its weights.

    Example:
        >>> model = build_model(load_checkpoint("runs/demo/best.pt")).eval()
    """
    model = networks.create_model(state["arch"], **state["arch_kwargs"])
    model.load_state_dict(state["model"])
    return model
