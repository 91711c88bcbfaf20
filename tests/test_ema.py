"""train.ema: the average equals its formula after k steps, skipped steps do not count, validation and
best.pt use the average while last.pt keeps the raw weights, the QAT combination is refused, and under
two gloo ranks the averages stay equal. Bit-exact resume with EMA on is in tests/test_resume.py."""
import math

import pytest
import torch

from lowpower.checkpoint import load_checkpoint
from lowpower.config import ConfigError, load_config
from lowpower.train.ema import WeightAverage, decay_at
from lowpower.train.trainer import main as train_main

pytestmark = pytest.mark.usefixtures("single_torch_thread")


def small_model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                               torch.nn.Conv2d(4, 2, 1))


def formula(snapshots, decay, warmup):
    """The EMA written out: the first update copies, the t-th after it mixes in (1 - d_t) of the weights."""
    average = {name: value.double().clone() for name, value in snapshots[0].items()}
    for t, weights in enumerate(snapshots[1:], start=1):
        d = decay * (1 - math.exp(-t / warmup))
        for name, value in weights.items():
            if value.is_floating_point():
                average[name] = d * average[name] + (1 - d) * value.double()
            else:
                average[name] = value.double()
    return average


@pytest.mark.parametrize("decay, warmup", [(0.9, 3), (0.5, 1)])
def test_the_average_equals_the_formula_after_k_steps(decay, warmup):
    model = small_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    ema = WeightAverage(model, decay, warmup).follow(optimizer)
    snapshots = []
    for step in range(7):
        model(torch.randn(2, 3, 6, 6) + step).square().mean().backward()
        optimizer.step()
        optimizer.zero_grad()
        snapshots.append({name: value.detach().clone() for name, value in model.state_dict().items()})
    expected = formula(snapshots, decay, warmup)
    averaged = ema.module.state_dict()
    assert int(ema.state_dict()["n_averaged"]) == 7
    for name, value in expected.items():  # BN running statistics are averaged too; the step count copied
        torch.testing.assert_close(averaged[name].double(), value, rtol=1e-6, atol=1e-7, msg=name)
    # and the average is not the weights: the test would pass for a plain copy otherwise
    assert not torch.allclose(averaged["0.weight"], model.state_dict()["0.weight"])


def test_decay_rises_from_zero_to_the_decay():
    assert decay_at(1, 0.999, 100) == pytest.approx(0.999 * (1 - math.exp(-0.01)))
    assert decay_at(10 ** 6, 0.999, 100) == pytest.approx(0.999)
    assert decay_at(1, 0.9, 0) == 0.9


def test_a_step_the_scaler_skips_is_not_averaged():
    model = small_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    ema = WeightAverage(model, 0.9, 0).follow(optimizer)
    model(torch.randn(1, 3, 5, 5)).sum().backward()
    optimizer.step()
    # GradScaler.step does not call optimizer.step when a gradient is inf; without a call, no update.
    model[0].weight.data.add_(1.0)
    assert int(ema.state_dict()["n_averaged"]) == 1
    assert not torch.equal(ema.module[0].weight, model[0].weight)


def test_validation_and_best_use_the_average_and_last_keeps_the_raw_weights(train_args, synthetic_data, tmp_path,
                                                                              restore_signal_handlers):
    data = synthetic_data(train=8, val=2, test=0, seed=5)
    out = tmp_path / "ema"
    # one validation, after the last epoch, so best.pt is that epoch's average
    assert train_main(train_args(data, out, "train.epochs=2", "train.val_every=2", "train.ema=true",
                                 "train.ema_decay=0.9", "train.ema_warmup=2")) == 0
    best, last = load_checkpoint(out / "best.pt"), load_checkpoint(out / "last.pt")
    assert best["epoch"] == last["epoch"] == 2
    for name, value in best["model"].items():
        assert torch.equal(value, last["ema"]["module." + name]), name
    assert any(not torch.equal(value, last["model"][name]) for name, value in best["model"].items())
    assert int(last["ema"]["n_averaged"]) == 8  # 4 steps per epoch, 2 epochs


def test_ema_with_qat_is_refused_naming_both_keys():
    with pytest.raises(ConfigError, match="train.ema.*quant.qat"):
        load_config(None, ["train.ema=true", "quant.qat=true"])


def average_on_a_rank(rank, port, results):
    """One gloo rank: DDP over a small model, each rank its own batches, the EMA of the unwrapped model."""
    torch.distributed.init_process_group("gloo", init_method="tcp://127.0.0.1:%d" % port, rank=rank, world_size=2)
    torch.set_num_threads(1)
    model = small_model()
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    ema = WeightAverage(model, 0.8, 2).follow(optimizer)
    torch.manual_seed(10 + rank)  # different data on each rank
    for _ in range(4):
        ddp(torch.randn(2, 3, 6, 6)).square().mean().backward()
        optimizer.step()
        optimizer.zero_grad()
    results[rank] = {name: value.detach().clone() for name, value in ema.module.named_parameters()}
    torch.distributed.destroy_process_group()


@pytest.mark.slow  # two spawned gloo processes
def test_the_averages_of_two_ranks_stay_equal():
    import torch.multiprocessing as mp

    from tests.test_distributed import _free_port  # here: the spawned ranks need neither module

    results = mp.Manager().dict()
    mp.spawn(average_on_a_rank, args=(_free_port(), results), nprocs=2)
    first, second = results[0], results[1]
    assert all(torch.equal(first[name], second[name]) for name in first)
    assert not torch.equal(first["0.weight"], small_model()[0].weight)  # it did move
