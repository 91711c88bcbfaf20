"""Quantization-aware training through train.py: the hooks the trainer calls, and the int8
conversion of a QAT run's best checkpoint.

A run with ``quant.qat: true`` trains the network with fake-quantized int8 weights and activations
(``networks.quant.prepare_qat``: conv-bn(-relu) fused, fake-quant modules inserted) and validates
that fake-quantized model. Its files:

    best.pt, last.pt   the QAT training state (fake-quant modules, observers, optimiser, random
                       states): --resume and fine-tuning continue from them exactly
    best_int8.pt       best.pt converted to int8 (the int8 checkpoint of issue 13: the float
                       layout plus ``quant``); what test.py, compress.sh --precision int8 and the
                       bench read

``quant.init_from`` starts a new QAT run from a float checkpoint's weights (best.pt of a float run).

    python train.py --cfg configs/synthetic/demo_qat.yaml --out runs/demo_qat
    lowpower quantize qat-convert runs/demo_qat/last.pt -o runs/demo_qat/last_int8.pt

Example:
    >>> model = prepare_model(float_model, cfg, fresh=True)       # doctest: +SKIP
    >>> write_int8(Path("runs/x/best.pt"), Path("runs/x/best_int8.pt"))  # doctest: +SKIP
"""
import argparse
import contextlib
import sys
from pathlib import Path

import torch
from torch.ao.nn.intrinsic.qat import freeze_bn_stats

import networks
from lowpower import checkpoint as ckpt
from lowpower.compress.quantize.kinds import QAT
from lowpower.config import ConfigError
from lowpower.paths import REPO_ROOT
from lowpower.safe import UserError
from lowpower.safe.write import add_force_argument, check_output
from networks import quant

INT8_NAME = "best_int8.pt"
# Training-only entries of a checkpoint that an int8 checkpoint does not carry (it is not resumable).
TRAINING_ONLY = ("rng", "step_in_epoch", "epoch_loss")


def enabled(cfg):
    """True when a resolved config asks for quantization-aware training.

    Example:
        >>> enabled({"quant": {"qat": True}}), enabled({"train": {}})
        (True, False)
    """
    return bool(cfg.get("quant", {}).get("qat"))


def check_config(cfg, where):
    """Refuse, in one line, a QAT config that cannot run: a network without quantization support,
    or mixed precision (fake quantization trains in fp32 here).

    Args:
        cfg: the resolved run config.
        where: the config file (or checkpoint) to name in the message.

    Example:
        >>> check_config(load_config(None, ["quant.qat=true", "model.arch=fcn_r50"]), "x.yaml")  # doctest: +SKIP
        ConfigError: x.yaml: quant.qat needs a quantizable network; fcn_r50 is not: ...
    """
    if not enabled(cfg):
        return
    arch = cfg["model"]["arch"]
    ok, reason = networks.quantizable(arch)
    if not ok:
        usable = [name for name in networks.list_models() if networks.quantizable(name)[0]]
        raise ConfigError("%s: quant.qat needs a quantizable network; %s is not (%s). Quantizable: %s"
                          % (where, arch, reason, ", ".join(usable)))
    if cfg["train"]["amp"]:
        raise ConfigError("%s: quant.qat trains the fake-quantized model in fp32; set train.amp=false" % where)


def load_init_state(path, cfg):
    """The checkpoint ``quant.init_from`` names, checked to fit the configured network.

    A relative path is taken from the repository root, like ``data.root``.

    Raises:
        ConfigError: a checkpoint no training starts from (int8), or another network or width than
            the config's.
    """
    path = Path(path).expanduser()
    state = ckpt.load_checkpoint(path if path.is_absolute() else REPO_ROOT / path)
    kind = ckpt.kind_of(state)
    if not kind.trainable:
        raise ConfigError("quant.init_from %s is %s; give the float (or QAT) checkpoint it came "
                          "from, e.g. best.pt of the float run" % (path, kind.title))
    wanted = dict(cfg["model"]["kwargs"], num_classes=cfg["data"]["num_classes"])
    if state["arch"] != cfg["model"]["arch"] or state["arch_kwargs"] != wanted:
        raise ConfigError("quant.init_from %s holds %s %s, the config builds %s %s; set model.arch and model.kwargs "
                          "to the checkpoint's" % (path, state["arch"], state["arch_kwargs"],
                                                   cfg["model"]["arch"], wanted))
    return state


def load_weights(model, state, path):
    """Strict load; a mismatch is a one-line ConfigError naming the file."""
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as error:
        detail = [line.strip() for line in str(error).splitlines() if line.strip()]
        raise ConfigError("quant.init_from %s does not fit the model (%s)" % (path, detail[-1][:200])) from None


def select_engine(name, log=None):
    """Set the quantized engine (``networks.quant.select_engine``); log its warning if it fell back."""
    engine, warning = quant.select_engine(name)
    if warning and log:
        log(warning)
    return engine


def prepare_model(model, cfg, fresh=True, log=None):
    """The float model as the run trains it: unchanged without ``quant.qat``, else fused with
    fake quantization inserted (in train mode), starting from ``quant.init_from`` on a fresh run.

    Call it before the optimiser is built and before the model moves to its device. A resumed run
    (``fresh=False``) gets every weight and observer from its checkpoint, so init_from is not read.

    Example:
        >>> model = prepare_model(networks.create_model("unet"), cfg, fresh=True, log=print)  # doctest: +SKIP
    """
    if not enabled(cfg):
        return model
    path = cfg["quant"]["init_from"]
    init = load_init_state(path, cfg) if fresh and path else None
    fake_quant = init is not None and ckpt.kind_of(init) is QAT
    if init is not None and not fake_quant:
        load_weights(model, init, path)  # float weights go in before fusing, under their own names
    model = quant.prepare_qat(model, select_engine(cfg["quant"]["engine"], log))
    if fake_quant:
        load_weights(model, init, path)
    if init is not None and log:
        log("quant.init_from: started from the weights of %s (epoch %s, val mean Dice %s)"
            % (path, init.get("epoch"), init.get("metrics", {}).get("mean_dice", "not recorded")))
    return model


def start_epoch(model, cfg, epoch, log=None):
    """Freeze observers and BatchNorm statistics from their configured epochs on (0-based ``epoch``
    >= N). Called at the start of every epoch, a resumed one included, so the frozen state is a
    function of the epoch and a resumed run freezes exactly where an uninterrupted one did.

    Example:
        >>> start_epoch(model, cfg, epoch=3)  # doctest: +SKIP
    """
    if not enabled(cfg):
        return
    settings = cfg["quant"]
    observers, batchnorm = settings["freeze_observers_epoch"], settings["freeze_bn_epoch"]
    if observers is not None and epoch >= observers:
        model.apply(quant.api().disable_observer)
        if epoch == observers and log:
            log("quant: observers frozen from epoch %d on (quant.freeze_observers_epoch=%d)" % (epoch + 1, observers))
    if batchnorm is not None and epoch >= batchnorm:
        model.apply(freeze_bn_stats)
        if epoch == batchnorm and log:
            log("quant: BatchNorm statistics frozen from epoch %d on (quant.freeze_bn_epoch=%d)"
                % (epoch + 1, batchnorm))


def fake_quant_modules(model):
    """Every module that holds an ``observer_enabled`` flag (the fake-quant modules)."""
    return [module for module in model.modules() if isinstance(getattr(module, "observer_enabled", None),
                                                                torch.Tensor)]


@contextlib.contextmanager
def observers_paused(model):
    """Observers off while validating, then back as they were.

    Why: a fake-quant module's observer updates its range on every forward it is enabled for,
    in eval mode too, so scoring the validation split would let those images shape the int8
    model (and make its ranges depend on how often validation ran).

    Example:
        >>> with observers_paused(model):  # doctest: +SKIP
        ...     summary = validate_ranks(model, val_loader, device, cfg)
    """
    modules = fake_quant_modules(model)
    flags = [module.observer_enabled.clone() for module in modules]
    for module in modules:
        module.observer_enabled.fill_(0)
    try:
        yield model
    finally:
        for module, flag in zip(modules, flags):
            module.observer_enabled.copy_(flag)


def is_per_channel(state_dict):
    """True when some quantized weight of an int8 state dict has per-channel scales."""
    schemes = (torch.per_channel_affine, torch.per_channel_symmetric)
    return any(torch.is_tensor(value) and value.is_quantized and value.qscheme() in schemes
               for value in state_dict.values())


def int8_state(state):
    """The int8 checkpoint dict of a QAT checkpoint dict: its layout, the converted model's
    state dict, and ``quant`` = {engine, mode: 'qat', per_channel}; no resumable training state.

    Example:
        >>> int8_state(load_checkpoint("runs/demo_qat/best.pt"))["quant"]  # doctest: +SKIP
        {'engine': 'qnnpack', 'mode': 'qat', 'per_channel': True}
    """
    engine = select_engine(state["config"]["quant"]["engine"])
    model = quant.convert_int8(QAT.build_model(state))  # fake-quant, eval, observers off
    weights = {name: value for name, value in model.state_dict().items()}
    converted = {key: value for key, value in state.items() if key not in TRAINING_ONLY}
    converted.update(model=weights, optimizer=None, scheduler=None, scaler=None,
                     quant={"engine": engine, "mode": "qat", "per_channel": is_per_channel(weights)})
    return converted


def write_int8(source, target, log=None):
    """Convert the QAT checkpoint ``source`` into the int8 checkpoint ``target`` (atomic write).

    ``target`` replaces an existing file (train.py rewrites best_int8.pt whenever best.pt improves),
    but is never ``source`` itself; the command line asks ``check_output`` with its --force first.

    Example:
        >>> write_int8(Path("runs/x/best.pt"), Path("runs/x/best_int8.pt"))  # doctest: +SKIP
    """
    check_output(target, inputs=[source], force=True, what="-o")
    state = ckpt.load_checkpoint(source)
    if ckpt.kind_of(state) is not QAT:
        raise ckpt.CheckpointError("%s is not a QAT checkpoint (its config has no quant.qat: true); "
                                   "for a float checkpoint use lowpower quantize ptq" % source)
    ckpt.save_checkpoint(int8_state(state), target)
    if log:
        log("wrote %s (int8, engine %s)" % (target, state["config"]["quant"]["engine"]))
    return target


def after_best(out, cfg, log=None):
    """train.py's hook after it saved ``OUT/best.pt``: convert it to ``OUT/best_int8.pt``."""
    if enabled(cfg):
        write_int8(Path(out) / "best.pt", Path(out) / INT8_NAME, log)


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="lowpower quantize qat-convert",
        description="Convert a QAT checkpoint (best.pt or last.pt of a train.py run with quant.qat: true) into "
                    "the int8 checkpoint that test.py, compress.sh --precision int8 and the bench read. "
                    "train.py writes OUT/best_int8.pt itself whenever best.pt improves.")
    parser.add_argument("checkpoint", type=Path, help="a QAT run's best.pt or last.pt")
    parser.add_argument("-o", "--out", type=Path,
                        help="int8 checkpoint to write (default: NAME_int8.pt beside it); never CHECKPOINT itself")
    add_force_argument(parser, "replace OUT when it exists, e.g. the best_int8.pt train.py wrote (never "
                               "allowed when it is CHECKPOINT)")
    args = parser.parse_args(argv)
    target = args.out or args.checkpoint.with_name(args.checkpoint.stem + "_int8.pt")
    try:
        # Before any work, so a refusal costs nothing.
        check_output(target, inputs=[args.checkpoint], force=args.force, what="-o" if args.out else "output")
        write_int8(args.checkpoint, target, log=print)
    except (UserError, ckpt.CheckpointError, FileNotFoundError, ConfigError) as error:
        print("lowpower quantize qat-convert: error: %s" % error, file=sys.stderr)
        return 2
    return 0

