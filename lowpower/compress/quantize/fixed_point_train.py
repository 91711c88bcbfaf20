"""Training with the fixed-point quantizer in place: the hooks train.py calls under ``quant.fixed_point``.

A run with ``quant.fixed_point: lsq`` (or ``range``, ``paper``) trains the network with its conv and
linear weights and every activation fake-quantized (``fixed_point.FixedPointModel``), as the paper's
authors trained theirs, and validates, saves and resumes that model. BatchNorm is kept (its
statistics move while training, so it cannot be folded) and stays float, as do biases, as in the
authors' code and in LSQ; the memory figures count them at 32 bits.

    python train.py --cfg configs/synthetic/fixed_point.yaml --out runs/fp_lsq \\
        --set quant.fixed_point=lsq quant.weight_bits=4 quant.act_bits=6 quant.edge_bits=8

A new run starts from scratch (the paper's way) or from a float run's weights through
``model.init_from``. Before its first step the activation ranges (and LSQ's first step sizes) are set
from ``quant.calib_batches`` training batches; under torchrun, rank 0's are copied to every process
when DDP wraps the model. best.pt and last.pt hold the fake-quantized network
(``kinds.FixedPointKind``): test.py scores it, --resume continues it bit for bit, and the packager
refuses it, because the device has no fixed-point runtime.

Example:
    >>> fixed = wrap(model, cfg, log=print)                    # doctest: +SKIP
    >>> calibrate(fixed, train_loader, cfg, "cpu", log=print)  # doctest: +SKIP
"""
from lowpower.compress.quantize.fixed_point import FLOAT_BITS, FixedPointModel

KEYS = ("fixed_point", "weight_bits", "act_bits", "edge_bits")


def enabled(cfg):
    """True when a resolved config asks for fixed-point training.

    Example:
        >>> enabled({"quant": {"fixed_point": "lsq"}}), enabled({"quant": {"fixed_point": None}})
        (True, False)
    """
    return bool((cfg.get("quant") or {}).get("fixed_point"))


def settings_of(cfg):
    """The quantizer settings of a config: ``{scheme, weight_bits, act_bits, edge_bits}``.

    Example:
        >>> settings_of({"quant": {"fixed_point": "lsq", "weight_bits": 4, "act_bits": 6, "edge_bits": 8}})
        {'scheme': 'lsq', 'weight_bits': 4, 'act_bits': 6, 'edge_bits': 8}
    """
    quant = cfg["quant"]
    return {"scheme": quant["fixed_point"], "weight_bits": quant["weight_bits"], "act_bits": quant["act_bits"],
            "edge_bits": quant["edge_bits"]}


def describe(settings):
    """One line for logs and checkpoint descriptions.

    Example:
        >>> describe({"scheme": "lsq", "weight_bits": 4, "act_bits": 6, "edge_bits": 8})
        'lsq w4/a6, first and last layers 8 bits'
    """
    edges = ", first and last layers %d bits" % settings["edge_bits"] if settings["edge_bits"] else ""
    return "%s w%d/a%d%s" % (settings["scheme"], settings["weight_bits"], settings["act_bits"], edges)


def quantize(model, settings):
    """``model`` (left untouched) as a fixed-point training run trains it: BatchNorm kept and float,
    biases float, every weight of a weighted layer and every activation quantized.

    The one construction that train.py and the checkpoint kind share, so a saved state dict always
    fits the model it is loaded into.

    Example:
        >>> fixed = quantize(networks.create_model("unet"), {"scheme": "lsq", "weight_bits": 4,
        ...                  "act_bits": 6, "edge_bits": None})  # doctest: +SKIP
    """
    return FixedPointModel(model, settings["weight_bits"], settings["act_bits"], fold_bn=False,
                           scheme=settings["scheme"], edge_bits=settings["edge_bits"], weights_only=True)


def wrap(model, cfg, log=None):
    """The :class:`FixedPointModel` of ``model`` under ``quant.fixed_point``, else None.

    Call it after the weights are in (``model.init_from``) and before the optimiser is built: the
    optimiser must see the quantizers' parameters (LSQ's step sizes) and the weights under their
    parametrized names.
    """
    if not enabled(cfg):
        return None
    fixed = quantize(model, settings_of(cfg))
    if log:
        log("quant.fixed_point: %s; %d quantized weight tensors, %d activation quantizers; weight memory %.1fx "
            "less than fp32" % (describe(settings_of(cfg)), count_quantized_weights(fixed),
                                len(fixed.quantizers), ratio_to_float(fixed)))
    return fixed


def count_quantized_weights(fixed):
    """The number of parameter tensors the :class:`FixedPointModel` quantizes."""
    return sum(1 for _, bits in fixed.param_bits if bits < FLOAT_BITS)


def ratio_to_float(fixed):
    """fp32 weight memory / the fixed-point model's (biases and BatchNorm count 32 bits in both)."""
    elements = sum(count for count, _ in fixed.param_bits)
    return FLOAT_BITS * elements / fixed.weight_memory_bits()


def first_batches(loader, count, device):
    """The images of the first ``count`` batches of an epoch-0 pass over a training ``loader`` (augmented
    as in training): what sets activation ranges, here and in the study's calibration."""
    loader.sampler.set_position(0)
    batches = []
    for images, _ in loader:
        batches.append(images.to(device))
        if len(batches) == count:
            break
    return batches


def calibrate(fixed, loader, cfg, device, log=None):
    """Set a new run's activation ranges (and LSQ's first step sizes) from the first
    ``quant.calib_batches`` training batches, in eval mode without gradients.

    A resumed run does not call it: its ranges and steps come from its checkpoint.
    """
    batches = first_batches(loader, cfg["quant"]["calib_batches"], device)
    fixed.calibrate(batches)
    fixed.model.train()
    if log:
        log("quant.fixed_point: activation ranges set from %d training batches" % len(batches))
