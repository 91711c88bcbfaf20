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
    rng                    per-process random states (python, numpy, torch, CUDA) for exact resume
    distill                distillation adapters and the epoch's term sums (lowpower.train.distill), or None;
                           never packaged

Writes are atomic (temporary file in the same folder, then ``os.replace``) so a
job killed mid-save never leaves a truncated ``last.pt``.

Kinds. Every checkpoint is of one kind, a row of :data:`TABLE`: ``int8`` (a top-level ``quant``
record: ``lowpower quantize ptq`` or a converted QAT run), ``qat`` (a ``quant.qat`` run's fake-quant
training state), ``pruned`` (``arch_kwargs["width_plan"]``) and ``float``. ``kind_of(state)`` returns
the :class:`Kind` object, which recognises its checkpoints, rebuilds their model, describes one in a
line and says what the packager ships (precisions, extra modules, manifest fields); code elsewhere
asks the kind instead of testing those keys. The design has no import circle: this module imports
nothing of lowpower and holds the ``Kind`` base, the table and the float and pruned kinds, which
need only ``networks``. A kind that needs code above this module registers itself from its own
package (:func:`register`): ``lowpower.compress.quantize.kinds`` (int8, qat) imports this module,
never the reverse, and every module that asks kinds imports it. ``TABLE`` names each kind's module,
so ``kind_of`` refuses, naming the module to import, rather than take an int8 checkpoint for a float
one when nothing imported it. Building a training run's model and writing its checkpoint dict are
training code: ``lowpower.train.init_from.model_from_config`` and ``lowpower.train.trainer.training_state``.
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


class KindError(ValueError):
    """A checkpoint asked for what its kind cannot do (e.g. package an int8 one in fp16); one line."""


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


# ----------------------------------------------------------------------------- the table of kinds

# Every kind, in the order kind_of tries them (the first whose recognise() is true wins, so the more
# specific come first: an int8 checkpoint of a pruned network is int8; float takes the rest), and the
# module that registers it. A new kind is a row here and a Kind subclass registered by its module.
TABLE = (
    ("int8", "lowpower.compress.quantize.kinds"),
    ("qat", "lowpower.compress.quantize.kinds"),
    # ("fixed_point", "lowpower.compress.quantize.kinds"),  # next: FixedPointModel checkpoints go here
    ("pruned", __name__),
    ("float", __name__),
)
KINDS = {}  # name -> registered Kind; kind_of reads it in TABLE order


class Kind:
    """One kind of checkpoint: how to recognise it, rebuild its model, describe it and package it.

    A subclass sets the attributes and overrides ``recognise`` and whatever else differs from the
    defaults here, which are a float network's; :func:`register` puts an instance in the table.

    Attributes:
        name: its row in :data:`TABLE`.
        title: how a message names a checkpoint of it ("an int8 checkpoint").
        precisions: what the packager may ship it as, the default first; () when it cannot be packaged.
        float_weights: its state dict is the float network's (what pruning, quantizing and
            ``model.init_from`` start from).
        trainable: a training run may start from its weights (``quant.init_from`` of a QAT run).
        cpu_only: its model runs on the CPU only (int8 kernels).
    """

    name = None
    title = None
    precisions = ("fp32", "fp16")
    float_weights = True
    trainable = True
    cpu_only = False

    def recognise(self, state):
        """True when the checkpoint dict ``state`` is of this kind (kind_of asks the kinds in TABLE order)."""
        raise NotImplementedError

    def build_model(self, state):
        """The network the checkpoint describes, its weights loaded (in train mode unless said otherwise)."""
        model = networks.create_model(state["arch"], **state["arch_kwargs"])
        model.load_state_dict(state["model"])
        return model

    def describe(self, state):
        """One line that says what the checkpoint holds, e.g. "pruned unet (width plan of 12 layers)"."""
        raise NotImplementedError

    def engine(self, state):
        """The quantized engine its model's int8 kernels run on; None for a model that computes in float."""
        return None

    @property
    def default_precision(self):
        """The precision it packages in when none is asked for; None when it cannot be packaged."""
        return self.precisions[0] if self.precisions else None

    def package_precision(self, state, precision, path):
        """The precision to package the checkpoint at ``path`` in (``precision``; None: the default).

        Raises:
            KindError: it has no form in ``precision``, or cannot be packaged at all.
        """
        if not self.precisions:
            raise KindError("%s is %s; it cannot be packaged" % (path, self.title))
        if precision is None:
            return self.default_precision
        if precision not in self.precisions:
            raise KindError("%s is %s; it packages as %s only" % (path, self.title, " or ".join(self.precisions)))
        return precision

    def ship_modules(self, state):
        """The ``networks`` modules a package of it ships besides its builder's own imports."""
        return ()

    def manifest_fields(self, state):
        """Fields a package of it adds to ``manifest.json`` (plain data)."""
        return {}

    def parameters(self, state, model):
        """The parameter count a package reports for ``model``, the kind's rebuilt model."""
        return sum(p.numel() for p in model.parameters())


class FloatKind(Kind):
    """A network as its builder makes it, float weights: train.py's best.pt and last.pt."""

    name = "float"
    title = "a float checkpoint"

    def recognise(self, state):
        return True

    def describe(self, state):
        return "float %s" % state["arch"]

    def package_precision(self, state, precision, path):
        if precision == "int8":
            raise KindError("%s is %s; quantize it first (lowpower quantize ptq %s) and package the int8 "
                            "checkpoint that writes" % (path, self.title, path))
        return super().package_precision(state, precision, path)


class PrunedKind(FloatKind):
    """Narrower layers than the builder makes (``lowpower prune``): ``arch_kwargs["width_plan"]``,
    which ``networks.create_model`` applies (``networks.widths``), and the package's registry too."""

    name = "pruned"
    title = "a pruned checkpoint"
    KEY = "width_plan"

    def recognise(self, state):
        return self.KEY in (state.get("arch_kwargs") or {})

    def describe(self, state):
        return "pruned %s (width plan of %d layers)" % (state["arch"], len(self.plan(state)))

    def ship_modules(self, state):
        return ("networks.widths",)

    def plan(self, state):
        """The checkpoint's width plan ``{layer: widths}``; {} for an unpruned one."""
        return (state.get("arch_kwargs") or {}).get(self.KEY) or {}

    def unpruned_kwargs(self, state):
        """The builder arguments without the width plan: those of the network it was pruned from."""
        return {key: value for key, value in state["arch_kwargs"].items() if key != self.KEY}

    def model_kwargs(self, model):
        """``{"width_plan": plan}`` for a pruned model (``networks.widths`` sets ``model.width_plan``), else {}.

        Example:
            >>> PRUNED.model_kwargs(networks.create_model("unet"))
            {}
        """
        plan = getattr(model, self.KEY, None)
        return {self.KEY: plan} if plan else {}


FLOAT, PRUNED = FloatKind(), PrunedKind()


def register(kind):
    """Put ``kind`` in the table under ``kind.name`` (a row of TABLE); returns it.

    Example:
        >>> INT8 = register(Int8Kind())  # doctest: +SKIP
    """
    if kind.name not in dict(TABLE):
        raise ValueError("%r is not a row of lowpower.checkpoint.TABLE (%s); add it there first"
                         % (kind.name, ", ".join(name for name, _ in TABLE)))
    KINDS[kind.name] = kind
    return kind


register(FLOAT)
register(PRUNED)


def kind_of(state):
    """The :class:`Kind` of the checkpoint dict ``state``.

    Raises:
        RuntimeError: a kind of the table is not registered (its module was not imported), so the
            answer could be wrong; the message names the module to import.

    Example:
        >>> kind_of(load_checkpoint("runs/demo/int8_ptq.pt")).describe(state)  # doctest: +SKIP
        'int8 (x86, per-channel, ptq) of float unet'
    """
    missing = [(name, module) for name, module in TABLE if name not in KINDS]
    if missing:
        raise RuntimeError("checkpoint kinds %s are not registered: import %s before asking lowpower.checkpoint"
                           % (", ".join(name for name, _ in missing),
                              ", ".join(sorted({module for _, module in missing}))))
    return next(KINDS[name] for name, _ in TABLE if KINDS[name].recognise(state))


def layout_of(state):
    """The float kind whose network the checkpoint's ``arch_kwargs`` build: PRUNED or FLOAT (what a
    quantized checkpoint was made from)."""
    return PRUNED if PRUNED.recognise(state) else FLOAT


def build_model(state):
    """Rebuild the network a checkpoint describes and load its weights, as its kind does.

    A float or pruned checkpoint rebuilds its float network; an int8 one its int8 structure (CPU
    only), a QAT one its fake-quantized network in eval mode (``lowpower.compress.quantize.kinds``).

    Example:
        >>> model = build_model(load_checkpoint("runs/demo/best.pt")).eval()
    """
    return kind_of(state).build_model(state)
