"""fanet_r18_sample is the LPCVC 2023 sample's network: its facts, and its weights imported and packaged.

The reference below is a second, independent build of the sample's network under the sample's own
module names (``resnet``, ``ffm_4`` ... ``ffm_32`` with ``w_qs/w_ks/w_vs/latlayer3/up/smooth``, each a
``conv`` + ``bn``; ``clslayer_8/16/32`` with ``conv`` and ``conv_out``), written from the sample's
published facts, so its state dict has the sample's key layout (the layout of its ``model.pkl``).
"""
import hashlib
import os
import pathlib
import shutil
import stat

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode
from torchvision.models.resnet import BasicBlock, ResNet

import networks
from lowpower import cli
from lowpower.checkpoint import load_checkpoint
from lowpower.compress.import_sample import main
from lowpower.ship.build import build_package
from tests.conftest import randomize_batchnorm

SAMPLE_PARAMETERS = 13968256  # the sample at 14 classes (docs/DESIGN section 6)
NEVER_CALLED = 299328  # clslayer_32, clslayer_16, ffm_8.smooth, ffm_4.up
DISCARDED = 590080  # ffm_32.smooth: 3x3 512->128 conv + BN, computed and thrown away
SAMPLE_GFLOPS = 11.85  # torch.utils.flop_counter on the sample at 1x3x512x512


pytestmark = pytest.mark.usefixtures("single_torch_thread")


def up(x, size):
    return F.interpolate(x, size=size, mode="bilinear", align_corners=True)


class ConvBn(nn.Module):
    def __init__(self, cin, cout, kernel, padding, relu=True):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.relu = relu

    def forward(self, x):
        x = self.bn(self.conv(x))
        return F.relu(x) if self.relu else x


class Fusion(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.w_qs, self.w_ks = ConvBn(c, 32, 1, 0, relu=False), ConvBn(c, 32, 1, 0, relu=False)
        self.w_vs, self.latlayer3 = ConvBn(c, c, 1, 0), ConvBn(c, c, 1, 0)
        self.up, self.smooth = ConvBn(c, c // 2, 1, 1), ConvBn(c, 128, 3, 1)

    def forward(self, feat, coarse):
        n, c, h, w = feat.shape
        query = F.normalize(self.w_qs(feat).reshape(n, 32, -1), dim=1)
        key = F.normalize(self.w_ks(feat).reshape(n, 32, -1), dim=1)
        value = self.w_vs(feat).reshape(n, c, -1)
        attended = torch.einsum("bkp,bkq,bcq->bcp", query, key, value).reshape(n, c, h, w)
        fused = self.latlayer3(attended) + feat
        return fused if coarse is None else up(coarse, (h, w)) + fused


class Head(nn.Module):
    def __init__(self, cin, mid, classes):
        super().__init__()
        self.conv, self.conv_out = ConvBn(cin, mid, 3, 1), nn.Conv2d(mid, classes, 1, bias=False)

    def forward(self, x):
        return self.conv_out(self.conv(x))


class SampleLayout(nn.Module):
    """The sample's FANet under its module names; calls the discarded branch as the sample does."""

    def __init__(self, classes=14):
        super().__init__()
        self.resnet = ResNet(BasicBlock, [2, 2, 2, 2])
        del self.resnet.fc
        block = self.resnet.layer1[0]  # the sample's layer1 has stride 2 too
        block.conv1.stride = (2, 2)
        block.downsample = nn.Sequential(nn.Conv2d(64, 64, 1, stride=2, bias=False), nn.BatchNorm2d(64))
        for level, channels in (("4", 64), ("8", 128), ("16", 256), ("32", 512)):
            setattr(self, "ffm_" + level, Fusion(channels))
        self.clslayer_32, self.clslayer_16 = Head(128, 64, classes), Head(128, 64, classes)
        self.clslayer_8 = Head(256, 256, classes)

    def forward(self, x):
        r = self.resnet
        x4 = r.maxpool(r.relu(r.bn1(r.conv1(x))))
        feat4 = r.layer1(x4)
        feat8 = r.layer2(feat4)
        feat16 = r.layer3(feat8)
        feat32 = r.layer4(feat16)
        p32 = self.ffm_32(feat32, None)
        self.ffm_32.smooth(p32)  # computed and discarded, as in the sample
        p16 = self.ffm_16(feat16, self.ffm_32.up(p32))
        p8 = self.ffm_8(feat8, self.ffm_16.up(p16))
        p4 = self.ffm_4(feat4, self.ffm_8.up(p8))
        fine, coarse = self.ffm_4.smooth(p4), self.ffm_16.smooth(p16)
        logits = self.clslayer_8(torch.cat([up(coarse, fine.shape[-2:]), fine], dim=1))
        return up(logits, x.shape[-2:])  # the sample's main.py upsamples with align_corners=True


def randomised(model):
    """Random BN statistics and affine terms, so a wrong key mapping shows in the logits."""
    return randomize_batchnorm(model, 1).eval()


def count(model):
    return sum(p.numel() for p in model.parameters())


def test_reference_layout_has_the_samples_parameter_count():
    assert count(SampleLayout()) == SAMPLE_PARAMETERS


def test_parameters_are_the_samples_less_the_never_called_and_discarded():
    ours = count(networks.create_model("fanet_r18_sample"))
    assert ours == SAMPLE_PARAMETERS - NEVER_CALLED - DISCARDED == 13078848
    reference = SampleLayout()
    unused = sum(count(getattr(reference, name)) for name in ("clslayer_32", "clslayer_16"))
    unused += count(reference.ffm_8.smooth) + count(reference.ffm_4.up)
    assert unused == NEVER_CALLED and count(reference.ffm_32.smooth) == DISCARDED


def test_flops_at_512_are_the_samples_within_2_percent():
    model = networks.create_model("fanet_r18_sample").eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 3, 512, 512))
    gflops = counter.get_total_flops() / 1e9
    assert abs(gflops - SAMPLE_GFLOPS) / SAMPLE_GFLOPS < 0.02, gflops


def test_stride_2_layer1_features_at_1_8_to_1_64_and_head_at_1_8():
    model = networks.create_model("fanet_r18_sample").eval()
    images = torch.zeros(1, 3, 256, 256)
    seen = {}
    model.classifier.register_forward_hook(lambda module, inputs, output: seen.update(head=output.shape))
    with torch.no_grad():
        sides = {level: feature.shape[-1] for level, feature in model.backbone(images).items()}
        assert model(images).shape == (1, 14, 256, 256)
    assert sides == {"8": 32, "16": 16, "32": 8, "64": 4}
    assert seen["head"] == (1, 14, 32, 32)


def test_fanet_r18_stays_registered_as_it_was():
    assert count(networks.create_model("fanet_r18")) == 13074624


@pytest.fixture(scope="module")
def sample_weights(tmp_path_factory):
    path = tmp_path_factory.mktemp("sample") / "model.pkl"
    torch.manual_seed(0)
    reference = randomised(SampleLayout())
    torch.save(reference.state_dict(), path)
    return path, reference


def test_import_gives_the_samples_logits(sample_weights, tmp_path, capsys):
    weights, reference = sample_weights
    assert main([str(weights), "-o", str(tmp_path / "ckpt" / "best.pt")]) == 0
    printed = capsys.readouterr().out
    for module in ("clslayer_32", "clslayer_16", "ffm_8.smooth", "ffm_4.up", "ffm_32.smooth"):
        assert "dropped %s (" % module in printed
    state = load_checkpoint(tmp_path / "ckpt" / "best.pt")
    assert state["arch"] == "fanet_r18_sample" and state["input_size"] == 512
    model = networks.create_model(state["arch"], **state["arch_kwargs"]).eval()
    model.load_state_dict(state["model"], strict=True)
    images = torch.randn(2, 3, 128, 96)
    with torch.no_grad():
        expected, got = reference(images), model(images)
    assert torch.allclose(got, expected, rtol=1e-4, atol=1e-4), (got - expected).abs().max()
    assert torch.equal(got.argmax(1), expected.argmax(1))


def test_dataparallel_prefix_is_accepted(sample_weights, tmp_path):
    weights, reference = sample_weights
    wrapped = tmp_path / "dp.pkl"
    torch.save({"module." + key: value for key, value in reference.state_dict().items()}, wrapped)
    assert main([str(wrapped), "-o", str(tmp_path / "dp.pt")]) == 0


@pytest.mark.parametrize("content, fragment", [
    ("text", "not a torch file"),
    ([1, 2], "expected a dict of tensors"),
    ({"fc.weight": torch.zeros(2)}, "keys the sample's FANet does not have, e.g. fc.weight"),
    ({"resnet.conv1.weight": torch.zeros(2)}, "does not fit the sample's FANet"),
])
def test_foreign_files_are_a_one_line_error_naming_the_file(tmp_path, capsys, content, fragment):
    path = tmp_path / "foreign.pkl"
    if content == "text":
        path.write_text("not a torch file\n")
    else:
        torch.save(content, path)
    assert main([str(path), "-o", str(tmp_path / "x.pt")]) == 1
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and str(path) in error and fragment in error, error
    assert not (tmp_path / "x.pt").exists()


class Payload:
    """Pickles as a call to Path.touch(marker): loading it without weights_only would create the marker."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return pathlib.Path.touch, (pathlib.Path(self.marker),)


def sha256(path):
    return hashlib.sha256(pathlib.Path(path).read_bytes()).hexdigest()


def test_a_crafted_weight_file_is_refused_and_never_runs(tmp_path, capsys):
    crafted, marker = tmp_path / "model.pkl", tmp_path / "ran"
    torch.save({"resnet.conv1.weight": Payload(marker)}, crafted)
    assert cli.run("import-sample", [str(crafted), "-o", str(tmp_path / "x.pt")]) == 1
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and "refused" in error and str(crafted) in error, error
    assert not marker.exists() and not (tmp_path / "x.pt").exists()


def test_output_equal_to_the_weights_is_refused_even_with_force(sample_weights, tmp_path, capsys):
    weights = tmp_path / "model.pkl"
    shutil.copy(sample_weights[0], weights)
    before = sha256(weights)
    assert cli.run("import-sample", [str(weights), "-o", str(weights), "--force"]) == 1
    assert "is also this command's input" in capsys.readouterr().err
    assert sha256(weights) == before


def test_an_existing_checkpoint_is_replaced_only_with_force(sample_weights, tmp_path, capsys):
    output = tmp_path / "best.pt"
    output.write_bytes(b"an earlier import")
    assert cli.run("import-sample", [str(sample_weights[0]), "-o", str(output)]) == 1
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and "exists; pass --force" in error, error
    assert output.read_bytes() == b"an earlier import"
    stale = tmp_path / "best.pt.k2j4x9.tmp"
    stale.write_bytes(b"left by a killed import")
    old_umask = os.umask(0o022)
    try:
        assert cli.run("import-sample", [str(sample_weights[0]), "-o", str(output), "--force"]) == 0
    finally:
        os.umask(old_umask)
    assert load_checkpoint(output)["arch"] == "fanet_r18_sample"
    assert stat.S_IMODE(output.stat().st_mode) == 0o644  # not mkstemp's 0600
    assert not stale.exists() and not list(tmp_path.glob("*.tmp"))


@pytest.mark.parametrize("size", ["0", "-512", "100000"])
def test_input_size_out_of_bounds_is_refused(sample_weights, tmp_path, capsys, size):
    with pytest.raises(SystemExit) as exited:
        cli.run("import-sample", [str(sample_weights[0]), "-o", str(tmp_path / "x.pt"), "--input-size", size])
    assert exited.value.code == 2 and "--input-size" in capsys.readouterr().err
    assert not (tmp_path / "x.pt").exists()


@pytest.mark.slow  # a package build with verification: presubmit runs the package
def test_imported_checkpoint_packages_and_runs(sample_weights, tmp_path):
    weights, _ = sample_weights
    checkpoint = tmp_path / "best.pt"
    assert main([str(weights), "-o", str(checkpoint)]) == 0
    # A smaller input than the sample's 512 keeps the presubmit run short; the network is the same.
    info = build_package(checkpoint, tmp_path / "s.pyz", input_size=128, build_dir=tmp_path / "b")
    assert pathlib.Path(info["path"]).is_file()
    assert info["checks"][0].startswith("presubmit on 2 sample images: passed"), info["checks"]
