"""The study's ``--qat-epochs``: each bit pair, and the fp32 network, trained by train.py itself.

A pair's training is a train.py run (``lowpower.train.trainer``, the same code as any run with
``quant.fixed_point``) in ``OUT/runs/NAME``: the checkpoint's config with the pair's quantizer, started
from the checkpoint's weights through ``model.init_from``, for ``--qat-epochs`` epochs at the study's
learning rate, decayed to 0. The fp32 row gets the same epochs and learning rate without a quantizer,
so every row has had the same training. Each run leaves its log, history.json, curves.png, best.pt and
last.pt; a killed study resumes the killed run exactly (``--resume auto``). The row is scored on the
final weights (last.pt's validation after the last epoch), not the best epoch's.

Example:
    >>> folder = run_folder(Path("runs/fp"), settings)                            # doctest: +SKIP
    >>> state = train_pair(study, settings, folder)                               # doctest: +SKIP
"""
import copy
import hashlib
import json
from pathlib import Path

from lowpower.checkpoint import CheckpointError, load_checkpoint
from lowpower.compress.quantize.fixed_point import FLOAT_BITS
from lowpower.config import save_config
from lowpower.train.trainer import main as train_main

# Validations per run: enough points on the curve to see whether it has flattened.
VALIDATIONS = 8


def is_float(settings):
    """True for the fp32 row (no quantizer)."""
    return int(settings["weight_bits"]) >= FLOAT_BITS and int(settings["act_bits"]) >= FLOAT_BITS


def run_folder(out, settings):
    """``OUT/runs/NAME`` of a row: readable (scheme, bits) and unique (a hash of every setting).

    Example:
        >>> run_folder(Path("o"), {"scheme": "lsq", "weight_bits": "4", "act_bits": "6", "edge_bits": "8",
        ...                        "qat_epochs": "12"}).name[:18]
        'lsq_w4_a6_e8_12ep_'
    """
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:8]
    if is_float(settings):
        name = "fp32"
    else:
        name = "%s_w%s_a%s%s" % (settings["scheme"], settings["weight_bits"], settings["act_bits"],
                                 "_e%s" % settings["edge_bits"] if settings["edge_bits"] else "")
    return Path(out) / "runs" / ("%s_%sep_%s" % (name, settings["qat_epochs"], digest))


def pair_config(cfg, settings, checkpoint, device):
    """The run config of a row: ``cfg`` (the checkpoint's, made fit for the study) with its quantizer,
    the checkpoint's weights to start from, and the study's epochs and learning rate."""
    cfg = copy.deepcopy(cfg)
    epochs = int(settings["qat_epochs"])
    cfg["model"].update(init_from=str(Path(checkpoint).resolve()), pretrained=False)
    cfg["train"].update(epochs=epochs, lr=float(settings["lr"]), warmup_iters=0, amp=False, ema=False,
                        val_every=max(1, epochs // VALIDATIONS), device=device)
    cfg["quant"].update(qat=False, fixed_point=None if is_float(settings) else settings["scheme"])
    if not is_float(settings):
        cfg["quant"].update(weight_bits=int(settings["weight_bits"]), act_bits=int(settings["act_bits"]),
                            edge_bits=int(settings["edge_bits"]) if settings["edge_bits"] else None,
                            calib_batches=int(settings["calib_batches"]))
    return cfg


def train_pair(cfg, settings, folder, checkpoint, device="cpu", progress=True):
    """Train one row's run in ``folder`` (continuing a killed one) and return its last.pt dict.

    Raises:
        CheckpointError: train.py failed; its message is in ``folder/log.txt`` and on stderr.
    """
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    config = folder.parent / (folder.name + ".yaml")
    save_config(pair_config(cfg, settings, checkpoint, device), config)
    argv = ["--cfg", str(config), "--out", str(folder), "--resume", "auto"] + ([] if progress else ["--no-progress"])
    status = train_main(argv)
    if status != 0:
        raise CheckpointError("the study's training run in %s stopped with status %d; see %s, then rerun the "
                              "study to continue it" % (folder, status, folder / "log.txt"))
    return load_checkpoint(folder / "last.pt")


def last_quarter_gain(folder):
    """Val mean Dice of the last validation minus that of the last one in the first three quarters of the
    run (how much the curve still rose at the end), from ``folder/history.json``; None without two.

    Example:
        >>> last_quarter_gain(Path("runs/fp/runs/lsq_w4_a6_12ep_0a1b2c3d"))  # doctest: +SKIP
        0.0021
    """
    path = Path(folder) / "history.json"
    if not path.is_file():
        return None
    scored = [(h["epoch"], h["mean_dice"]) for h in json.loads(path.read_text()) if "mean_dice" in h]
    if len(scored) < 2:
        return None
    last_epoch, last = scored[-1]
    earlier = [dice for epoch, dice in scored if epoch <= 0.75 * last_epoch]
    return last - earlier[-1] if earlier else None
