"""The quantized checkpoint kinds, rows of ``lowpower.checkpoint.TABLE``: ``int8`` (a top-level
``quant`` record: ``lowpower quantize ptq`` or a converted QAT run)
``qat`` (a ``quant.qat: true`` run's best.pt / last.pt: fake-quant training state), and
``fixed_point`` (a ``quant.fixed_point`` run's: fake fixed-point training state).

The first two rebuild their model with ``networks.quant``, the int8 machinery the device uses too;
the third with ``fixed_point_train.quantize``, the construction its run trained.

Example:
    >>> from lowpower.checkpoint import kind_of
    >>> kind_of({"arch": "unet", "arch_kwargs": {}, "model": {}, "quant": {"engine": "x86", "mode": "ptq",
    ...          "per_channel": True}}).describe(...)  # doctest: +SKIP
    'int8 (x86, per-channel, ptq) of float unet'
"""
import warnings
from pathlib import Path

import networks
from lowpower.compress.kinds import Kind, KindError, layout_of
from lowpower.compress.quantize import fixed_point_train
from networks import quant


class Int8Kind(Kind):
    """Converted int8 weights: the float layout plus ``quant`` = {engine, mode, per_channel, ...}.

    Its model is the float network turned into the int8 structure for its engine
    (``networks.quant.int8_skeleton``) with the int8 weights loaded strictly; it runs on the CPU
    only. When this torch lacks the engine it was calibrated for, a fallback is used and a warning
    says which. It packages as int8 only, shipping ``networks.quant`` (the device's decoder).
    """

    name = "int8"
    title = "an int8 checkpoint"
    precisions = ("int8",)
    float_weights = False
    trainable = False
    cpu_only = True

    def recognise(self, state):
        return bool(state.get("quant"))

    def build_model(self, state):
        model = networks.create_model(state["arch"], **state["arch_kwargs"])
        engine, warning = quant.select_engine(state["quant"]["engine"])
        if warning:
            warnings.warn(warning, stacklevel=3)  # at the caller of lowpower.checkpoint.build_model
        model = quant.int8_skeleton(model, engine)
        model.load_state_dict(state["model"], strict=True)
        return model

    def describe(self, state):
        info = state["quant"]
        scheme = "per-channel" if info.get("per_channel") else "per-tensor"
        return "int8 (%s, %s, %s) of %s" % (info.get("engine"), scheme, info.get("mode", "int8"),
                                           layout_of(state).describe(state))

    def engine(self, state):
        return state["quant"]["engine"]

    def package_precision(self, state, precision, path):
        if precision not in (None, "int8"):
            raise KindError("%s is %s (%s); it packages as int8 only: pass --precision int8 or leave --precision "
                            "out" % (path, self.title, state["quant"].get("mode", "quantized")))
        return super().package_precision(state, precision, path)

    def ship_modules(self, state):
        return ("networks.quant",) + tuple(layout_of(state).ship_modules(state))

    def manifest_fields(self, state):
        return {"quant": dict(state["quant"])}

    def parameters(self, state, model):
        """The float network's parameters: an int8 model holds packed weights, not parameters."""
        float_model = networks.create_model(state["arch"], **state["arch_kwargs"])
        return sum(p.numel() for p in float_model.parameters())


class QatKind(Kind):
    """A QAT run's training state: fake-quant modules and observers in a float model (no ``quant``
    record yet; its config has ``quant.qat: true``).

    Its model is the fake-quantized network, in eval mode with its observers off (what validation
    scored). It is not packaged: its int8 form, ``best_int8.pt`` (``lowpower quantize qat-convert``),
    is. Training continues from it (``--resume``, ``quant.init_from``).
    """

    name = "qat"
    title = "a QAT training checkpoint"
    precisions = ()
    float_weights = False

    def recognise(self, state):
        settings = (state.get("config") or {}).get("quant") or {}
        return not state.get("quant") and bool(settings.get("qat"))

    def build_model(self, state):
        model = networks.create_model(state["arch"], **state["arch_kwargs"])
        engine, _ = quant.select_engine(state["config"]["quant"]["engine"])
        model = quant.prepare_qat(model, engine)
        model.load_state_dict(state["model"])
        model.eval().apply(quant.api().disable_observer)
        return model

    def describe(self, state):
        return "QAT training state (fake-quant, engine %s) of %s" % (state["config"]["quant"].get("engine"),
                                                                     layout_of(state).describe(state))

    def package_precision(self, state, precision, path):
        raise KindError("%s is %s (fake-quant); package its int8 form: ./compress.sh %s --precision int8"
                        % (path, self.title, Path(path).with_name("best_int8.pt")))


class FixedPointKind(Kind):
    """A ``quant.fixed_point`` run's training state (``fixed_point_train``): the network with its
    fixed-point weight parametrizations and activation quantizers (no ``quant`` record).

    Its model is that fake-quantized network in eval mode, what validation scored: test.py and the
    study score it. Training continues from it (``--resume``). It is not packaged: the device runs
    float and int8 networks, and no runtime of it computes in 4 or 6 bits.
    """

    name = "fixed_point"
    title = "a fixed-point training checkpoint"
    precisions = ()
    float_weights = False
    trainable = False

    def recognise(self, state):
        return not state.get("quant") and fixed_point_train.enabled(state.get("config") or {})

    def build_model(self, state):
        model = networks.create_model(state["arch"], **state["arch_kwargs"])
        model = fixed_point_train.quantize(model, fixed_point_train.settings_of(state["config"])).model
        model.load_state_dict(state["model"], strict=True)
        return model.eval()

    def describe(self, state):
        return "fixed-point training state (%s) of %s" % (self.settings(state), layout_of(state).describe(state))

    def package_precision(self, state, precision, path):
        raise KindError("%s is %s (fake-quantized %s): the device has no fixed-point runtime. Package the float "
                        "run it started from, or train for int8 with quant.qat"
                        % (path, self.title, self.settings(state)))

    def settings(self, state):
        """Its quantizer settings in a line, e.g. 'lsq w4/a6'."""
        return fixed_point_train.describe(fixed_point_train.settings_of(state["config"]))


INT8, QAT, FIXED_POINT = Int8Kind(), QatKind(), FixedPointKind()
