"""Checkpoints that carry everything needed to rebuild, resume and package a model, and the table
of their kinds.

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
    epoch_terms            mid-epoch: the running sums of each loss term (lowpower.train.engine), or {}
    rng                    per-process random states (python, numpy, torch, CUDA) for exact resume
    distill                distillation adapters and the epoch's term sums (lowpower.train.distill), or None;
                           never packaged
    ema                    under train.ema, the weight average (lowpower.train.ema), or None; last.pt's
                           ``model`` is then the raw weights, best.pt's the average; never packaged

Writes are atomic (``lowpower.safe.write``: a temporary file in the same folder, then ``os.replace``)
so a job killed mid-save never leaves a truncated ``last.pt``; reads go through the safe loader
(``lowpower.safe.load``: ``weights_only=True``), so a crafted file never runs.

Kinds. Every checkpoint is of one kind, a row of :data:`TABLE`: ``int8`` (a top-level ``quant``
record: ``lowpower quantize ptq`` or a converted QAT run), ``qat`` (a ``quant.qat`` run's fake-quant
training state), ``fixed_point`` (a ``quant.fixed_point`` run's fake fixed-point training state),
``pruned`` (``arch_kwargs["width_plan"]``) and ``float``. ``kind_of(state)`` returns
the kind object, which recognises its checkpoints, rebuilds their model, describes one in a line and
says what the packager ships (precisions, extra modules, manifest fields); code elsewhere asks the
kind instead of testing those keys. Each kind lives with the method that makes it
(``lowpower.compress.kinds``: the ``Kind`` base, float and pruned; ``lowpower.compress.quantize.kinds``:
int8, qat and fixed_point); those modules never import this one, so the table imports them without a circle.
Building a training run's model and writing its checkpoint dict are training code:
``lowpower.train.init_from.model_from_config`` and ``lowpower.train.trainer.training_state``.
"""
import random
from pathlib import Path

import numpy as np
import torch

from lowpower.compress.kinds import FLOAT, PRUNED
from lowpower.compress.quantize.kinds import FIXED_POINT, INT8, QAT
from lowpower.safe import UserError
from lowpower.safe.load import WeightsFileError, load_weights
from lowpower.safe.write import atomic_output

REQUIRED_KEYS = ("arch", "arch_kwargs", "model")
# The temporary names save_checkpoint writes (mkstemp: NAME.<random>.tmp) for the files train.py saves.
TEMP_PATTERNS = ("last.pt.*.tmp", "best.pt.*.tmp", "best_int8.pt.*.tmp")  # best_int8.pt: a QAT run's int8 copy


class CheckpointError(UserError, ValueError):
    """A checkpoint file that cannot be read or is not ours; the message names the file."""


def save_checkpoint(state, path):
    """Write `state` to `path` atomically (``lowpower.safe.write.atomic_output``).

    Callers that write a user-named file ask ``lowpower.safe.write.check_output`` first.

    Args:
        state: the checkpoint dict (see module docstring).
        path: destination file; its folder must exist.

    Example:
        >>> save_checkpoint({"arch": "unet", "arch_kwargs": {}, "model": m.state_dict()}, "runs/x/last.pt")
    """
    with atomic_output(path, mkdir=False) as temp:
        torch.save(state, temp)


def load_checkpoint(path, map_location="cpu"):
    """Read a checkpoint with the safe loader and check it has what rebuilds a model.

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: unreadable, holds code (never run), or not a lowpower checkpoint (names the
            missing keys).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError("checkpoint %s does not exist (train.py writes runs/NAME/best.pt and last.pt)" % path)
    # Our checkpoints hold plain containers, numbers and tensors only, so the safe loader reads them.
    try:
        state = load_weights(path, "checkpoint", map_location=map_location)
    except WeightsFileError as error:
        raise CheckpointError("%s; use another one, e.g. best.pt of the same run" % error) from None
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


# ----------------------------------------------------------------------------- the table of kinds


# Every kind, in the order kind_of tries them: the first whose recognise() is true wins, so the more
# specific come first (an int8 checkpoint of a pruned network is int8; float takes the rest). A new
# kind is a Kind subclass in the package of the method that makes it, and a row here.
TABLE = (INT8, QAT, FIXED_POINT, PRUNED, FLOAT)
KINDS = {kind.name: kind for kind in TABLE}


def kind_of(state):
    """The :class:`~lowpower.compress.kinds.Kind` of the checkpoint dict ``state``: a row of :data:`TABLE`.

    Example:
        >>> kind_of({"arch": "unet", "arch_kwargs": {}, "model": {}}).describe({"arch": "unet"})
        'float unet'
    """
    return next(kind for kind in TABLE if kind.recognise(state))


def build_model(state):
    """Rebuild the network a checkpoint describes and load its weights, as its kind does.

    A float or pruned checkpoint rebuilds its float network; an int8 one its int8 structure (CPU
    only), a QAT one its fake-quantized network in eval mode (``lowpower.compress.quantize.kinds``).

    Example:
        >>> model = build_model(load_checkpoint("runs/demo/best.pt")).eval()
    """
    return kind_of(state).build_model(state)
