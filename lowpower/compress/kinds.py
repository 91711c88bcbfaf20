"""The checkpoint kinds every network has: ``float`` (a network as its builder makes it) and ``pruned``
(``lowpower prune``: narrower layers, ``arch_kwargs["width_plan"]``), and the :class:`Kind` base that
every kind extends. ``lowpower.checkpoint.TABLE`` lists the kinds in the order they are recognised;
the quantized ones are in ``lowpower.compress.quantize.kinds``.

Example:
    >>> FLOAT.describe({"arch": "unet"}), PRUNED.recognise({"arch_kwargs": {"width_plan": {"a": [4]}}})
    ('float unet', True)
"""
import networks


class KindError(ValueError):
    """A checkpoint asked for what its kind cannot do (e.g. package an int8 one in fp16); one line."""


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


def layout_of(state):
    """The float kind whose network the checkpoint's ``arch_kwargs`` build: PRUNED or FLOAT (what a
    quantized checkpoint was made from)."""
    return PRUNED if PRUNED.recognise(state) else FLOAT
