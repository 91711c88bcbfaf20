"""Distillation: CWD and logits KD against loop-by-loop restatements of their formulas (values and
gradients), a frozen teacher through training, a teacher at another input size, exact resume with
adapters, the per-term history and the config's cross-key errors."""
import json
import math
import subprocess

import pytest
import torch

from lowpower.checkpoint import load_checkpoint
from lowpower.train import distill
from lowpower.train import trainer as train_module
from lowpower.train.distill import cwd_loss, kd_loss
from lowpower.train.trainer import main as train_main
from tests.test_resume import stop_after_steps

pytestmark = pytest.mark.usefixtures("single_torch_thread")

STUDENT = ["model.arch=unet_lighter", "model.kwargs={base_width: 4, depth: 2}", "train.class_weights=null"]


def cwd_by_loops(student, teacher, temperature):
    """CWD written out: for every image n and channel c, softmax over the positions, then
    sum_i p_t(i) * (log p_t(i) - log p_s(i)); the mean over (n, c), times T^2."""
    n_images, channels = student.shape[:2]
    total = 0.0
    for n in range(n_images):
        for c in range(channels):
            s = student[n, c].reshape(-1) / temperature
            t = teacher[n, c].reshape(-1) / temperature
            s_norm = torch.log(sum(torch.exp(v) for v in s))
            t_norm = torch.log(sum(torch.exp(v) for v in t))
            for i in range(s.numel()):
                p_t = torch.exp(t[i] - t_norm)
                total = total + p_t * ((t[i] - t_norm) - (s[i] - s_norm))
    return total * temperature ** 2 / (n_images * channels)


def kd_by_loops(student, teacher, temperature, target, ignore):
    """Logits KD written out: per pixel, KL over the classes of the softened distributions; the
    mean over the pixels whose label is not ``ignore``, times T^2."""
    total, count = 0.0, 0
    n_images, classes, height, width = student.shape
    for n in range(n_images):
        for y in range(height):
            for x in range(width):
                if target[n, y, x] == ignore:
                    continue
                s = student[n, :, y, x] / temperature
                t = teacher[n, :, y, x] / temperature
                s_norm = torch.log(sum(torch.exp(v) for v in s))
                t_norm = torch.log(sum(torch.exp(v) for v in t))
                for c in range(classes):
                    total = total + torch.exp(t[c] - t_norm) * ((t[c] - t_norm) - (s[c] - s_norm))
                count += 1
    return total / count * temperature ** 2


@pytest.mark.parametrize("temperature", [1.0, 3.5])
def test_cwd_equals_its_formula_in_value_and_gradient(temperature):
    generator = torch.Generator().manual_seed(1)
    student = torch.randn(2, 3, 3, 4, generator=generator, dtype=torch.float64, requires_grad=True)
    teacher = 2 * torch.randn(2, 3, 3, 4, generator=generator, dtype=torch.float64)
    fast, slow = cwd_loss(student, teacher, temperature), cwd_by_loops(student, teacher, temperature)
    assert fast.item() == pytest.approx(slow.item(), rel=1e-10) and fast.item() > 0.01
    (grad_fast,) = torch.autograd.grad(fast, student)
    (grad_slow,) = torch.autograd.grad(slow, student)
    assert torch.allclose(grad_fast, grad_slow, rtol=1e-9, atol=1e-12) and grad_fast.abs().max() > 1e-3


@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_logits_kd_equals_its_formula_with_ignored_pixels(temperature):
    generator = torch.Generator().manual_seed(2)
    student = torch.randn(2, 4, 3, 3, generator=generator, dtype=torch.float64, requires_grad=True)
    teacher = 2 * torch.randn(2, 4, 3, 3, generator=generator, dtype=torch.float64)
    target = torch.randint(0, 4, (2, 3, 3), generator=generator)
    target[0, 1, :] = 255
    target[1, 0, 0] = 255
    fast = kd_loss(student, teacher, temperature, target)
    slow = kd_by_loops(student, teacher, temperature, target, 255)
    assert fast.item() == pytest.approx(slow.item(), rel=1e-10) and fast.item() > 0.01
    (grad_fast,) = torch.autograd.grad(fast, student)
    (grad_slow,) = torch.autograd.grad(slow, student)
    assert torch.allclose(grad_fast, grad_slow, rtol=1e-9, atol=1e-12)
    assert torch.all(grad_fast[0, :, 1, :] == 0), "ignored pixels get no gradient"


@pytest.fixture(scope="module")
def data(synthetic_data):
    return synthetic_data(train=8, val=2, test=0, seed=11)


@pytest.fixture(scope="module")
def teacher(float_checkpoint):
    """The session's tiny trained UNet (tests/conftest.py, base width 4, depth 2): a real train.py
    checkpoint to distil from."""
    return float_checkpoint


def watch_teacher(monkeypatch):
    """Capture the run's Distiller and record, at every teacher forward, its mode, whether grad was
    on and the input's size."""
    seen = {"calls": []}
    real = train_module.build_distiller

    def wrapped(*args, **kwargs):
        distiller = real(*args, **kwargs)
        seen["distiller"] = distiller
        distiller.teacher.register_forward_pre_hook(lambda module, inputs: seen["calls"].append(
            (module.training, torch.is_grad_enabled(), tuple(inputs[0].shape[-2:]))))
        return distiller

    monkeypatch.setattr(train_module, "build_distiller", wrapped)
    return seen


def test_teacher_stays_frozen_in_eval_mode_through_training(data, teacher, train_args, tmp_path, monkeypatch,
                                                            restore_signal_handlers):
    seen = watch_teacher(monkeypatch)
    args = train_args(data, tmp_path / "run", *STUDENT, "train.epochs=1", "distill.teacher=%s" % teacher,
                      "distill.kd_weight=1.0", "distill.cwd_weight=1.0")
    assert train_main(args) == 0
    model = seen["distiller"].teacher
    assert len(seen["calls"]) == 4, "one teacher forward per training step (8 images, batch 2)"
    assert all(not training and not grad for training, grad, _ in seen["calls"])
    assert not model.training
    assert all(not p.requires_grad and p.grad is None for p in model.parameters())
    saved = load_checkpoint(teacher)["model"]
    assert all(torch.equal(value, saved[name]) for name, value in model.state_dict().items()), \
        "weights and BatchNorm statistics unchanged"


def test_teacher_at_another_input_size(data, teacher, train_args, tmp_path, monkeypatch, restore_signal_handlers):
    seen = watch_teacher(monkeypatch)
    args = train_args(data, tmp_path / "run", *STUDENT, "train.epochs=1", "data.crop_size=24",
                      "distill.teacher=%s" % teacher, "distill.teacher_input_size=48", "distill.kd_weight=1.0")
    assert train_main(args) == 0  # data.input_size is 32: the teacher sees each 24-pixel crop at 36
    assert {size for _, _, size in seen["calls"]} == {(36, 36)}
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert math.isfinite(history[0]["kd_loss"]) and history[0]["kd_loss"] > 0


def test_distillation_resume_is_exact_with_adapters_and_logs_each_term(data, teacher, train_args, tmp_path,
                                                                        monkeypatch, restore_signal_handlers):
    extra = (*STUDENT, "train.epochs=2", "distill.teacher=%s" % teacher, "distill.kd_weight=0.5",
             "distill.kd_temperature=2.0", "distill.cwd_weight=1.0", "distill.feature_weight=0.3",
             "distill.feature_layers=['down.0:down.0', 'up.0:up.1']")
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert train_main(train_args(data, straight, *extra)) == 0
    with monkeypatch.context() as patch:
        stop_after_steps(patch, 6)  # 4 steps per epoch: stops in epoch 2 after its 2nd step
        assert train_main(train_args(data, split, *extra)) == train_module.EXIT_STOPPED
    assert train_main(train_args(data, split, *extra) + ["--resume", "auto"]) == 0
    a, b = load_checkpoint(straight / "last.pt"), load_checkpoint(split / "last.pt")
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name
    adapters = a["distill"]["adapters"]
    assert len(adapters) == 4, "weight and bias of two 1x1 adapters"
    for name, tensor in adapters.items():
        assert torch.equal(tensor, b["distill"]["adapters"][name]), name
    assert adapters["1.weight"].shape == (4, 8, 1, 1)  # student up.0 (8 channels) -> teacher up.1 (4)
    keys = ("loss", "kd_loss", "cwd_loss", "feature_loss", "task_loss")
    for record_a, record_b in zip(a["history"], b["history"]):
        assert [record_a[k] for k in keys] == pytest.approx([record_b[k] for k in keys], rel=1e-9)
    first = a["history"][0]
    assert first["task_loss"] == pytest.approx(first["loss"] - 0.5 * first["kd_loss"] - first["cwd_loss"]
                                               - 0.3 * first["feature_loss"])
    assert (straight / "curves.png").stat().st_size > 0


@pytest.mark.parametrize("overrides, words", [
    (["distill.kd_weight=1.0"], ["distill.kd_weight", "distill.teacher is null"]),
    (["distill.teacher={teacher}"], ["all 0"]),
    (["distill.teacher=runs/none/best.pt", "distill.cwd_weight=1.0"], ["runs/none/best.pt does not exist"]),
    (["distill.teacher={teacher}", "distill.feature_weight=1.0", "distill.feature_layers=['nope:down.0']"],
     ["student has no layer nope"]),
    (["distill.teacher={teacher}", "distill.feature_weight=1.0"], ["feature_layers"]),
])
def test_config_mistakes_are_one_line_errors(data, teacher, train_args, tmp_path, capsys, overrides, words,
                                             restore_signal_handlers):
    args = train_args(data, tmp_path / "run", *STUDENT, "train.epochs=1",
                      *[text.format(teacher=teacher) for text in overrides])
    assert train_main(args) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("train.py: error: ") and all(word in error for word in words), error


def test_a_teacher_with_other_classes_is_refused(teacher):
    with pytest.raises(distill.ConfigError, match="predicts 14 classes, the student 19"):
        distill.load_teacher(teacher, 19, torch.device("cpu"))


def test_curves_draw_each_distillation_term(monkeypatch, tmp_path):
    from lowpower.train import plots

    drawn = {}
    monkeypatch.setattr(plots.plt, "close", lambda figure: drawn.setdefault("figure", figure))
    history = [{"epoch": e, "loss": 2.0 / e, "kd_loss": 0.5 / e, "cwd_loss": 0.1, "task_loss": 1.0,
                "mean_dice": 0.1 * e, "miou": 0.05 * e} for e in (1, 2)]
    plots.plot_curves(history, tmp_path / "curves.png")
    labels = [text.get_text() for text in drawn["figure"].axes[0].get_legend().get_texts()]
    assert labels == ["total", "task_loss", "kd_loss", "cwd_loss"]
    assert list(drawn["figure"].axes[0].lines[2].get_ydata()) == [0.5, 0.25]


@pytest.mark.slow  # torchrun: two training processes (gloo)
def test_two_processes_distil_with_adapters(data, teacher, tmp_path):
    """torchrun, 2 processes on the CPU: every rank loads the teacher, the adapters' gradients are
    averaged (the saving collective runs on both ranks) and the checkpoint holds them."""
    from tests.test_distributed import ROOT, tiny_overrides, torchrun

    out = tmp_path / "ddp"
    overrides = tiny_overrides(data) + [*STUDENT, "data.dataset=synthetic", "distill.teacher=%s" % teacher,
                                        "distill.cwd_weight=1.0", "distill.feature_weight=1.0",
                                        "distill.feature_layers=['down.0:down.0']"]
    done = subprocess.run(torchrun(out, overrides), cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    state = load_checkpoint(out / "last.pt")
    assert set(state["distill"]["adapters"]) == {"0.weight", "0.bias"}
    assert {"cwd_loss", "feature_loss", "task_loss"} <= set(state["history"][0])


def average_on_two_ranks(rank, port, results):
    torch.distributed.init_process_group("gloo", init_method="tcp://127.0.0.1:%d" % port, rank=rank, world_size=2)
    torch.manual_seed(0)
    adapter = torch.nn.Conv2d(2, 3, 1)
    distill.average_gradients_across_processes(adapter)
    adapter(torch.full((1, 2, 2, 2), float(rank + 1))).sum().backward()
    results[rank] = adapter.weight.grad.clone()
    torch.distributed.destroy_process_group()


@pytest.mark.slow  # two spawned gloo processes
def test_adapter_gradients_are_averaged_over_processes():
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    results = mp.Manager().dict()
    mp.spawn(average_on_two_ranks, args=(port, results), nprocs=2)
    # d(sum of outputs)/d(weight[o, i]) = sum of input channel i = 4 * (rank + 1): mean of 4 and 8 is 6
    assert torch.equal(results[0], torch.full((3, 2, 1, 1), 6.0)) and torch.equal(results[1], results[0])
