"""train.tensorboard and the per-term loss sums: off, nothing imports tensorboard; on, the event files hold the
scalars and panels written; the engine's term sums add up to its mean loss without changing it; the auxiliary
loss reports its heads' terms and leaves the criterion's main terms in place."""
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn

import networks
from lowpower.config import load_config
from lowpower.train.aux_loss import AuxiliaryLoss, split_outputs
from lowpower.train.engine import train_one_epoch
from lowpower.train.losses import SegmentationLoss
from lowpower.train.tensorboard_log import TensorBoardLog, epoch_term_means
from tests.test_aux_loss import NUM_CLASSES, TwoHeadNet

ROOT = Path(__file__).resolve().parents[1]


def test_off_the_log_is_none_and_nothing_imports_tensorboard(tmp_path):
    assert TensorBoardLog.from_config(load_config(None), tmp_path, True) is None
    assert TensorBoardLog.from_config(load_config(None, ["train.tensorboard=true"]), tmp_path, False) is None
    assert not (tmp_path / "tensorboard").exists()
    # A fresh interpreter: this one may have imported tensorboard in another test. Turning the key on at the
    # end shows the check can see the import.
    script = (
        "import sys\n"
        "import lowpower.train.trainer\n"
        "from lowpower.config import load_config\n"
        "from lowpower.train.tensorboard_log import TensorBoardLog\n"
        "out = __import__('pathlib').Path(sys.argv[1])\n"
        "assert TensorBoardLog.from_config(load_config(None), out, True) is None\n"
        "print(sorted(m for m in sys.modules if 'tensorboard' in m.split('.')))\n"
        "TensorBoardLog.from_config(load_config(None, ['train.tensorboard=true']), out, True).close()\n"
        "print('tensorboard' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path)], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-2:] == ["[]", "True"]


class Constant(nn.Module):
    """Logits that predict class 1 everywhere, whatever the image."""

    def forward(self, images):
        logits = torch.zeros(images.shape[0], 3, *images.shape[-2:])
        logits[:, 1] = 1.0
        return logits


def test_on_the_event_files_hold_the_scalars_and_the_panels(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = load_config(None, ["train.tensorboard=true", "data.dataset=synthetic", "data.num_classes=3",
                             "train.amp=false"])
    log = TensorBoardLog.from_config(cfg, tmp_path, True)
    record = {"epoch": 2, "loss": 0.75, "loss/ce": 0.5, "loss/dice": 0.25, "kd_loss": 0.125, "seconds": 3.0,
              "mean_dice": 0.625, "miou": 0.5}
    log.log_epoch(2, record, lr=0.01, metrics={"per_class_dice": [0.25, 0.5, 1.0]})
    model = Constant().train()
    images, masks = torch.randn(3, 3, 8, 8), torch.randint(0, 3, (3, 16, 16))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(images, masks), batch_size=2)
    log.log_panels(2, model, loader, torch.device("cpu"), cfg, count=3)
    assert model.training  # its mode is given back
    log.close()
    events = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    values = {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}
    assert values["loss/total"] == [(2, 0.75)] and values["loss/dice"] == [(2, 0.25)]
    assert values["loss/kd_loss"] == [(2, 0.125)] and values["val/mean_dice"] == [(2, 0.625)]
    assert values["lr"][0][1] == pytest.approx(0.01) and values["val/miou"] == [(2, 0.5)]
    assert values["val_class/background"] == [(2, 0.25)] and values["seconds"] == [(2, 3.0)]
    assert sorted(events.Tags()["images"]) == ["panels/0", "panels/1", "panels/2"]
    image = events.Images("panels/0")[0]
    assert image.step == 2 and image.width >= 4 * 16 and image.height > 16


def tiny_loader(seed):
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(6, 3, 16, 16, generator=generator)
    masks = torch.randint(0, 3, (6, 16, 16), generator=generator)
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(images, masks), batch_size=2)


def one_epoch(terms=None):
    unet = networks.model_class("unet")  # builds one model the first time: before the seed, not after it
    torch.manual_seed(0)
    model = unet(num_classes=3, base_width=4, depth=2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    criterion = SegmentationLoss(3, dice_weight=0.5)
    return train_one_epoch(model, tiny_loader(1), criterion, optimizer, scheduler, scaler, torch.device("cpu"),
                           epoch=0, progress=False, terms=terms)


def test_the_term_sums_add_up_to_the_mean_loss_and_leave_it_bit_exact():
    terms = {}
    loss, steps, stopped = one_epoch(terms)
    assert steps == 3 and not stopped and terms["steps"] == 3 and set(terms) == {"ce", "dice", "steps"}
    assert (terms["ce"] + terms["dice"]) / terms["steps"] == pytest.approx(loss, rel=1e-5)
    assert terms["dice"] > 0 and terms["ce"] > terms["dice"]  # 0.5 x Dice < 1 x cross-entropy of 3 classes
    assert one_epoch() == (loss, steps, stopped)
    means = epoch_term_means(terms)
    assert means == {"loss/ce": terms["ce"] / 3, "loss/dice": terms["dice"] / 3}


@pytest.mark.parametrize("options, name", [({}, "ce"), ({"focal_gamma": 2.0}, "focal"),
                                           ({"ohem": (0.7, 10)}, "ohem"),
                                           ({"ohem": (0.7, 10), "focal_gamma": 2.0}, "ohem_focal")])
def test_the_criterion_names_its_pixel_term_and_its_weighted_terms_sum_to_the_loss(options, name):
    generator = torch.Generator().manual_seed(3)
    logits, masks = torch.randn(2, 3, 8, 8, generator=generator), torch.randint(0, 3, (2, 8, 8), generator=generator)
    criterion = SegmentationLoss(3, dice_weight=0.25, **options)
    loss = criterion(logits, masks)
    assert sorted(criterion.terms) == sorted([name, "dice"])
    assert float(sum(criterion.terms.values())) == pytest.approx(loss.item(), rel=1e-6)
    assert not any(value.requires_grad or value.dim() for value in criterion.terms.values())
    plain = SegmentationLoss(3, **options)
    assert plain(logits, masks).item() == pytest.approx(criterion.terms[name].item(), rel=1e-6)
    assert list(plain.terms) == [name]  # no dice term when dice_weight is 0


def test_the_aux_loss_reports_its_weighted_heads_and_the_main_terms_survive():
    torch.manual_seed(0)
    model = TwoHeadNet().train()
    criterion = SegmentationLoss(NUM_CLASSES, dice_weight=0.5)
    aux_loss = AuxiliaryLoss.from_config({"loss": {"aux_weights": {"aux": 0.4, "boundary": 2.0}}}, model, criterion)
    images, masks = torch.randn(2, 3, 16, 16), torch.randint(0, NUM_CLASSES, (2, 16, 16))
    logits, aux = split_outputs(model(images))
    main = criterion(logits, masks)
    main_terms = dict(criterion.terms)
    value = aux_loss(aux, masks)
    assert set(aux_loss.terms) == {"aux/aux", "aux/boundary"}
    assert float(sum(aux_loss.terms.values())) == pytest.approx(value.item(), rel=1e-6)
    resized = nn.functional.interpolate(aux["aux"], size=(16, 16), mode="bilinear")
    assert aux_loss.terms["aux/aux"].item() == pytest.approx(0.4 * criterion(resized, masks).item(), rel=1e-6)
    criterion(logits, masks)
    assert criterion.terms.keys() == main_terms.keys()
    aux_loss(aux, masks)  # calls the criterion on the aux head again; the main terms come back after it
    assert all(torch.equal(criterion.terms[k], main_terms[k]) for k in main_terms)
    assert float(sum(criterion.terms.values())) == pytest.approx(main.item(), rel=1e-6)


def test_the_engine_sums_the_aux_terms_beside_the_main_ones():
    torch.manual_seed(0)
    model = TwoHeadNet()
    criterion = SegmentationLoss(NUM_CLASSES, dice_weight=0.5)
    aux_loss = AuxiliaryLoss.from_config({"loss": {"aux_weights": {"aux": 0.4}}}, model, criterion)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    generator = torch.Generator().manual_seed(2)
    images = torch.randn(4, 3, 16, 16, generator=generator)
    masks = torch.randint(0, NUM_CLASSES, (4, 16, 16), generator=generator)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(images, masks), batch_size=2)
    terms = {}
    loss, steps, _ = train_one_epoch(model, loader, criterion, optimizer, scheduler,
                                     torch.amp.GradScaler("cpu", enabled=False), torch.device("cpu"), epoch=0,
                                     progress=False, aux_loss=aux_loss, terms=terms)
    assert set(terms) == {"ce", "dice", "aux/aux", "steps"} and terms["steps"] == steps == 2
    total = sum(value for name, value in terms.items() if name != "steps")
    assert total / steps == pytest.approx(loss, rel=1e-5)
