"""CpuSyncBatchNorm (lowpower.train.sync_bn): two gloo processes with different batches normalise,
update their running statistics and get gradients exactly as one process on the whole batch does;
without a process group it is nn.BatchNorm2d; convert_sync_batchnorm keeps every weight.

The two-process tests spawn gloo ranks (``@pytest.mark.slow``, as in tests/test_distributed.py); the
helpers of that file are imported inside the tests, so that the spawned ranks need not load torchvision."""
import subprocess
from pathlib import Path

import pytest
import torch
from torch import nn

import networks
from lowpower.train.sync_bn import CpuSyncBatchNorm, convert_sync_batchnorm

PER_RANK = 4
# (layer, momentum) per variant; None: the cumulative average of every batch so far.
VARIANTS = {"plain": (nn.BatchNorm2d, 0.1), "sync": (CpuSyncBatchNorm, 0.1),
            "sync_cumulative": (CpuSyncBatchNorm, None)}


def _batches():
    """Two steps' global batches of 8 images and the fixed loss weights of the first step's outputs.

    Rank 1's half is scaled and shifted so that the two ranks' own statistics differ a lot."""
    generator = torch.Generator().manual_seed(0)
    first, second = torch.randn(2, 2 * PER_RANK, 3, 6, 6, generator=generator)
    for batch in (first, second):
        batch[PER_RANK:] = batch[PER_RANK:] * 3 + 2
    return first, second, torch.randn(2 * PER_RANK, 2, 6, 6, generator=generator)


def _model(norm, momentum):
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), norm(4, momentum=momentum), nn.Conv2d(4, 2, 1))


def _step_and_record(model, first, second, weights):
    """One forward/backward on ``first`` (loss: outputs times fixed weights, summed, so gradients over
    slices add up), then a forward on ``second``: the outputs, gradients and the norm's buffers."""
    model.train()
    out = model(first)
    (out * weights).sum().backward()
    after_one = {key: value.clone() for key, value in model[1].state_dict().items()}
    model(second)
    return {"out": out.detach(), "conv_grad": model[0].weight.grad.clone(), "bn_grad": model[1].weight.grad.clone(),
            "after_one": after_one, "after_two": dict(model[1].state_dict())}


def _rank(rank, port, folder):
    torch.distributed.init_process_group("gloo", init_method="tcp://127.0.0.1:%d" % port, rank=rank, world_size=2)
    first, second, weights = _batches()
    mine = slice(rank * PER_RANK, (rank + 1) * PER_RANK)
    results = {name: _step_and_record(_model(*variant), first[mine], second[mine], weights[mine])
               for name, variant in VARIANTS.items()}
    torch.save(results, Path(folder) / ("rank%d.pt" % rank))
    torch.distributed.destroy_process_group()


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    """Each variant's records on rank 0 and rank 1, and those of one process on the whole batches."""
    from tests.test_distributed import _free_port

    folder = tmp_path_factory.mktemp("sync_bn")
    torch.multiprocessing.spawn(_rank, args=(_free_port(), str(folder)), nprocs=2)
    ranks = [torch.load(folder / ("rank%d.pt" % rank)) for rank in range(2)]
    first, second, weights = _batches()
    single = {name: _step_and_record(_model(nn.BatchNorm2d, momentum), first, second, weights)
              for name, (_, momentum) in VARIANTS.items()}
    return ranks, single


def _assert_buffers_equal(got, want, atol=1e-6):
    assert set(got) == set(want)
    for key in want:
        torch.testing.assert_close(got[key], want[key], atol=atol, rtol=0, msg=key)


@pytest.mark.slow  # two spawned gloo processes
@pytest.mark.parametrize("name", ["sync", "sync_cumulative"])
def test_running_statistics_are_those_of_the_global_batch_on_every_rank(two_ranks, name):
    ranks, single = two_ranks
    for record in ("after_one", "after_two"):
        _assert_buffers_equal(ranks[0][name][record], ranks[1][name][record])
        _assert_buffers_equal(ranks[0][name][record], single[name][record])
    assert int(ranks[0][name]["after_two"]["num_batches_tracked"]) == 2


@pytest.mark.slow  # two spawned gloo processes
def test_plain_batchnorm_running_statistics_differ_across_ranks(two_ranks):
    # Without this the test above would also pass for a layer that does not synchronise anything.
    ranks, single = two_ranks
    rank0, rank1 = ranks[0]["plain"]["after_one"], ranks[1]["plain"]["after_one"]
    assert (rank0["running_mean"] - rank1["running_mean"]).abs().min() > 0.01
    assert (rank0["running_var"] - rank1["running_var"]).abs().min() > 0.01
    assert not torch.allclose(rank0["running_var"], single["plain"]["after_one"]["running_var"], atol=1e-3)


@pytest.mark.slow  # two spawned gloo processes
def test_outputs_and_summed_gradients_match_one_process_on_the_whole_batch(two_ranks):
    ranks, single = two_ranks
    for name in ("sync", "sync_cumulative"):
        whole = single[name]
        for rank in range(2):
            mine = slice(rank * PER_RANK, (rank + 1) * PER_RANK)
            torch.testing.assert_close(ranks[rank][name]["out"], whole["out"][mine], atol=1e-5, rtol=0)
        # DDP all-reduces the gradients (sum, then / world size); the sum is the whole batch's gradient.
        for grad in ("conv_grad", "bn_grad"):
            torch.testing.assert_close(ranks[0][name][grad] + ranks[1][name][grad], whole[grad], atol=1e-4, rtol=1e-5)
    # The per-rank plain BatchNorm gets both wrong, so the comparison above has teeth.
    plain = ranks[0]["plain"]["conv_grad"] + ranks[1]["plain"]["conv_grad"]
    assert not torch.allclose(plain, single["plain"]["conv_grad"], atol=1e-2)


@pytest.mark.parametrize("momentum", [0.1, None])
def test_without_a_process_group_it_is_batchnorm2d(momentum):
    assert not torch.distributed.is_initialized()
    plain, synced = nn.BatchNorm2d(3, momentum=momentum), CpuSyncBatchNorm(3, momentum=momentum)
    x = torch.randn(4, 3, 5, 5, generator=torch.Generator().manual_seed(1)) * 2 + 1
    for _ in range(2):
        assert torch.equal(synced.train()(x), plain.train()(x))
    assert torch.equal(synced.eval()(x + 1), plain.eval()(x + 1))
    assert synced.state_dict().keys() == plain.state_dict().keys()
    for key, value in plain.state_dict().items():
        assert torch.equal(synced.state_dict()[key], value), key


def test_one_process_group_under_bf16_autocast_keeps_float32_statistics():
    from tests.test_distributed import _free_port

    # A one-rank group runs the synchronising path in this process: the same as BatchNorm2d, and its
    # statistics of bf16 inputs as exact as BatchNorm2d's float accumulation (bf16 sums are ~1e-3 off).
    torch.distributed.init_process_group("gloo", init_method="tcp://127.0.0.1:%d" % _free_port(), rank=0,
                                         world_size=1)
    try:
        x = (torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(2)) * 3 + 5).bfloat16()
        plain, synced = nn.BatchNorm2d(3), CpuSyncBatchNorm(3)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            want, got = plain.train()(x), synced.train()(x)
        assert got.dtype == want.dtype == torch.bfloat16
        torch.testing.assert_close(got.float(), want.float(), atol=2e-2, rtol=0)
        _assert_buffers_equal(synced.state_dict(), plain.state_dict(), atol=1e-5)
        assert float(synced.running_mean.mean()) == pytest.approx(0.5, abs=0.05)  # 0.1 * 5: it did move
    finally:
        torch.distributed.destroy_process_group()


def test_convert_on_the_cpu_keeps_every_weight_and_loads_into_the_plain_network():
    build = networks.model_class("unet")
    model = build(num_classes=3, base_width=4, depth=2)
    norms = [name for name, module in model.named_modules() if type(module) is nn.BatchNorm2d]
    assert len(norms) >= 4
    model.get_submodule(norms[0]).eval().weight.requires_grad_(False)
    before = {key: value.clone() for key, value in model.state_dict().items()}
    weight = model.get_submodule(norms[1]).weight

    converted = convert_sync_batchnorm(model, "cpu")
    assert not any(type(module) is nn.BatchNorm2d for module in converted.modules())
    assert [name for name, module in converted.named_modules() if isinstance(module, CpuSyncBatchNorm)] == norms
    assert list(converted.state_dict()) == list(before)
    for key, value in converted.state_dict().items():
        assert torch.equal(value, before[key]), key
    first = converted.get_submodule(norms[0])
    assert not first.training and not first.weight.requires_grad and converted.get_submodule(norms[1]).training
    assert converted.get_submodule(norms[1]).weight is weight  # an optimiser built before still updates it

    fresh = build(num_classes=3, base_width=4, depth=2)
    fresh.load_state_dict(converted.state_dict(), strict=True)
    again = convert_sync_batchnorm(converted, torch.device("cpu"))
    assert [module for module in again.modules()] == [module for module in converted.modules()]


def test_convert_for_cuda_is_torch_syncbatchnorm():
    model = convert_sync_batchnorm(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)), "cuda")
    assert type(model[1]) is nn.SyncBatchNorm


@pytest.mark.slow  # torchrun: two training processes (gloo)
def test_torchrun_on_the_cpu_trains_with_synchronised_batchnorm(synthetic_data, tmp_path):
    from lowpower.checkpoint import load_checkpoint
    from tests.test_distributed import ROOT, tiny_overrides, torchrun

    out = tmp_path / "run"
    # train.ema too: the weight average under torchrun, in the same two processes
    overrides = tiny_overrides(synthetic_data(train=16, val=5, test=0, seed=3)) + ["train.sync_bn=true",
                                                                                  "train.ema=true"]
    done = subprocess.run(torchrun(out, overrides), cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    log = (out / "log.txt").read_text()
    assert "BatchNorm layers synchronised" in log and "ignored on CPU" not in log, log
    state = load_checkpoint(out / "best.pt")
    networks.create_model(state["arch"], **state["arch_kwargs"]).load_state_dict(state["model"], strict=True)
    last = load_checkpoint(out / "last.pt")  # best.pt holds the average that last.pt keeps beside the weights
    assert all(torch.equal(value, last["ema"]["module." + name]) for name, value in state["model"].items())
