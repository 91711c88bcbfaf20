"""Start a training run from a checkpoint's layout and weights (``model.init_from``), e.g. a pruned one.

A pruned checkpoint (``lowpower prune``) holds narrower layers than its builder makes:
its ``arch_kwargs`` carry a ``width_plan`` (``networks.widths``). A config naming it in
``model.init_from`` fine-tunes it through the normal trainer: ``lowpower.checkpoint.model_from_config``
builds the network from the checkpoint's ``arch_kwargs`` (plan included) and loads its weights;
``training_state`` writes the plan back into every ``best.pt`` / ``last.pt``, so they rebuild,
resume, test and package like any other checkpoint.

    python train.py --cfg configs/synthetic/prune_finetune.yaml --out runs/demo_pruned_ft

Example:
    >>> model = model_from_init(load_config("configs/synthetic/prune_finetune.yaml"))  # doctest: +SKIP
"""
from pathlib import Path

import networks
from lowpower import checkpoint as ckpt
from lowpower.config import ConfigError
from lowpower.paths import REPO_ROOT


def init_path(cfg):
    """``model.init_from`` as a path; a relative one is taken from the repository root, like ``data.root``."""
    path = Path(cfg["model"]["init_from"]).expanduser()
    return path if path.is_absolute() else REPO_ROOT / path


def load_init_state(cfg):
    """The checkpoint ``model.init_from`` names, checked to be a float one of the configured network.

    Raises:
        ConfigError: int8 checkpoint, or another arch / other builder arguments than the config's
            (the message says which keys to set).
    """
    path = init_path(cfg)
    try:
        state = ckpt.load_checkpoint(path)
    except (FileNotFoundError, ckpt.CheckpointError) as error:
        raise ConfigError("model.init_from: %s" % error) from None
    if ckpt.is_int8(state):
        raise ConfigError("model.init_from %s is an int8 checkpoint; give the float checkpoint it came from" % path)
    kwargs = {key: value for key, value in state["arch_kwargs"].items() if key != "width_plan"}
    wanted = dict(cfg["model"]["kwargs"], num_classes=cfg["data"]["num_classes"])
    if state["arch"] != cfg["model"]["arch"] or kwargs != wanted:
        raise ConfigError("model.init_from %s holds %s %s, the config builds %s %s; set model.arch, model.kwargs "
                          "and data.num_classes to the checkpoint's" % (path, state["arch"], kwargs,
                                                                        cfg["model"]["arch"], wanted))
    return state


def model_from_init(cfg, log=None):
    """The network of ``model.init_from`` (its width plan applied) with its weights loaded strictly.

    A resumed run calls it too (the layout must be rebuilt before ``last.pt``'s weights go in).

    Example:
        >>> model_from_init(cfg, log=print)  # doctest: +SKIP
        model.init_from: runs/demo/pruned.pt (unet, 12 pruned layers), its weights loaded
    """
    state = load_init_state(cfg)
    model = networks.create_model(state["arch"], **state["arch_kwargs"])
    try:
        model.load_state_dict(state["model"], strict=True)
    except RuntimeError as error:
        detail = [line.strip() for line in str(error).splitlines() if line.strip()]
        raise ConfigError("model.init_from %s: its weights do not fit its own layout (%s)"
                          % (init_path(cfg), detail[-1][:200])) from None
    if log:
        log("model.init_from: %s (%s, %d pruned layers), its weights loaded"
            % (cfg["model"]["init_from"], state["arch"], len(state["arch_kwargs"].get("width_plan") or {})))
    return model
