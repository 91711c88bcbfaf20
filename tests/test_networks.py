"""Every registered model builds, trains a step, and round-trips through .npz weights."""
import io

import numpy as np
import pytest
import torch

import networks
from tests.conftest import OVER_10M, SLOW_NETWORKS, WIDER_SIBLINGS, zoo_params

NUM_CLASSES = 14


pytestmark = pytest.mark.usefixtures("single_torch_thread")


def build(name, **kwargs):
    torch.manual_seed(0)
    return networks.create_model(name, num_classes=NUM_CLASSES, **kwargs)


def state_dict_to_npz_bytes(model):
    buffer = io.BytesIO()
    np.savez(buffer, **{key: value.detach().cpu().numpy() for key, value in model.state_dict().items()})
    buffer.seek(0)
    return buffer


def load_npz_into(model, buffer):
    with np.load(buffer, allow_pickle=False) as arrays:
        state = {key: torch.from_numpy(arrays[key]) for key in arrays.files}
    model.load_state_dict(state, strict=True)
    return model


@pytest.mark.parametrize("name", zoo_params(networks.list_models()))
def test_forward_backward_shape(name):
    model = build(name).train()
    images = torch.randn(2, 3, 64, 64)
    logits = model(images)
    assert logits.shape == (2, NUM_CLASSES, 64, 64)
    assert torch.isfinite(logits).all()
    logits.logsumexp(dim=1).mean().backward()
    # heads that only auxiliary outputs use are not computed unless asked (test_aux_loss covers them)
    aux = tuple(name + "." for name in getattr(type(model), "aux_modules", ()))
    grads = [p.grad for name, p in model.named_parameters() if p.requires_grad and not (aux and name.startswith(aux))]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("name", zoo_params(networks.list_models()))
def test_eval_is_deterministic_and_npz_round_trip_is_exact(name):
    model = build(name).eval()
    images = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        first = model(images)
        assert torch.equal(first, model(images))
        torch.manual_seed(1)  # a fresh instance with different random weights
        fresh = load_npz_into(networks.create_model(name, num_classes=NUM_CLASSES), state_dict_to_npz_bytes(model))
        assert torch.equal(first, fresh.eval()(images))


def test_unknown_name_lists_valid_names_and_suggests_closest():
    with pytest.raises(ValueError) as info:
        networks.create_model("deeplabv3_r19")
    message = str(info.value)
    for name in networks.list_models():
        assert name in message
    assert "Did you mean 'deeplabv3_r18'" in message


def test_unknown_argument_names_model_and_accepted_arguments():
    with pytest.raises(TypeError) as info:
        networks.create_model("unet", widht=16)
    message = str(info.value)
    assert "'unet'" in message and "widht" in message and "base_width" in message


def test_list_models_is_sorted_registry():
    assert networks.list_models() == sorted(networks.MODELS)
    assert {"unet", "deeplabv3_r18", "deeplabv3_r50", "deeplabv3_r101"} <= set(networks.MODELS)
    assert {"unet_light", "unet_lighter", "squeeze_unet", "cunet", "fanet_r18", "deeplabv3_mbv3",
            "lraspp_mbv3_large", "lraspp_mbv3_small", "fcn_r50", "bisenetv2"} <= set(networks.MODELS)


def test_unet_parameter_count_matches_classic_unet_at_base_32():
    model = networks.create_model("unet", num_classes=14, in_channels=3, base_width=32, depth=4)
    count = sum(p.numel() for p in model.parameters())
    assert abs(count - 7.76e6) / 7.76e6 < 0.02


@pytest.mark.parametrize("height, width", [(50, 70), (64, 96), (33, 33)])
def test_unet_accepts_sizes_that_are_not_multiples(height, width):
    model = build("unet", base_width=8, depth=3).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, height, width)).shape == (1, NUM_CLASSES, height, width)


@pytest.mark.parametrize("output_stride, feature_side", [(8, 8), (16, 4)])
def test_deeplabv3_r18_output_stride(output_stride, feature_side):
    model = build("deeplabv3_r18", output_stride=output_stride).eval()
    images = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert model.backbone(images)["out"].shape[-2:] == (feature_side, feature_side)
        assert model(images).shape == (1, NUM_CLASSES, 64, 64)


def test_deeplabv3_backbone_accepts_imagenet_resnet_keys():
    from torchvision.models.resnet import BasicBlock, ResNet

    imagenet_like = ResNet(BasicBlock, [2, 2, 2, 2]).state_dict()
    result = build("deeplabv3_r18").backbone.load_state_dict(imagenet_like, strict=False)
    assert result.missing_keys == []
    assert sorted(result.unexpected_keys) == ["fc.bias", "fc.weight"]


def parameter_count(name, **kwargs):
    return sum(p.numel() for p in networks.create_model(name, num_classes=NUM_CLASSES, **kwargs).parameters())


# Reported reductions against a UNet of the same width (issue 5): 7.76 M -> 4.29 M -> 1.51 M,
# and Squeeze U-Net's 12x.
@pytest.mark.parametrize("name, min_ratio", [("unet_light", 1.8), ("unet_lighter", 5.0), ("squeeze_unet", 10.0)])
@pytest.mark.parametrize("base_width", [32, 64])
def test_light_unets_have_the_reported_parameter_reductions(name, min_ratio, base_width):
    ratio = parameter_count("unet", base_width=base_width) / parameter_count(name, base_width=base_width)
    assert ratio >= min_ratio


def test_light_unet_counts_match_the_reported_numbers_at_base_32():
    assert abs(parameter_count("unet_light") - 4.29e6) / 4.29e6 < 0.01
    assert abs(parameter_count("unet_lighter") - 1.51e6) / 1.51e6 < 0.01


@pytest.mark.parametrize("name", ["squeeze_unet", "cunet", "unet_light", "bisenetv2", "fanet_r18", "lraspp_mbv3_small"])
@pytest.mark.parametrize("height, width", [(50, 70), (96, 64)])
def test_sizes_that_are_not_multiples_of_32(name, height, width):
    model = build(name).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, height, width)).shape == (1, NUM_CLASSES, height, width)


@pytest.mark.parametrize("depth", [2, 3, 4])
def test_cunet_number_of_stages_is_an_option(depth):
    model = build("cunet", base_width=8, depth=depth).eval()
    assert len(model.down) == depth and len(model.up) == depth
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, NUM_CLASSES, 64, 64)


def torchvision_builders():
    from torchvision.models import segmentation

    return {
        "deeplabv3_mbv3": lambda: segmentation.deeplabv3_mobilenet_v3_large(
            weights=None, weights_backbone=None, num_classes=NUM_CLASSES, aux_loss=False),
        "lraspp_mbv3_large": lambda: segmentation.lraspp_mobilenet_v3_large(
            weights=None, weights_backbone=None, num_classes=NUM_CLASSES),
        "fcn_r50": lambda: segmentation.fcn_resnet50(
            weights=None, weights_backbone=None, num_classes=NUM_CLASSES, aux_loss=False),
    }


@pytest.mark.parametrize("name", ["deeplabv3_mbv3", "lraspp_mbv3_large",
                                  pytest.param("fcn_r50", marks=pytest.mark.slow)])  # slow: a ResNet-50
def test_same_network_as_torchvision_builder(name):
    # Built from classes here (device-safe); the workstation's torchvision builder is the reference.
    torch.manual_seed(0)
    reference = torchvision_builders()[name]().eval()
    state = {("head." + key[len("classifier."):] if key.startswith("classifier.") else key): value
             for key, value in reference.state_dict().items()}
    model = networks.create_model(name, num_classes=NUM_CLASSES).eval()
    model.load_state_dict(state, strict=True)
    images = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(images), reference(images)["out"])


@pytest.mark.parametrize("name, torchvision_name", [
    ("fanet_r18", "resnet18"), pytest.param("fcn_r50", "resnet50", marks=pytest.mark.slow),  # slow: a ResNet-50
    ("deeplabv3_mbv3", "mobilenet_v3_large"),
    ("lraspp_mbv3_large", "mobilenet_v3_large"), ("lraspp_mbv3_small", "mobilenet_v3_small"),
])
def test_backbone_accepts_imagenet_keys(name, torchvision_name):
    import torchvision

    from lowpower.train.pretrained import backbone_state_dict

    imagenet_like = getattr(torchvision.models, torchvision_name)(weights=None).state_dict()
    result = build(name).backbone.load_state_dict(backbone_state_dict(imagenet_like, name), strict=False)
    assert result.missing_keys == []
    assert set(result.unexpected_keys) <= {"fc.weight", "fc.bias"}


@pytest.mark.slow  # every network at 512x512; the fast tier runs them at 64 (above)
@pytest.mark.parametrize("name", networks.list_models())
def test_full_size_512(name):
    model = build(name).eval()
    with torch.no_grad():
        logits = model(torch.randn(1, 3, 512, 512))
    assert logits.shape == (1, NUM_CLASSES, 512, 512) and torch.isfinite(logits).all()


@pytest.mark.slow  # builds every zoo network at full width
def test_the_slow_networks_are_the_ones_over_10m_parameters_and_wider_siblings():
    big = {name for name in networks.list_models()
           if sum(p.numel() for p in networks.create_model(name).parameters()) > 10_000_000}
    assert big == OVER_10M, "update tests/conftest.py's OVER_10M to the zoo's networks over 10 M parameters"
    for wider, smaller in WIDER_SIBLINGS.items():  # the family's smallest stays fast, in the same file
        assert smaller not in SLOW_NETWORKS
        assert networks.get_builder(wider).__module__ == networks.get_builder(smaller).__module__
    assert SLOW_NETWORKS == OVER_10M | set(WIDER_SIBLINGS)
