"""Paired image/mask transforms for training and evaluation (torchvision.transforms.v2).

Convention: every transform here is called as ``t(image, mask)`` where

- ``image`` is a numpy ``HxWx3`` uint8 RGB array (what ``LPCVCDataset`` passes) or a torch uint8
  ``3xHxW`` tensor;
- ``mask`` is a numpy ``HxW`` uint8 array of class ids or a torch integer ``HxW`` tensor;

and returns ``(image, mask)`` as plain tensors: float32 ``3xHxW`` normalised image, int64 ``HxW``
mask. The image and mask are wrapped as ``tv_tensors.Image`` / ``tv_tensors.Mask`` internally, so
geometric ops resize masks with nearest neighbour and colour ops leave masks alone.

Example:
    >>> t = train_transforms(288)
    >>> img, mask = t(np.zeros((512, 512, 3), np.uint8), np.zeros((512, 512), np.uint8))
    >>> img.shape, img.dtype, mask.shape, mask.dtype
    (torch.Size([3, 288, 288]), torch.float32, torch.Size([288, 288]), torch.int64)
"""

from typing import Any, Optional, Sequence, Tuple

import numpy as np
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from evaluation.contract import IGNORE_INDEX
from evaluation.metrics import referee_prepare
from lowpower.data.photometric import PhotometricDistortion

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def as_image(image):
    """Wrap a numpy ``HxWx3`` uint8 RGB array or a ``3xHxW`` tensor as ``tv_tensors.Image``."""
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError("expected an HxWx3 RGB image array, got shape %s" % (image.shape,))
        image = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
    return tv_tensors.Image(image)


def as_mask(mask):
    """Wrap a numpy or tensor ``HxW`` array of class ids as ``tv_tensors.Mask``."""
    if isinstance(mask, np.ndarray):
        if mask.ndim != 2:
            raise ValueError("expected an HxW mask array, got shape %s" % (mask.shape,))
        mask = torch.from_numpy(np.ascontiguousarray(mask))
    return tv_tensors.Mask(mask)


def to_tv_tensors(image, mask):
    """Wrap a numpy or tensor image/mask pair as ``(tv_tensors.Image, tv_tensors.Mask)``.

    Example:
        >>> img, m = to_tv_tensors(np.zeros((4, 5, 3), np.uint8), np.zeros((4, 5), np.uint8))
        >>> tuple(img.shape), tuple(m.shape)
        ((3, 4, 5), (4, 5))
    """
    return as_image(image), as_mask(mask)


class RandomSquareResize(v2.Transform):
    """Resize to a square of ``round(size * r)`` pixels, ``r`` uniform in ``scale``.

    Doing the base resize and the scale jitter in one step interpolates the image only once.
    Masks are resized with nearest neighbour (tv_tensors.Mask dispatch).

    Args:
        size: base side length in pixels.
        scale: ``(low, high)`` range of the random factor.

    Example:
        >>> img, m = RandomSquareResize(100, (0.5, 0.5))(*to_tv_tensors(
        ...     np.zeros((30, 40, 3), np.uint8), np.zeros((30, 40), np.uint8)))
        >>> tuple(img.shape), tuple(m.shape)
        ((3, 50, 50), (50, 50))
    """

    def __init__(self, size: int, scale: Tuple[float, float] = (0.5, 2.0)):
        super().__init__()
        if not 0 < scale[0] <= scale[1]:
            raise ValueError("scale must satisfy 0 < low <= high, got %s" % (scale,))
        self.size = int(size)
        self.scale = (float(scale[0]), float(scale[1]))

    def make_params(self, flat_inputs: list) -> dict:
        low, high = self.scale
        factor = low + torch.rand(()).item() * (high - low)
        side = max(1, int(round(self.size * factor)))
        return {"size": [side, side]}

    def transform(self, inpt: Any, params: dict) -> Any:
        return self._call_kernel(F.resize, inpt, size=params["size"], antialias=True)


class PairTransform:
    """Apply a v2 pipeline to an ``(image, mask)`` pair and return plain tensors.

    Args:
        pipeline: a v2 transform taking and returning ``(tv_tensors.Image, tv_tensors.Mask)``.

    Example:
        >>> t = PairTransform(v2.Identity())
        >>> img, m = t(np.zeros((2, 2, 3), np.uint8), np.ones((2, 2), np.uint8))
        >>> img.dtype, m.dtype
        (torch.uint8, torch.int64)
    """

    def __init__(self, pipeline):
        self.pipeline = pipeline

    def __call__(self, image, mask):
        image, mask = self.pipeline(*to_tv_tensors(image, mask))
        return image.as_subclass(torch.Tensor), mask.as_subclass(torch.Tensor).long()

    def __repr__(self):
        return "%s(%r)" % (type(self).__name__, self.pipeline)


def _normalise_steps(mean, std):
    """uint8 image -> float32 in [0, 1] -> normalised; masks pass through both steps."""
    return [v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean=list(mean), std=list(std))]


def train_transforms(
    input_size: int,
    crop_size: Optional[int] = None,
    scale: Tuple[float, float] = (0.5, 2.0),
    hflip: float = 0.5,
    jitter: float = 0.2,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    ignore_index: int = IGNORE_INDEX,
    hue: Optional[float] = None,
    photometric: bool = False,
):
    """Training augmentation: square resize with scale jitter, crop, flip, colour jitter, normalise.

    The image is resized to ``input_size`` square (the base scale) times a factor uniform in
    ``scale``, then a random ``crop_size`` crop is taken, padding with 0 (image) and
    ``ignore_index`` (mask) where the scaled image is smaller than the crop.

    Args:
        input_size: base square side the image is resized to before scale jitter.
        crop_size: side of the random crop (and of the output); default ``input_size``.
        scale: range of the random scale factor; ``(1, 1)`` disables it.
        hflip: probability of a horizontal flip.
        jitter: brightness/contrast/saturation strength; 0 disables colour jitter.
        mean, std: normalisation constants (RGB, in [0, 1] units).
        ignore_index: mask value for padded pixels.
        hue: hue jitter strength; default ``jitter / 10``, kept small because hue carries class
            meaning (fire, lava, water).
        photometric: add mmsegmentation's photometric distortion (``PhotometricDistortion``,
            uint8 in and out) right after the flip. It is independent of ``jitter``: with both,
            both apply (photometric first); set ``jitter=0`` for mmseg's recipe alone.

    Returns:
        A callable ``(image, mask) -> (float32 3xCxC, int64 CxC)`` with ``C = crop_size``.

    Example:
        >>> img, mask = train_transforms(64, crop_size=48)(
        ...     np.zeros((512, 512, 3), np.uint8), np.zeros((512, 512), np.uint8))
        >>> tuple(img.shape), tuple(mask.shape)
        ((3, 48, 48), (48, 48))
    """
    crop_size = input_size if crop_size is None else crop_size
    hue = jitter / 10 if hue is None else hue
    steps = [
        RandomSquareResize(input_size, scale),
        v2.RandomCrop(
            crop_size,
            pad_if_needed=True,
            fill={tv_tensors.Image: 0, tv_tensors.Mask: ignore_index},
            padding_mode="constant",
        ),
    ]
    if hflip > 0:
        steps.append(v2.RandomHorizontalFlip(p=hflip))
    if photometric:
        steps.append(PhotometricDistortion())
    if jitter > 0 or hue > 0:
        steps.append(v2.ColorJitter(brightness=jitter, contrast=jitter, saturation=jitter, hue=hue))
    steps += _normalise_steps(mean, std)
    return PairTransform(v2.Compose(steps))


class EvalTransform:
    """Evaluation transform: model-sized normalised image, referee-sized mask.

    See ``eval_transforms`` for the arguments.
    """

    def __init__(self, input_size, mean=IMAGENET_MEAN, std=IMAGENET_STD, mask_size=512):
        self.mask_size = int(mask_size)
        self.image_pipeline = v2.Compose(
            [v2.Resize((input_size, input_size), antialias=True)] + _normalise_steps(mean, std)
        )

    def __call__(self, image, mask):
        image = self.image_pipeline(as_image(image)).as_subclass(torch.Tensor)
        if isinstance(mask, torch.Tensor):
            mask = mask.detach().cpu().numpy().astype(np.uint8)
        # The referee's own preparation, so validation scores the masks the referee would score.
        mask = referee_prepare(np.ascontiguousarray(mask), size=self.mask_size)
        return image, torch.from_numpy(np.ascontiguousarray(mask)).long()

    def __repr__(self):
        return "%s(mask_size=%d, image=%r)" % (type(self).__name__, self.mask_size, self.image_pipeline)


def eval_transforms(input_size, mean=IMAGENET_MEAN, std=IMAGENET_STD, mask_size=512):
    """Evaluation transform matching how the shipped program is scored.

    The image is resized to ``input_size`` square (bilinear, antialiased) and normalised; the mask
    is brought to ``mask_size`` square with the referee's rule. Upsample the model's logits to
    ``mask_size`` before scoring, as the shipped program writes 512x512 masks.

    Args:
        input_size: square side the model sees.
        mean, std: normalisation constants (RGB, in [0, 1] units).
        mask_size: side of the returned mask (512 for LPCVC).

    Returns:
        A callable ``(image, mask) -> (float32 3xIxI, int64 MxM)``.

    Example:
        >>> img, mask = eval_transforms(288)(
        ...     np.zeros((512, 512, 3), np.uint8), np.zeros((512, 512), np.uint8))
        >>> tuple(img.shape), tuple(mask.shape)
        ((3, 288, 288), (512, 512))
    """
    return EvalTransform(input_size, mean, std, mask_size)


def denormalize(img_tensor, mean=IMAGENET_MEAN, std=IMAGENET_STD):
    """Undo normalisation: float ``3xHxW`` tensor -> uint8 ``HxWx3`` RGB numpy array for drawing.

    Example:
        >>> denormalize(torch.zeros(3, 2, 2)).shape
        (2, 2, 3)
    """
    img = img_tensor.detach().cpu().float()
    mean_t = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)
    img = (img * std_t + mean_t).clamp(0, 1).mul(255).round().to(torch.uint8)
    return img.permute(1, 2, 0).contiguous().numpy()
