"""The network a training run starts from (``model_from_config``): the configured one, with ImageNet
backbone weights when asked, or a checkpoint's layout and weights (``model.init_from``), e.g. a pruned one.

A pruned checkpoint (``lowpower prune``, the ``pruned`` kind of ``lowpower.checkpoint``) holds narrower
layers than its builder makes: its ``arch_kwargs`` carry a width plan (``networks.widths``). A config
naming it in ``model.init_from`` fine-tunes it through the normal trainer: ``model_from_config``
builds the network from the checkpoint's ``arch_kwargs`` (plan included) and loads its weights;
``lowpower.train.trainer.training_state`` writes the plan back into every ``best.pt`` / ``last.pt``, so
they rebuild, resume, test and package like any other checkpoint.

    python train.py --cfg configs/synthetic/prune_finetune.yaml --out runs/demo_pruned_ft

Example:
    >>> model = model_from_init(load_config("configs/synthetic/prune_finetune.yaml"))  # doctest: +SKIP
"""
from pathlib import Path

import networks
from lowpower import checkpoint as ckpt
from lowpower.config import ConfigError
from lowpower.paths import REPO_ROOT
from lowpower.train.pretrained import load_pretrained_backbone
from lowpower.train.pretrained_file import load_authors_file, names_a_file


def init_path(cfg):
    """``model.init_from`` as a path; a relative one is taken from the repository root, like ``data.root``."""
    path = Path(cfg["model"]["init_from"]).expanduser()
    return path if path.is_absolute() else REPO_ROOT / path


def load_init_state(cfg):
    """The checkpoint ``model.init_from`` names, checked to be a float one of the configured network.

    Raises:
        ConfigError: a checkpoint without float weights (int8, QAT), or another arch / other builder
            arguments than the config's (the message says which keys to set).
    """
    path = init_path(cfg)
    try:
        state = ckpt.load_checkpoint(path)
    except (FileNotFoundError, ckpt.CheckpointError) as error:
        raise ConfigError("model.init_from: %s" % error) from None
    kind = ckpt.kind_of(state)
    if not kind.float_weights:
        raise ConfigError("model.init_from %s is %s; give the float checkpoint it came from" % (path, kind.title))
    kwargs = ckpt.PRUNED.unpruned_kwargs(state)
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
            % (cfg["model"]["init_from"], state["arch"], len(ckpt.PRUNED.plan(state))))
    return model


def model_from_config(cfg, load_pretrained=True, log=None):
    """Build the configured network, with ImageNet backbone weights when ``model.pretrained`` asks
    and ``load_pretrained`` (a process that gets its weights otherwise, like DDP ranks > 0, needs
    neither the file nor a network); with ``model.init_from``, that checkpoint's layout and weights.

    Example:
        >>> model_from_config(load_config("configs/synthetic/demo.yaml"))  # doctest: +SKIP
    """
    if cfg["model"].get("init_from"):  # e.g. a pruned checkpoint: its narrower layout and its weights
        return model_from_init(cfg, log)
    model = networks.create_model(cfg["model"]["arch"], num_classes=cfg["data"]["num_classes"],
                                  **cfg["model"]["kwargs"])
    pretrained = cfg["model"]["pretrained"]
    if pretrained and load_pretrained and names_a_file(pretrained):
        load_authors_file(model, pretrained, log=log)  # the network's authors' ImageNet file, by key name
    elif pretrained and load_pretrained:
        weights = "IMAGENET1K_V1" if pretrained is True else pretrained
        # hash-checked, read with weights_only; no key matching is an error, the log names the others
        load_pretrained_backbone(model, cfg["model"]["arch"], weights, log=log)
    return model
