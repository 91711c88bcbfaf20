"""Load torchvision ImageNet weights into the backbone of a ``networks`` model.

Workstation side: ``networks/`` never downloads anything, so a freshly built
model gets its pretrained backbone here when a config asks for it.
"""
import os

import torch
import torchvision.models as tv_models

# Registry name -> torchvision weights enum whose ResNet matches model.backbone.
BACKBONE_WEIGHTS = {
    "deeplabv3_r18": "ResNet18_Weights",
    "deeplabv3_r50": "ResNet50_Weights",
    "deeplabv3_r101": "ResNet101_Weights",
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


def load_pretrained_backbone(model: torch.nn.Module, arch: str, weights: str = "IMAGENET1K_V1") -> list[str]:
    """Load torchvision ImageNet ResNet weights into ``model.backbone``.

    Args:
        model: a model built by ``networks.create_model(arch, ...)``.
        arch: its registry name, e.g. ``"deeplabv3_r18"``.
        weights: the torchvision weights member, e.g. ``"IMAGENET1K_V1"``.

    Returns:
        Backbone keys the checkpoint did not provide (empty for a full match;
        the ImageNet ``fc`` layer is ignored).

    Raises:
        ValueError: ``arch`` has no pretrained backbone.
        RuntimeError: the weights are neither cached nor downloadable.

    Example:
        >>> model = networks.create_model("deeplabv3_r18")
        >>> load_pretrained_backbone(model, "deeplabv3_r18")
        []
    """
    state_dict = download_state_dict(backbone_weights_url(arch, weights))
    result = model.backbone.load_state_dict(state_dict, strict=False)
    return list(result.missing_keys)
