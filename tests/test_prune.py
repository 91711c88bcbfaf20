"""Structured pruning (issue 14): FLOPs target, width plan, strict rebuild, every zoo network,
the package of a pruned network run alone, int8 of a pruned UNet, and an exact fine-tune resume."""
import os
import signal

import numpy as np
import pytest
import torch
from PIL import Image

import networks
from lowpower.checkpoint import build_model, load_checkpoint, save_checkpoint
from lowpower.compress.prune import cli as prune
from lowpower.compress.prune.core import PruneError, prune_to_flops, rebuild_check, width_plan
from lowpower.measure.bench import count_flops
from lowpower.ship.build import build_package
from lowpower.ship.runner import run_pyz
from lowpower.train import trainer as train
from networks import quant
from networks.widths import apply_width_plan
from tests.conftest import zoo_params

pytestmark = pytest.mark.usefixtures("single_torch_thread")
DEMO_KWARGS = {"num_classes": 14, "base_width": 16, "depth": 4}  # configs/synthetic/demo.yaml
TINY_KWARGS = {"num_classes": 14, "base_width": 4, "depth": 2}  # conftest's TINY_TRAINING


def write_checkpoint(path, kwargs, size, **extra):
    """A float checkpoint of a unet with random weights, as much as lowpower.compress.prune.cli reads."""
    torch.manual_seed(0)
    model = networks.create_model("unet", **kwargs)
    save_checkpoint(dict({"arch": "unet", "arch_kwargs": dict(kwargs), "model": model.state_dict(),
                          "input_size": size, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
                         **extra), path)
    return path


@pytest.fixture(scope="module")
def demo_pruned(tmp_path_factory):
    folder = tmp_path_factory.mktemp("prune_demo")
    source = write_checkpoint(folder / "best.pt", DEMO_KWARGS, 64)
    out = folder / "pruned.pt"
    assert prune.main([str(source), "--target-flops", "0.5", "--out", str(out), "--repeats", "1",
                       "--no-progress"]) == 0
    return source, out


def test_half_flops_target_removes_at_least_45_percent_of_the_demo_unet(demo_pruned):
    source, out = demo_pruned
    example = torch.randn(1, 3, 64, 64)
    before = count_flops(build_model(load_checkpoint(source)), example)
    after = count_flops(build_model(load_checkpoint(out)), example)
    assert after <= 0.55 * before
    assert load_checkpoint(out)["prune"]["after"]["flops"] == after


def test_pruned_checkpoint_rebuilds_from_arch_kwargs_strictly_and_keeps_the_classes(demo_pruned):
    state = load_checkpoint(demo_pruned[1])
    plan = state["arch_kwargs"]["width_plan"]
    assert plan and all(isinstance(v, int) for entry in plan.values() for v in entry.values())  # plain data
    model = networks.create_model(state["arch"], **state["arch_kwargs"])
    model.load_state_dict(state["model"], strict=True)
    assert model(torch.randn(1, 3, 48, 48)).shape == (1, 14, 48, 48)
    assert model.head.out_channels == plan["head"]["out_channels"] == 14  # only its inputs narrowed
    original = networks.create_model("unet", **DEMO_KWARGS)
    narrower = [name for name, entry in plan.items()
                if "out_channels" in entry and entry["out_channels"] < original.get_submodule(name).out_channels]
    assert len(narrower) > 10  # convs really lost output channels


def test_width_plan_naming_a_missing_layer_is_a_one_line_error():
    with pytest.raises(ValueError, match="not a layer of UNet") as error:
        apply_width_plan(networks.create_model("unet", **TINY_KWARGS), {"no.such": {"num_features": 2}})
    assert "\n" not in str(error.value)


def test_prune_cli_refuses_an_impossible_target_saying_why(demo_pruned, capsys):
    with pytest.raises(SystemExit) as exit_:  # --target-flops is bounded: argparse refuses it
        prune.main([str(demo_pruned[0]), "--target-flops", "1.5", "--no-progress"])
    assert exit_.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert "argument --target-flops: 1.5 is over 0.99: the share of the FLOPs to keep" in last
    with pytest.raises(PruneError, match="between 0 and 1") as error:  # the library call checks it too
        prune_to_flops(networks.create_model("unet", **TINY_KWARGS), torch.zeros(1, 3, 32, 32), 1.5, 14)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("arch", zoo_params(networks.list_models()))
def test_every_zoo_network_prunes_and_rebuilds_or_says_why(arch):
    kwargs = {"num_classes": 14}
    torch.manual_seed(0)
    model = networks.create_model(arch, **kwargs).eval()
    example = torch.randn(1, 3, 32, 32)
    try:
        prune_to_flops(model, example, 0.8, 14, round_to=None)
        plan = width_plan(arch, kwargs, model)
        rebuilt = rebuild_check(arch, dict(kwargs, width_plan=plan), model, example)
    except PruneError as error:
        assert "\n" not in str(error) and len(str(error)) < 400
        return
    assert plan and rebuilt(example).shape == (1, 14, 32, 32)
    assert count_flops(rebuilt, example) <= 0.8 * count_flops(networks.create_model(arch, **kwargs).eval(), example)


def test_pruned_unet_still_quantizes_to_int8():
    torch.manual_seed(0)
    model = networks.create_model("unet", **TINY_KWARGS).eval()
    example = torch.randn(2, 3, 32, 32)
    prune_to_flops(model, example[:1], 0.6, 14, round_to=None)
    engine, _ = quant.select_engine("x86")
    prepared = quant.prepare_ptq(model, engine)
    with torch.no_grad():
        prepared(example)
        int8 = quant.convert_int8(prepared)
        logits, reference = int8(example), model(example)
    assert logits.shape == reference.shape
    assert (logits.argmax(1) == reference.argmax(1)).float().mean() > 0.5


def test_pruned_package_runs_alone_and_matches_the_workstation(pruned_checkpoint, tmp_path, gt_samples):
    out = pruned_checkpoint  # the session's tiny trained UNet pruned to 60% of its FLOPs (tests/conftest.py)
    built = build_package(out, tmp_path / "p.pyz", precision="fp32", min_class_area=0.0,
                          build_dir=tmp_path / "build", verify=False)
    assert "networks/widths.py" in built["files"]
    run = run_pyz(built["path"], gt_samples / "IMG", tmp_path / "masks")  # python -I, fresh empty folder
    assert run.ok, run.stderr_tail()
    model = build_model(load_checkpoint(out)).eval()
    for path in sorted((gt_samples / "IMG").glob("*.png")):
        rgb = Image.open(path).convert("RGB").resize((32, 32), Image.BILINEAR)
        x = torch.from_numpy(np.asarray(rgb)).permute(2, 0, 1)[None].float() / 255
        x = (x - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor([0.229, 0.224, 0.225]).view(
            1, 3, 1, 1)
        with torch.no_grad():
            logits = torch.nn.functional.interpolate(model(x), size=(512, 512), mode="bilinear", align_corners=False)
        got = np.asarray(Image.open(tmp_path / "masks" / path.name))
        assert (got == logits.argmax(1)[0].numpy()).mean() >= 0.999


def sigterm_at_step(monkeypatch, step):
    """The trainer gets a real SIGTERM during its ``step``-th training step (counted over epochs)."""
    real, seen = train.train_one_epoch, {"n": 0}

    def counting(model, loader, *args, **kwargs):
        def batches():
            for batch in loader:
                seen["n"] += 1
                if seen["n"] == step:
                    os.kill(os.getpid(), signal.SIGTERM)
                yield batch
        wrapped = type("Loader", (), {"__iter__": lambda self: batches(), "__len__": lambda self: len(loader),
                                      "sampler": loader.sampler})()
        return real(model, wrapped, *args, **kwargs)

    monkeypatch.setattr(train, "train_one_epoch", counting)


def test_fine_tune_of_a_pruned_checkpoint_resumes_exactly(synthetic_data, train_args, tmp_path, monkeypatch,
                                                          restore_signal_handlers):
    data = synthetic_data(train=8, val=2, test=0, seed=5)
    pruned = tmp_path / "pruned.pt"
    source = write_checkpoint(tmp_path / "best.pt", TINY_KWARGS, 32)
    assert prune.main([str(source), "--target-flops", "0.6", "--round-to", "0", "--out", str(pruned),
                       "--repeats", "1", "--no-progress"]) == 0
    extra = ("train.epochs=2", "model.init_from=%s" % pruned, "train.class_weights=null")
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert train.main(train_args(data, straight, *extra)) == 0
    with monkeypatch.context() as patch:
        sigterm_at_step(patch, 6)  # 4 steps an epoch: stops in epoch 2
        assert train.main(train_args(data, split, *extra)) == train.EXIT_STOPPED
    assert train.main(train_args(data, split, *extra) + ["--resume", "auto"]) == 0
    a, b = load_checkpoint(straight / "last.pt"), load_checkpoint(split / "last.pt")
    assert a["arch_kwargs"]["width_plan"] == load_checkpoint(pruned)["arch_kwargs"]["width_plan"]
    assert all(torch.equal(tensor, b["model"][name]) for name, tensor in a["model"].items())
    build_model(a).load_state_dict(a["model"], strict=True)
    assert not all(torch.equal(t, load_checkpoint(pruned)["model"][n]) for n, t in a["model"].items())


def test_taylor_importance_in_two_steps_with_a_fine_tune_between(synthetic_data, tmp_path):
    from lowpower.config import load_config

    data = synthetic_data(train=8, val=2, test=0, seed=5)
    cfg = load_config(None, ["model.kwargs={base_width: 4, depth: 2}", "data.dataset=synthetic", "data.root=%s" % data,
                             "data.input_size=32", "data.workers=0", "train.batch_size=2", "train.amp=false"])
    source = write_checkpoint(tmp_path / "best.pt", TINY_KWARGS, 32, config=cfg)
    out = tmp_path / "pruned.pt"
    assert prune.main([str(source), "--target-flops", "0.6", "--importance", "taylor", "--steps", "2",
                       "--finetune-steps", "2", "--round-to", "0", "--out", str(out), "--repeats", "1",
                       "--no-progress"]) == 0
    state = load_checkpoint(out)
    assert state["prune"]["after"]["flops"] <= 0.6 * state["prune"]["before"]["flops"]
    assert (state["prune"]["importance"], state["prune"]["steps"], state["prune"]["finetune_steps"]) == ("taylor", 2, 2)
    build_model(state)  # strict load of the pruned, fine-tuned weights
    # the fine-tune moved weights that pruning alone keeps: some kept conv differs from every slice of the source
    source_stem = load_checkpoint(source)["model"]["stem.0.0.weight"]
    assert not any(torch.equal(w, s) for w in state["model"]["stem.0.0.weight"] for s in source_stem)


@pytest.mark.parametrize("arch", [name for name in networks.list_models()
                                  if getattr(networks.model_class(name), "prune_reason", None)])
def test_a_network_that_declares_why_it_cannot_be_pruned_is_refused_with_that_reason(arch):
    model = networks.create_model(arch, num_classes=14).eval()
    with pytest.raises(PruneError) as error:
        prune_to_flops(model, torch.randn(1, 3, 32, 32), 0.8, 14)
    assert networks.model_class(arch).prune_reason in str(error.value) and "\n" not in str(error.value)
