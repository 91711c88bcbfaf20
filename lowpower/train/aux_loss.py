"""Losses on a network's auxiliary outputs (``loss.aux_weights``): deep supervision and boundary heads.

Real-time networks are published with extra heads that only training uses: PIDNet's P-branch
segmentation and D-branch boundary heads, DDRNet's and PP-LiteSeg's intermediate segmentation heads.
A zoo network lists them in its class attribute ``aux_heads`` (``(name, kind)`` pairs) and returns them in
``train()`` when its ``aux_outputs`` names them; ``eval()`` returns the logits alone, so the device path
never changes. A head of kind ``segmentation`` gets the run's own loss (cross-entropy, class weights, the
Dice term) on its logits resized to the mask; a ``boundary`` head gets PIDNet's class-balanced binary
cross-entropy against the label edges.

Example:
    >>> model = networks.create_model("pidnet_s")  # doctest: +SKIP
    >>> aux = AuxiliaryLoss.from_config({"loss": {"aux_weights": {"aux": 0.4}}}, model, criterion)  # doctest: +SKIP
    >>> model.aux_outputs  # doctest: +SKIP
    ('aux',)
"""
import torch
import torch.nn.functional as F

from lowpower.config import ConfigError

KINDS = ("segmentation", "boundary")


def aux_heads(model):
    """``{name: kind}`` of the auxiliary outputs ``model``'s class declares (empty for most networks).

    Example:
        >>> aux_heads(torch.nn.Conv2d(3, 3, 1))
        {}
    """
    return dict(getattr(type(model), "aux_heads", ()))


def split_outputs(outputs):
    """``(logits, {name: aux tensor})`` from what a network returned in training.

    Example:
        >>> split_outputs(torch.zeros(1))[1]
        {}
    """
    if isinstance(outputs, dict):
        return outputs["out"], {name: value for name, value in outputs.items() if name != "out"}
    return outputs, {}


def boundary_target(masks, width=1):
    """1 where a pixel's label differs from one within ``width`` pixels, else 0 (float, N x 1 x H x W).

    The ignore id counts as a label, so the edge of an ignored region is an edge, as in PIDNet's
    data loader (edges of the label map, found with Canny and thickened).

    Example:
        >>> boundary_target(torch.tensor([[[0, 0, 1, 1]]]))[0, 0, 0].tolist()
        [0.0, 1.0, 1.0, 0.0]
    """
    labels = masks.unsqueeze(1).float()
    size = 2 * width + 1
    padded = F.pad(labels, (width, width, width, width), mode="replicate")
    high = F.max_pool2d(padded, size, stride=1)
    low = -F.max_pool2d(-padded, size, stride=1)
    return (high != low).float()


def boundary_loss(logits, target):
    """PIDNet's boundary loss: binary cross-entropy, each class weighted by the other's pixel share.

    Edges are a few percent of the pixels; weighting them by the share of non-edges (and non-edges by
    the share of edges) keeps the head from predicting "no edge" everywhere.

    Example:
        >>> round(boundary_loss(torch.zeros(1, 1, 2, 2), torch.tensor([[[[1., 0.], [0., 0.]]]])).item(), 4)
        0.2599
    """
    target = target.float()
    positive = target.sum()
    total = float(target.numel())
    weight = torch.where(target > 0.5, (total - positive) / total, positive / total)
    return F.binary_cross_entropy_with_logits(logits.float(), target, weight=weight)


class AuxiliaryLoss(object):
    """The weighted sum of the auxiliary outputs' losses.

    Args:
        weights: ``{name: weight}``; names with weight 0 are left out (their heads are not computed).
        kinds: ``{name: kind}`` of the network's heads (:func:`aux_heads`).
        criterion: the run's loss on logits (``SegmentationLoss``), for ``segmentation`` heads.
    """

    def __init__(self, weights, kinds, criterion):
        self.weights = {name: float(weight) for name, weight in weights.items() if weight > 0}
        self.kinds = {name: kinds[name] for name in self.weights}
        self.criterion = criterion
        self.terms = {}  # the last call's weighted terms, see __call__

    @classmethod
    def from_config(cls, cfg, model, criterion):
        """The loss ``loss.aux_weights`` asks for, with ``model.aux_outputs`` set to those heads; None when
        it asks for none. ``model`` is the bare network (not wrapped in DDP)."""
        weights = cfg.get("loss", {}).get("aux_weights", {})
        kinds = aux_heads(model)
        unknown = sorted(set(weights) - set(kinds))
        if unknown:  # config validation names them first; a network built another way lands here
            raise ConfigError("loss.aux_weights names %s, which %s does not have (its heads: %s)"
                             % (", ".join(unknown), type(model).__name__, ", ".join(kinds) or "none"))
        loss = cls(weights, kinds, criterion)
        if loss.weights and getattr(model, "width_plan", None):
            # the pruner traced the eval() graph: the heads still read the layers' old widths
            raise ConfigError("loss.aux_weights: a pruned network (model.init_from) trains without auxiliary "
                              "outputs, its heads read layers the pruner narrowed; set loss.aux_weights={}")
        if hasattr(model, "aux_outputs"):
            model.aux_outputs = tuple(loss.weights)
        return loss if loss.weights else None

    def head_losses(self, aux, masks):
        """``{name: unweighted loss}`` of each auxiliary output against ``masks`` (N x H x W ids).

        The criterion's own ``terms`` (those of the main logits) are put back after the segmentation
        heads' calls, so they still describe the main output afterwards.
        """
        values, main_terms = {}, getattr(self.criterion, "terms", None)
        for name, kind in self.kinds.items():
            output = F.interpolate(aux[name].float(), size=masks.shape[-2:], mode="bilinear", align_corners=False)
            if kind == "boundary":
                values[name] = boundary_loss(output, boundary_target(masks))
            else:
                values[name] = self.criterion(output, masks)
        if main_terms is not None:
            self.criterion.terms = main_terms
        return values

    def __call__(self, aux, masks):
        """The weighted sum; ``self.terms`` then holds ``{"aux/<name>": weight * loss}`` (detached 0-d
        tensors that sum to it) until the next call.

        Example:
            >>> aux_loss = AuxiliaryLoss({"aux": 0.4}, {"aux": "segmentation"}, criterion)  # doctest: +SKIP
            >>> value = aux_loss({"aux": aux_logits}, masks); sorted(aux_loss.terms)  # doctest: +SKIP
            ['aux/aux']
        """
        weighted = {name: self.weights[name] * value for name, value in self.head_losses(aux, masks).items()}
        self.terms = {"aux/%s" % name: value.detach() for name, value in weighted.items()}
        return sum(weighted.values())


def unused_heads(model):
    """Whether some of ``model``'s auxiliary modules get no gradient (DDP must then look for unused
    parameters). A network lists the modules only its auxiliary outputs use in ``aux_modules``.

    Example:
        >>> unused_heads(torch.nn.Conv2d(3, 3, 1))
        False
    """
    heads = aux_heads(model)
    return bool(getattr(type(model), "aux_modules", ())) and set(getattr(model, "aux_outputs", ())) != set(heads)

