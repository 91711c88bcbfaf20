"""Colours for drawing LPCVC label masks.

Example:
    >>> colorize(np.array([[0, 3], [255, 13]], np.uint8))[1, 0].tolist()
    [0, 0, 0]
"""

import cv2
import numpy as np

# One RGB colour per class id, chosen to be told apart at a glance and to hint at the class
# (water blue, fire orange, road grey); background is dark grey so that every labelled region
# stands out against it.
PALETTE = np.array(
    [
        (50, 50, 50),  # 0 background
        (240, 240, 255),  # 1 avalanche
        (0, 170, 0),  # 2 building_undamaged
        (230, 0, 0),  # 3 building_damaged
        (255, 230, 0),  # 4 cracks/fissure/subsidence
        (140, 90, 40),  # 5 debris/mud/rock_flow
        (255, 128, 0),  # 6 fire/flare
        (0, 90, 255),  # 7 flood/water/river/sea
        (120, 210, 255),  # 8 ice_jam_flow
        (255, 0, 200),  # 9 lava_flow
        (255, 170, 190),  # 10 person
        (130, 0, 200),  # 11 pyroclastic_flow
        (160, 160, 160),  # 12 road/railway/bridge
        (0, 255, 200),  # 13 vehicle
    ],
    dtype=np.uint8,
)

# Lookup table over every uint8 value: ids without a class (255 = ignore) are drawn black.
_LUT = np.zeros((256, 3), dtype=np.uint8)
_LUT[: len(PALETTE)] = PALETTE


def _as_numpy(array):
    """Accept numpy arrays or torch tensors (without importing torch here)."""
    if hasattr(array, "detach"):
        array = array.detach().cpu().numpy()
    return np.asarray(array)


def colorize(mask):
    """Map an ``HxW`` mask of class ids to an ``HxWx3`` uint8 RGB picture.

    Args:
        mask: numpy array or torch tensor of ids; ids >= 14 (e.g. 255 = ignore) and negative ids
            are drawn black.

    Example:
        >>> colorize(np.zeros((2, 3), np.int64)).shape
        (2, 3, 3)
    """
    mask = _as_numpy(mask)
    ids = np.where((mask >= 0) & (mask < 256), mask, 255).astype(np.uint8)
    return _LUT[ids]


def overlay(image, mask, alpha=0.5):
    """Blend the colourised ``mask`` over an RGB ``image``.

    Pixels whose id has no class (e.g. 255 = ignore) keep the plain image so that unlabelled areas
    stay visible instead of being darkened. A mask of another size is resized (nearest) to the
    image, so a low-resolution prediction can be drawn over the full image.

    Args:
        image: ``HxWx3`` uint8 RGB array (e.g. from ``transforms.denormalize``).
        mask: ``hxw`` ids, numpy or torch.
        alpha: weight of the mask colours, 0 (image only) to 1 (colours only).

    Example:
        >>> overlay(np.full((2, 2, 3), 200, np.uint8), np.zeros((2, 2), np.uint8), 0.5)[0, 0].tolist()
        [125, 125, 125]
    """
    image = _as_numpy(image).astype(np.uint8)
    mask = _as_numpy(mask)
    if mask.shape[:2] != image.shape[:2]:
        # cv2 cannot resize int64; out-of-range ids become 255 first so they stay "no class".
        ids = np.where((mask >= 0) & (mask < 256), mask, 255).astype(np.uint8)
        mask = cv2.resize(ids, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_NEAREST)
    colours = colorize(mask).astype(np.float32)
    blended = (1.0 - alpha) * image.astype(np.float32) + alpha * colours
    out = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
    unlabelled = (mask < 0) | (mask >= len(PALETTE))
    out[unlabelled] = image[unlabelled]
    return out
