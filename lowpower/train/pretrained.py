"""Load torchvision ImageNet weights into the backbone of a ``networks`` model.

Workstation side: ``networks/`` never downloads anything, so a freshly built
model gets its pretrained backbone here when a config asks for it.
"""
import os

import torch
import torchvision.models as tv_models

# Registry name -> torchvision weights enum whose network matches model.backbone.
BACKBONE_WEIGHTS = {
    "deeplabv3_r18": "ResNet18_Weights",
    "deeplabv3_r50": "ResNet50_Weights",
    "deeplabv3_r101": "ResNet101_Weights",
    "fanet_r18": "ResNet18_Weights",
    "fcn_r50": "ResNet50_Weights",
    "deeplabv3_mbv3": "MobileNet_V3_Large_Weights",
    "lraspp_mbv3_large": "MobileNet_V3_Large_Weights",
    "lraspp_mbv3_small": "MobileNet_V3_Small_Weights",
}

# Registry name -> prefix of the checkpoint keys that model.backbone holds (with
# the prefix removed); other keys (the ImageNet classifier) are dropped. ResNet
# backbones hold the checkpoint's own key names (its ``fc`` is ignored).
BACKBONE_PREFIX = {
    "deeplabv3_mbv3": "features.",
    "lraspp_mbv3_large": "features.",
    "lraspp_mbv3_small": "features.",
}


def backbone_weights_url(arch: str, weights: str = "IMAGENET1K_V1") -> str:
    """Return the download URL of the ImageNet weights for ``arch``'s backbone.

    Example:
        >>> backbone_weights_url("deeplabv3_r18").rsplit("/", 1)[-1]
        'resnet18-f37072fd.pth'
    """
    if arch not in BACKBONE_WEIGHTS:
        raise ValueError(
            f"No pretrained backbone weights for model {arch!r}; available for: "
            f"{', '.join(sorted(BACKBONE_WEIGHTS))}. Use --set model.pretrained=false."
        )
    enum = getattr(tv_models, BACKBONE_WEIGHTS[arch])
    if weights not in enum.__members__:
        raise ValueError(f"Unknown weights {weights!r} for {arch}; choose from {', '.join(enum.__members__)}")
    return enum[weights].url


def download_state_dict(url: str) -> dict:
    """Fetch a state dict through the torch hub cache, or explain how to provide it offline.

    A file already in ``torch.hub.get_dir()/checkpoints`` is used without network.
    """
    try:
        return torch.hub.load_state_dict_from_url(url, map_location="cpu", progress=False, check_hash=True)
    except OSError as exc:  # URLError, HTTPError, socket errors and timeouts are all OSErrors
        file_name = os.path.basename(url)
        folder = os.path.join(torch.hub.get_dir(), "checkpoints")
        raise RuntimeError(
            f"Could not download the pretrained weights {file_name} from {url} ({exc}). "
            f"Download that file elsewhere and put it in {folder}/{file_name}, "
            f"or train without pretrained weights: --set model.pretrained=false"
        ) from exc


def backbone_state_dict(state_dict: dict, arch: str) -> dict:
    """Rename an ImageNet checkpoint's keys to those of ``arch``'s ``model.backbone``.

    MobileNetV3 checkpoints keep their ``features.`` entries with the prefix
    removed (the classifier is dropped); ResNet checkpoints pass unchanged.

    Example:
        >>> sorted(backbone_state_dict({"features.0.0.weight": 1, "classifier.0.bias": 2}, "lraspp_mbv3_small"))
        ['0.0.weight']
    """
    prefix = BACKBONE_PREFIX.get(arch)
    if prefix is None:
        return dict(state_dict)
    return {key[len(prefix):]: value for key, value in state_dict.items() if key.startswith(prefix)}


def load_pretrained_backbone(model: torch.nn.Module, arch: str, weights: str = "IMAGENET1K_V1") -> list[str]:
    """Load torchvision ImageNet weights (ResNet or MobileNetV3) into ``model.backbone``.

    Args:
        model: a model built by ``networks.create_model(arch, ...)``.
        arch: its registry name, e.g. ``"deeplabv3_r18"``.
        weights: the torchvision weights member, e.g. ``"IMAGENET1K_V1"``.

    Returns:
        Backbone keys the checkpoint did not provide (empty for a full match;
        the ImageNet classifier is ignored).

    Raises:
        ValueError: ``arch`` has no pretrained backbone.
        RuntimeError: the weights are neither cached nor downloadable.

    Example:
        >>> model = networks.create_model("deeplabv3_r18")
        >>> load_pretrained_backbone(model, "deeplabv3_r18")
        []
    """
    state_dict = backbone_state_dict(download_state_dict(backbone_weights_url(arch, weights)), arch)
    result = model.backbone.load_state_dict(state_dict, strict=False)
    return list(result.missing_keys)
