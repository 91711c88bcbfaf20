"""Knowledge distillation in the trainer: a frozen teacher checkpoint, logits KD, channel-wise
distillation (CWD) and feature distillation through 1x1 adapters, each with its own weight.

The ``distill:`` config section turns it on (``distill.teacher`` names any lowpower checkpoint);
train.py adds :class:`Distiller`'s weighted terms to the task loss at every step and logs each
term per epoch (``kd_loss``, ``cwd_loss``, ``feature_loss``, ``task_loss`` in history.json and
curves.png). The adapters train with the student and live in the checkpoint's ``distill`` entry
(so a resume is exact); the packager never reads it, so they are not shipped.

Example:
    >>> s, t = torch.randn(2, 14, 8, 8), torch.randn(2, 14, 8, 8)
    >>> float(cwd_loss(s, s, 4.0)), float(kd_loss(s, s, 2.0))
    (0.0, 0.0)
"""
from pathlib import Path

import torch
import torch.nn.functional as F

from evaluation.contract import IGNORE_INDEX
from lowpower import checkpoint as ckpt
from lowpower.config import ConfigError
from lowpower.paths import REPO_ROOT
from lowpower.train.distributed import all_reduce_mean
from lowpower.train.engine import amp_dtype

TERMS = ("kd", "cwd", "feature")  # history keys: <term>_loss, plus task_loss


def as_float(tensor):
    """fp16/bf16 (autocast) -> fp32 for the softmaxes; fp32 and fp64 stay as they are."""
    return tensor if tensor.dtype in (torch.float32, torch.float64) else tensor.float()


def kd_loss(student, teacher, temperature, target=None, ignore_index=IGNORE_INDEX):
    """Logits KD (Hinton et al.): KL(teacher || student) of the per-pixel class distributions
    softened at ``temperature``, averaged over the pixels whose label is not ``ignore_index``,
    times T^2 (so its gradient keeps the task loss's scale as T grows).

    Args:
        student, teacher: (N, C, H, W) logits of the same size.
        temperature: T > 0.
        target: (N, H', W') labels or None; resized (nearest) to H, W when they differ.

    Example:
        >>> kd_loss(torch.zeros(1, 3, 2, 2), torch.zeros(1, 3, 2, 2), 2.0).item()
        0.0
    """
    log_s = F.log_softmax(as_float(student) / temperature, dim=1)
    log_t = F.log_softmax(as_float(teacher) / temperature, dim=1)
    per_pixel = (log_t.exp() * (log_t - log_s)).sum(1)
    if target is not None:
        if target.shape[-2:] != per_pixel.shape[-2:]:
            target = F.interpolate(target[:, None].float(), size=per_pixel.shape[-2:], mode="nearest")[:, 0].long()
        per_pixel = per_pixel[target != ignore_index]
    if per_pixel.numel() == 0:  # every pixel ignored: no signal, but keep the graph
        return student.sum() * 0.0
    return per_pixel.mean() * temperature ** 2


def cwd_loss(student, teacher, temperature):
    """Channel-wise distillation (Shu et al. 2021): each channel's map becomes a distribution over
    the H*W positions (softmax at ``temperature``); KL(teacher || student) is summed over the
    positions, averaged over channels and images, and scaled by T^2.

    Args:
        student, teacher: (N, C, H, W) maps of the same shape (logits, or adapted features).
        temperature: T > 0.

    Example:
        >>> round(cwd_loss(torch.zeros(1, 2, 2, 2), torch.eye(2)[None], 1.0).item(), 4)
        0.1014
    """
    n, c = student.shape[:2]
    log_s = F.log_softmax(as_float(student).flatten(2) / temperature, dim=2)
    log_t = F.log_softmax(as_float(teacher).flatten(2) / temperature, dim=2)
    return (log_t.exp() * (log_t - log_s)).sum() * temperature ** 2 / (n * c)


def freeze(model):
    """Eval mode and no gradients, for good: the teacher's BatchNorm statistics never move."""
    model.eval()
    for param in model.parameters():
        param.requires_grad_(False)
    return model


def resolve_path(path):
    """A checkpoint path as given when it exists from here, else taken from the repository root."""
    path = Path(path)
    return path if path.is_absolute() or path.exists() else REPO_ROOT / path


def check_teacher_runs(kind, path, device, amp):
    """Refuse a teacher whose kind cannot run where the student trains: an int8 one (CPU kernels that
    take float32 only) on a GPU, or under the autocast ``train.amp`` turns on (bf16 on a CPU with
    native bf16), which would fail at the first step with a traceback.

    Raises:
        ConfigError: one line naming the teacher file and the fix.

    Example:
        >>> check_teacher_runs(ckpt.FLOAT, "runs/demo/best.pt", torch.device("cpu"), amp=True)
    """
    if not kind.cpu_only:
        return
    fix = "or distil from the float checkpoint it came from (e.g. runs/NAME/best.pt)"
    if device.type != "cpu":
        raise ConfigError("distill.teacher %s is %s, which runs on the CPU only, and training runs on %s: train "
                          "on the CPU (--set train.device=cpu), %s" % (path, kind.title, device.type, fix))
    dtype = amp_dtype(device, amp)
    if dtype is not None:
        raise ConfigError("distill.teacher %s is %s, whose kernels take float32 only, and train.amp runs each step "
                          "under %s autocast: set train.amp=false, %s"
                          % (path, kind.title, str(dtype).replace("torch.", ""), fix))


def load_teacher(path, num_classes, device, amp=False):
    """The network of checkpoint ``path`` (built from its own arch and kwargs), frozen, on ``device``.

    The file is read by the safe loader (``lowpower.checkpoint.load_checkpoint``: ``weights_only``,
    one-line refusals), so a crafted teacher never runs.

    Args:
        path: the checkpoint (``distill.teacher``).
        num_classes: the student's class count.
        device: where training runs.
        amp: ``train.amp``; an int8 teacher cannot run under the autocast it turns on.

    Raises:
        ConfigError: unreadable, holds code (never run) or not a lowpower checkpoint; its class count
            differs from the student's ``num_classes``; it cannot run on ``device`` or under ``amp``
            (:func:`check_teacher_runs`).

    Example:
        >>> teacher = load_teacher("runs/demo/best.pt", 14, torch.device("cpu"))  # doctest: +SKIP
    """
    try:
        state = ckpt.load_checkpoint(resolve_path(path))
    except ckpt.CheckpointError as error:  # name the config key, as model.init_from's refusals do
        raise ConfigError("distill.teacher: %s" % error) from None
    classes = state["arch_kwargs"].get("num_classes", 14)
    if classes != num_classes:
        raise ConfigError("distill.teacher %s predicts %d classes, the student %d (data.num_classes); use a teacher "
                          "trained on the same data" % (path, classes, num_classes))
    check_teacher_runs(ckpt.kind_of(state), path, device, amp)
    return freeze(ckpt.build_model(state).to(device))


class FeatureTap:
    """Keeps the latest output of named submodules of ``model`` (forward hooks).

    Example:
        >>> tap = FeatureTap(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1)), ["0"], "student")
        >>> _ = tap.model(torch.zeros(1, 3, 2, 2)); tap.outputs["0"].shape
        torch.Size([1, 4, 2, 2])
    """

    def __init__(self, model, names, role):
        self.model, self.outputs = model, {}
        modules = dict(model.named_modules())
        missing = [name for name in names if name not in modules]
        if missing:
            raise ConfigError("distill.feature_layers: the %s has no layer %s; some of its layers: %s"
                              % (role, ", ".join(missing), ", ".join(n for n in list(modules)[1:40])))
        for name in names:
            modules[name].register_forward_hook(self._keeper(name))

    def _keeper(self, name):
        def keep(module, inputs, output):
            self.outputs[name] = output
        return keep


def parse_feature_layers(pairs):
    """``["student.layer:teacher.layer", ...]`` -> ``[(student, teacher), ...]``.

    Example:
        >>> parse_feature_layers(["down.1:down.2"])
        [('down.1', 'down.2')]
    """
    parsed = []
    for pair in pairs:
        parts = str(pair).split(":")
        if len(parts) != 2 or not all(parts):
            raise ConfigError("distill.feature_layers: %r is not 'student_layer:teacher_layer'" % (pair,))
        parsed.append((parts[0].strip(), parts[1].strip()))
    return parsed


def check_distill_config(cfg):
    """The cross-key rules of the ``distill`` section; a ConfigError names the keys and the fix."""
    section = cfg["distill"]
    weights = {term: section["%s_weight" % term] for term in TERMS}
    if section["teacher"] is None:
        used = ["distill.%s_weight" % term for term, weight in weights.items() if weight > 0]
        if used:
            raise ConfigError("%s > 0 but distill.teacher is null: name a teacher checkpoint, or set the weights to 0"
                              % ", ".join(used))
        return
    if not resolve_path(section["teacher"]).is_file():
        raise ConfigError("distill.teacher %s does not exist: train the teacher first (e.g. make demo writes "
                          "runs/demo/best.pt) or name another checkpoint" % section["teacher"])
    if not any(weight > 0 for weight in weights.values()):
        raise ConfigError("distill.teacher is set but kd_weight, cwd_weight and feature_weight are all 0: "
                          "give at least one a weight, or set distill.teacher: null")
    if (weights["feature"] > 0) != bool(section["feature_layers"]):
        raise ConfigError("distill.feature_weight and distill.feature_layers go together: set both (a weight > 0 "
                          "and 'student_layer:teacher_layer' names) or neither")


def probe_channels(model, tap, size=64):
    """Channels of each tapped output, from one forward of a zero image in eval mode (so the
    student's BatchNorm statistics are left as they were)."""
    training = model.training
    device = next(model.parameters()).device
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, 3, size, size, device=device))
    model.train(training)
    return {name: output.shape[1] for name, output in tap.outputs.items()}


def average_gradients_across_processes(module):
    """Under torchrun, average each parameter's gradient over the processes as it is computed:
    the adapters sit outside the student's DistributedDataParallel, which only averages its own."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return
    world = torch.distributed.get_world_size()

    def average(grad):
        grad = grad.clone()
        torch.distributed.all_reduce(grad)
        return grad / world

    for param in module.parameters():
        param.register_hook(average)


class Distiller:
    """The teacher and the distillation terms of one run; called at every training step.

    ``distiller(images, student_logits, masks)`` runs the teacher (no gradients, eval mode, at its
    own input size when ``distill.teacher_input_size`` is set; its logits are resized bilinearly to
    the student's), and returns the weighted sum of the enabled terms. It also keeps per-term sums
    for :meth:`epoch_record`.

    Args:
        cfg: resolved run config (``distill``, ``data.input_size``, ``data.num_classes``).
        student: the unwrapped student (feature hooks go on its named layers).
        device: where the teacher runs.

    Example:
        >>> distiller = Distiller(cfg, model, torch.device("cpu"))  # doctest: +SKIP
        >>> loss = criterion(logits, masks) + distiller(images, logits, masks)  # doctest: +SKIP
    """

    def __init__(self, cfg, student, device):
        section = self.section = cfg["distill"]
        self.teacher = load_teacher(section["teacher"], cfg["data"]["num_classes"], device, cfg["train"]["amp"])
        size = section["teacher_input_size"]
        self.teacher_scale = 1.0 if size is None else size / cfg["data"]["input_size"]
        self.weights = {term: section["%s_weight" % term] for term in TERMS}
        self.pairs = parse_feature_layers(section["feature_layers"])
        self.adapters = torch.nn.ModuleList()
        if self.pairs:
            self.student_tap = FeatureTap(student, [s for s, _ in self.pairs], "student")
            self.teacher_tap = FeatureTap(self.teacher, [t for _, t in self.pairs], "teacher")
            s_channels = probe_channels(student, self.student_tap)
            t_channels = probe_channels(self.teacher, self.teacher_tap)
            self.adapters.extend(torch.nn.Conv2d(s_channels[s], t_channels[t], 1) for s, t in self.pairs)
            self.adapters.to(device)
            average_gradients_across_processes(self.adapters)
        self.sums, self.steps = {term: 0.0 for term in TERMS}, 0

    def teacher_logits(self, images, size):
        """The teacher's logits for ``images`` (at its input scale), resized to ``size``."""
        self.teacher.eval()  # whatever put it in training mode, its statistics stay fixed
        with torch.no_grad():
            if self.teacher_scale != 1.0:
                images = F.interpolate(images, scale_factor=self.teacher_scale, mode="bilinear",
                                       align_corners=False, recompute_scale_factor=False)
            logits = self.teacher(images).float()
        if logits.shape[-2:] != size:
            logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
        return logits

    def feature_term(self):
        """Mean over the layer pairs of the MSE between the adapted student map (resized to the
        teacher's) and the teacher's map."""
        total = 0.0
        for (s_name, t_name), adapter in zip(self.pairs, self.adapters):
            target = self.teacher_tap.outputs[t_name].float()
            adapted = adapter(self.student_tap.outputs[s_name].float())
            if adapted.shape[-2:] != target.shape[-2:]:
                adapted = F.interpolate(adapted, size=target.shape[-2:], mode="bilinear", align_corners=False)
            total = total + F.mse_loss(adapted, target)
        return total / len(self.pairs)

    def __call__(self, images, logits, masks):
        teacher = self.teacher_logits(images, logits.shape[-2:])
        terms = {}
        if self.weights["kd"] > 0:
            terms["kd"] = kd_loss(logits, teacher, self.section["kd_temperature"], masks)
        if self.weights["cwd"] > 0:
            terms["cwd"] = cwd_loss(logits, teacher, self.section["cwd_temperature"])
        if self.weights["feature"] > 0:
            terms["feature"] = self.feature_term()
        self.steps += 1
        for term, value in terms.items():
            self.sums[term] += value.item()
        return sum(self.weights[term] * value for term, value in terms.items())

    def reduced_sums(self):
        """The running sums averaged over the processes (every rank must call it)."""
        return {term: all_reduce_mean(value) for term, value in self.sums.items()}, all_reduce_mean(self.steps)

    def epoch_record(self, total_loss):
        """``{kd_loss, cwd_loss, feature_loss, task_loss}`` of the epoch (unweighted means per step;
        task_loss is the total minus the weighted terms), then the sums restart. All ranks call it."""
        sums, steps = self.reduced_sums()
        record = {"%s_loss" % term: sums[term] / max(steps, 1) for term in TERMS if self.weights[term] > 0}
        record["task_loss"] = total_loss - sum(self.weights[t] * record["%s_loss" % t] for t in TERMS
                                               if self.weights[t] > 0)
        self.sums, self.steps = {term: 0.0 for term in TERMS}, 0
        return record

    def state_dict(self):
        """Adapter weights and the epoch's running sums (all ranks call it: the sums are averaged)."""
        sums, steps = self.reduced_sums()
        return {"adapters": self.adapters.state_dict(), "sums": sums, "steps": steps}

    def load_state_dict(self, state):
        self.adapters.load_state_dict(state["adapters"])
        self.sums, self.steps = dict(state["sums"]), state["steps"]


def build_distiller(cfg, student, optimizer, device, log=None):
    """The run's :class:`Distiller`, or None when ``distill.teacher`` is null; the adapters (if any)
    join ``optimizer`` as two more parameter groups (weights with ``train.weight_decay``, biases without).

    Call it after the optimizer and before the scheduler, so the schedule covers the adapters too.

    Example:
        >>> distiller = build_distiller(cfg, model, optimizer, torch.device("cpu"), print)  # doctest: +SKIP
    """
    check_distill_config(cfg)
    if cfg["distill"]["teacher"] is None:
        return None
    distiller = Distiller(cfg, student, device)
    params = list(distiller.adapters.parameters())
    if params:  # decay on the weights only, as build_optimizer does for the student
        optimizer.add_param_group({"params": [p for p in params if p.ndim > 1],
                                   "weight_decay": cfg["train"]["weight_decay"]})
        optimizer.add_param_group({"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0})
    if log:
        teacher_params = sum(p.numel() for p in distiller.teacher.parameters())
        log("distillation from %s (%.2f M parameters, frozen): %s" % (
            cfg["distill"]["teacher"], teacher_params / 1e6,
            ", ".join("%s x%g" % (t, w) for t, w in distiller.weights.items() if w > 0)))
    return distiller
