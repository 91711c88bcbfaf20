"""Structured channel pruning of a zoo network with Torch-Pruning, and its width plan.

Torch-Pruning traces the network once and groups every layer whose channels depend on each other
(a conv's output, its BatchNorm, the next conv's input, both sides of a concatenation or an add),
so removing a channel removes it everywhere at once; no dependency graph is written here. The
classifier (every conv whose output channels are the classes) is left out, so the logits keep their
channels.

The pruned network is described by a *width plan* (``networks.widths``): the layers whose shape
changed and their new widths, plain data that the device rebuilds the network from.

Example:
    >>> model = networks.create_model("unet", base_width=8, depth=2).eval()
    >>> pruned = prune_to_flops(model, torch.zeros(1, 3, 64, 64), 0.5, num_classes=14)  # doctest: +SKIP
"""
import torch
import torch_pruning as tp

import networks
from lowpower.measure.flops import count_flops
from networks.widths import plan_entry

IMPORTANCES = ("l1", "l2", "taylor", "bn")
TICKS = 100  # a step of the pruner removes 1/TICKS of MAX_RATIO of every layer's channels
MAX_RATIO = 0.9  # never remove more than this share of one layer's channels


class PruneError(ValueError):
    """A network that cannot be pruned or whose pruned form cannot be rebuilt; the message says why."""


def make_importance(name):
    """The Torch-Pruning channel importance for ``name``: l1/l2 weight magnitude, taylor
    (|weight x gradient|, needs a backward pass before every pruning step), bn (BatchNorm scale).

    Example:
        >>> type(make_importance("l1")).__name__
        'GroupMagnitudeImportance'
    """
    if name == "l1":
        return tp.importance.GroupMagnitudeImportance(p=1)
    if name == "l2":
        return tp.importance.GroupMagnitudeImportance(p=2)
    if name == "taylor":
        return tp.importance.GroupTaylorImportance()
    if name == "bn":
        return tp.importance.BNScaleImportance()
    raise PruneError("importance must be one of %s, got %r" % (", ".join(IMPORTANCES), name))


def classifier_layers(model, num_classes):
    """The convs whose outputs are class logits (main and auxiliary heads): their output channels stay.

    Example:
        >>> [type(m).__name__ for m in classifier_layers(networks.create_model("unet"), 14)]
        ['Conv2d']
    """
    convs = (torch.nn.Conv2d, torch.nn.ConvTranspose2d)
    return [module for module in model.modules() if isinstance(module, convs) and module.out_channels == num_classes]


def make_pruner(model, example, importance, round_to, num_classes):
    """A Torch-Pruning MetaPruner that removes MAX_RATIO of each layer's channels over TICKS calls of step()."""
    try:
        return tp.pruner.MetaPruner(
            model, example, importance=make_importance(importance), pruning_ratio=MAX_RATIO,
            iterative_steps=TICKS, ignored_layers=classifier_layers(model, num_classes),
            round_to=round_to or None)
    except Exception as error:  # a tracing failure of any kind means "this network cannot be pruned"
        raise PruneError("Torch-Pruning cannot trace %s: %s" % (type(model).__name__, _first_line(error))) from None


def _pruner_step(pruner, model, example):
    """One pruner step, then the FLOPs; any failure is a PruneError saying where it broke."""
    try:
        pruner.step()
    except Exception as error:  # Torch-Pruning's own failures come as any exception type
        raise PruneError("Torch-Pruning cannot prune %s: %s" % (type(model).__name__, _first_line(error))) from None
    try:
        return count_flops(model, example)
    except RuntimeError as error:  # e.g. a view/reshape to channel counts the forward code fixes itself
        raise PruneError("%s no longer runs once pruned (its forward code fixes channel counts of its own: %s)"
                         % (type(model).__name__, _first_line(error))) from None


def _first_line(error):
    text = str(error).strip()
    return (text.splitlines()[0] if text else type(error).__name__)[:200]


def prune_to_flops(model, example, target_flops, num_classes, importance="l1", steps=1, round_to=8,
                   between_steps=None, gradients=None, log=None):
    """Remove channels until the forward FLOPs at ``example``'s size are at most ``target_flops``
    times the original, in ``steps`` equal FLOPs steps; the model is changed in place and returned.

    Args:
        model: a float zoo network.
        example: an input batch (its size is the one FLOPs are counted at, e.g. 1x3x128x128).
        target_flops: share of the FLOPs to keep, in (0, 1).
        num_classes: the logits' channels (their convs are not pruned).
        importance: one of :data:`IMPORTANCES`.
        steps: pruning steps; ``between_steps(model, step)`` runs after each but the last.
        round_to: keep channel counts multiples of this (None or 0: any count).
        gradients: ``gradients(model)`` fills ``.grad`` (taylor importance needs it before each step).
        log: called with one line per step.

    Raises:
        PruneError: the network cannot be traced, or the target cannot be reached.

    Example:
        >>> prune_to_flops(model, torch.zeros(1, 3, 64, 64), 0.5, 14, steps=2)  # doctest: +SKIP
    """
    if not 0 < target_flops < 1:
        raise PruneError("--target-flops is the share of FLOPs to keep, between 0 and 1; got %s" % target_flops)
    if importance == "taylor" and gradients is None:
        raise PruneError("taylor importance needs gradients: give training data")
    declined = getattr(type(model), "prune_reason", None)  # a network that knows why it cannot be pruned
    if declined:
        raise PruneError("%s cannot be pruned: %s" % (type(model).__name__, declined))
    model.eval()
    start = count_flops(model, example)
    flops, pruner = start, make_pruner(model, example, importance, round_to, num_classes)
    for step in range(1, steps + 1):
        goal = start * (1 - (1 - target_flops) * step / steps)
        while flops > goal and pruner.current_step < TICKS:
            if importance == "taylor":
                model.zero_grad(set_to_none=True)
                gradients(model)
                model.eval()
            flops = _pruner_step(pruner, model, example)
        if log:
            log("step %d/%d: %.1f%% of the FLOPs left (goal %.1f%%)" % (step, steps, 100 * flops / start,
                                                                      100 * goal / start))
        if flops > goal:
            raise PruneError("pruning %s stopped at %.0f%% of its FLOPs, above the %.0f%% asked for (at most %.0f%% "
                             "of each layer's channels go, counts rounded to multiples of %s); lower --round-to or "
                             "keep more FLOPs" % (type(model).__name__, 100 * flops / start, 100 * target_flops,
                                                  100 * MAX_RATIO, round_to or 1))
        if between_steps is not None and step < steps:
            between_steps(model, step)
            model.eval()
    return model


def width_plan(arch, arch_kwargs, pruned):
    """The width plan of ``pruned``: every layer whose widths differ from the unpruned network's.

    Raises:
        PruneError: a layer with weights that changed shape but is not a type ``networks.widths`` narrows.

    Example:
        >>> width_plan("unet", {"num_classes": 14}, networks.create_model("unet"))
        {}
    """
    original = dict(networks.create_model(arch, **arch_kwargs).named_modules())
    plan = {}
    for name, module in pruned.named_modules():
        entry, before = plan_entry(module), original.get(name)
        if entry is not None and entry != plan_entry(before):
            plan[name] = entry
        elif entry is None and before is not None and _shapes(module) != _shapes(before):
            raise PruneError("pruning changed %s (%s), which networks/widths.py cannot rebuild"
                             % (name, type(module).__name__))
    return plan


def _shapes(module):
    return [tuple(t.shape) for t in list(module.parameters(recurse=False)) + list(module.buffers(recurse=False))]


def rebuild_check(arch, arch_kwargs, pruned, example):
    """Rebuild ``arch_kwargs`` (width plan included) as the device does, load ``pruned``'s weights
    strictly and compare the logits; returns the rebuilt model.

    Raises:
        PruneError: the weights do not fit, or the rebuilt network computes something else (its
            forward code keeps widths of its own, which the plan cannot change).
    """
    rebuilt = networks.create_model(arch, **arch_kwargs).eval()
    try:
        rebuilt.load_state_dict(pruned.state_dict(), strict=True)
    except RuntimeError as error:
        raise PruneError("the pruned %s does not rebuild from its width plan: %s"
                         % (arch, _first_line(error))) from None
    with torch.no_grad():
        expected, got = pruned.eval()(example), rebuilt(example)
    if expected.shape != got.shape or not torch.allclose(expected, got, atol=1e-4, rtol=1e-4):
        raise PruneError("the pruned %s rebuilt from its width plan computes other logits (its forward code "
                         "keeps unpruned widths of its own)" % arch)
    return rebuilt
