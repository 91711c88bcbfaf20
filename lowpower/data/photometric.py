"""mmsegmentation's PhotoMetricDistortion as a torchvision.transforms.v2 transform.

mmsegmentation (``mmseg/datasets/transforms/transforms.py``, and ``pipelines/transforms.py`` in
0.x, same code) applies, each with probability 0.5:

1. brightness: ``x + beta``, ``beta`` uniform in ``[-32, 32]``;
2. contrast, when ``mode == 1``: ``x * alpha``, ``alpha`` uniform in ``[0.5, 1.5]``;
3. saturation: to OpenCV's uint8 HSV, ``S * alpha`` (``alpha`` uniform in ``[0.5, 1.5]``), back;
4. hue: to OpenCV's uint8 HSV, ``H = (H + delta) % 180`` (``delta`` a whole number of OpenCV's
   2-degree units), back;
5. contrast, when ``mode == 0`` (``mode`` is 0 or 1 with probability 0.5).

Every step there works on uint8: ``convert`` computes ``x * alpha + beta`` in float32, clips to
[0, 255] and casts back with ``astype(np.uint8)``, which truncates; ``mmcv.bgr2hsv`` is
``cv2.cvtColor`` on the uint8 image (H in 0..179, S and V in 0..255). So the image leaves mmseg's
transform as uint8, not float, and this module does the same (input and output uint8, before
``ToDtype``). Brightness, contrast and the saturation multiply are bit-exact; RGB->HSV is OpenCV's
fixed-point arithmetic, bit-exact over all 2**24 colours; HSV->RGB is OpenCV's float32 vector
loop, which truncates. OpenCV itself is only reproducible to one level there: its scalar loop
(a row's last pixels) rounds instead, and a compiler-fused multiply-add moves a few values on a
rounding edge. So one HSV round trip is within one level of cv2; a chain of ops can drift a few
levels where that level moves the next hue onto another 2-degree step (tests/test_photometric.py).
HSV does not depend on the channel order, so RGB here equals mmseg's BGR.

Two mmseg details kept on purpose: the hue delta is ``randint(-18, 18)`` with an exclusive upper
bound, so it lies in ``[-18, 17]``; contrast multiplies (no blend with the mean grey) and
brightness adds, unlike ``v2.ColorJitter``.

Example:
    >>> import torch
    >>> from torchvision import tv_tensors
    >>> t = PhotometricDistortion()
    >>> image = tv_tensors.Image(torch.full((3, 4, 4), 100, dtype=torch.uint8))
    >>> mask = tv_tensors.Mask(torch.zeros(4, 4, dtype=torch.uint8))
    >>> out_image, out_mask = t(image, mask)
    >>> out_image.dtype, out_mask is mask
    (torch.uint8, True)
"""

from typing import Any, Optional, Tuple

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

HUE_RANGE = 180  # OpenCV's uint8 hue: degrees / 2, 0..179
_SHIFT = 12  # OpenCV's fixed-point shift in RGB2HSV for uint8 (hsv_shift)
_LEVELS = torch.arange(256, dtype=torch.float64).clamp(min=1)
# OpenCV's lookup tables, rounded like its saturate_cast<int> (no value of these sits on a .5).
# int32 is enough (largest product 255 * 1044480 < 2**31) and twice as fast as int64 on CPUs.
_SDIV = torch.where(torch.arange(256) == 0, 0, ((255 << _SHIFT) / _LEVELS).round()).to(torch.int32)
_HDIV = torch.where(torch.arange(256) == 0, 0, ((HUE_RANGE << _SHIFT) / (6 * _LEVELS)).round()).to(torch.int32)


def rgb_to_hsv_cv(image: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """OpenCV's uint8 RGB->HSV (``cv2.COLOR_RGB2HSV``), bit-exact, as int32 ``(h, s, v)``.

    Args:
        image: uint8 ``...x3xHxW`` RGB tensor.

    Returns:
        ``h`` in 0..179 (degrees / 2), ``s`` and ``v`` in 0..255, each ``...xHxW``.

    Example:
        >>> [int(c) for c in rgb_to_hsv_cv(torch.tensor([255, 0, 0], dtype=torch.uint8).view(3, 1, 1))]
        [0, 255, 255]
    """
    r, g, b = image.to(torch.int32).unbind(-3)
    v = torch.maximum(torch.maximum(r, g), b)
    diff = v - torch.minimum(torch.minimum(r, g), b)
    half = 1 << (_SHIFT - 1)
    s = (diff * _SDIV.to(image.device)[v.long()] + half) >> _SHIFT
    # OpenCV picks the red formula when red is the maximum, green next: ties resolve in that order.
    h = torch.where(v == r, g - b, torch.where(v == g, b - r + 2 * diff, r - g + 4 * diff))
    # Floor division, as OpenCV's arithmetic >> on a negative numerator.
    h = torch.div(h * _HDIV.to(image.device)[diff.long()] + half, 1 << _SHIFT, rounding_mode="floor")
    h = torch.where(h < 0, h + HUE_RANGE, h)
    return h, s, v


def hsv_to_rgb_cv(h: torch.Tensor, s: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """OpenCV's uint8 HSV->RGB (``cv2.COLOR_HSV2RGB``), in float32 as its vector loop does.

    Args:
        h: hue in 0..179 (degrees / 2); s, v: 0..255; integer tensors of one shape ``...xHxW``.

    Returns:
        uint8 ``...x3xHxW`` RGB, within one level of cv2 (see the module docstring).

    Example (the uint8 round trip loses a level here, as cv2's does):
        >>> hsv_to_rgb_cv(*rgb_to_hsv_cv(torch.tensor([10, 200, 30], dtype=torch.uint8).view(3, 1, 1))).flatten()
        tensor([ 10, 200,  29], dtype=torch.uint8)
    """
    f32 = dict(dtype=torch.float32, device=h.device)
    hue = h.to(torch.float32) * torch.tensor(6.0 / HUE_RANGE, **f32)
    sector = torch.floor(hue)
    frac = hue - sector
    sector = sector.to(torch.int64) % 6
    sat = s.to(torch.float32) * torch.tensor(1.0 / 255.0, **f32)
    val = v.to(torch.float32) * torch.tensor(1.0 / 255.0, **f32)
    # OpenCV's tab[0..3]: v, v(1-s), v(1-s*f), v(1-s(1-f)); each sector picks (r, g, b) from them.
    tab = torch.stack([val, val * (1 - sat), val * (1 - sat * frac), val * (1 - sat * (1 - frac))])
    pick = torch.tensor([[0, 3, 1], [2, 0, 1], [1, 0, 3], [1, 2, 0], [3, 1, 0], [0, 1, 2]], device=h.device)
    index = pick[sector].movedim(-1, 0)  # 3 x ... : which tab entry each of r, g, b takes
    rgb = torch.gather(tab, 0, index)
    # OpenCV's vector path truncates (v_trunc); its scalar path, used for a row's last few pixels
    # (fewer than 4 SIMD widths), rounds instead. Truncating matches all but those pixels.
    return (rgb * torch.tensor(255.0, **f32)).floor().clamp(0, 255).to(torch.uint8).movedim(0, -3)


def _convert(x: torch.Tensor, alpha: float = 1.0, beta: float = 0.0) -> torch.Tensor:
    """mmseg's ``convert``: ``x * alpha + beta`` in float32, clipped to [0, 255], truncated to uint8."""
    alpha_t = torch.tensor(alpha, dtype=torch.float32, device=x.device)
    beta_t = torch.tensor(beta, dtype=torch.float32, device=x.device)
    return (x.to(torch.float32) * alpha_t + beta_t).clamp(0, 255).floor().to(torch.uint8)


def apply_photometric(image: torch.Tensor, params: dict) -> torch.Tensor:
    """Apply drawn photometric parameters to a uint8 RGB image; no randomness here.

    Args:
        image: uint8 ``...x3xHxW`` RGB tensor.
        params: from :meth:`PhotometricDistortion.make_params`: ``brightness`` (beta or None),
            ``contrast`` (alpha or None), ``contrast_first`` (bool, mmseg's ``mode == 1``),
            ``saturation`` (alpha or None), ``hue`` (integer delta in OpenCV units or None).

    Returns:
        The distorted uint8 image, same shape.

    Example:
        >>> image = torch.full((3, 1, 1), 100, dtype=torch.uint8)
        >>> apply_photometric(image, {"brightness": 10.5, "contrast": 2.0, "contrast_first": False,
        ...                           "saturation": None, "hue": None}).flatten().tolist()
        [220, 220, 220]
    """
    if image.dtype != torch.uint8 or image.ndim < 3 or image.shape[-3] != 3:
        raise ValueError("PhotometricDistortion needs a uint8 ...x3xHxW RGB image, got %s %s"
                         % (image.dtype, tuple(image.shape)))
    if params["brightness"] is not None:
        image = _convert(image, beta=params["brightness"])
    if params["contrast_first"] and params["contrast"] is not None:
        image = _convert(image, alpha=params["contrast"])
    # Saturation and hue each make their own uint8 HSV round trip, as mmseg's two methods do.
    if params["saturation"] is not None:
        h, s, v = rgb_to_hsv_cv(image)
        image = hsv_to_rgb_cv(h, _convert(s, alpha=params["saturation"]), v)
    if params["hue"] is not None:
        h, s, v = rgb_to_hsv_cv(image)
        image = hsv_to_rgb_cv((h + int(params["hue"])) % HUE_RANGE, s, v)
    if not params["contrast_first"] and params["contrast"] is not None:
        image = _convert(image, alpha=params["contrast"])
    return image


class PhotometricDistortion(v2.Transform):
    """mmsegmentation's PhotoMetricDistortion on ``tv_tensors.Image``; masks pass unchanged.

    Each of brightness, contrast, saturation and hue fires with probability 0.5 and contrast
    comes second or last with probability 0.5 (see the module docstring). Every random number
    comes from the global torch RNG, which ``SeededItems`` seeds per sample, so a resumed run
    draws the same distortions. Input and output are uint8; mmseg's own output is uint8 too.

    Args:
        brightness_delta: brightness offset range ``[-delta, delta]`` in uint8 levels.
        contrast_range: ``(low, high)`` of the contrast factor.
        saturation_range: ``(low, high)`` of the HSV saturation factor.
        hue_delta: hue offsets are integers in ``[-hue_delta, hue_delta - 1]`` (OpenCV units of
            2 degrees; mmseg's exclusive upper bound).

    Example:
        >>> import torch
        >>> from torchvision import tv_tensors
        >>> image = tv_tensors.Image(torch.randint(0, 256, (3, 8, 8), dtype=torch.uint8))
        >>> out = PhotometricDistortion()(image)
        >>> type(out).__name__, out.dtype, tuple(out.shape)
        ('Image', torch.uint8, (3, 8, 8))
    """

    # PIL images are not handled; masks and boxes are tensors too but transform() returns them as they are.
    _transformed_types = (torch.Tensor,)

    def __init__(self, brightness_delta: float = 32, contrast_range: Tuple[float, float] = (0.5, 1.5),
                 saturation_range: Tuple[float, float] = (0.5, 1.5), hue_delta: int = 18):
        super().__init__()
        for name, (low, high) in (("contrast_range", contrast_range), ("saturation_range", saturation_range)):
            if not 0 <= low <= high:
                raise ValueError("%s must satisfy 0 <= low <= high, got %s" % (name, (low, high)))
        if brightness_delta < 0 or not 0 <= int(hue_delta) <= HUE_RANGE // 2:
            raise ValueError("need brightness_delta >= 0 and 0 <= hue_delta <= 90, got %s, %s"
                             % (brightness_delta, hue_delta))
        self.brightness_delta = float(brightness_delta)
        self.contrast_range = (float(contrast_range[0]), float(contrast_range[1]))
        self.saturation_range = (float(saturation_range[0]), float(saturation_range[1]))
        self.hue_delta = int(hue_delta)

    @staticmethod
    def _uniform(low: float, high: float) -> float:
        return low + torch.rand(()).item() * (high - low)

    def make_params(self, flat_inputs: Optional[list] = None) -> dict:
        """Draw one set of parameters (see :func:`apply_photometric`) from the global torch RNG.

        Every value is drawn whether its op fires or not, so each call takes the same number of
        random numbers whatever the outcome.
        """
        fires = (torch.rand(4) < 0.5).tolist()  # brightness, contrast, saturation, hue
        contrast_first = bool(torch.randint(2, ()).item())
        beta = self._uniform(-self.brightness_delta, self.brightness_delta)
        contrast = self._uniform(*self.contrast_range)
        saturation = self._uniform(*self.saturation_range)
        # torch.randint's high is exclusive like numpy's: mmseg's randint(-18, 18) gives -18..17.
        hue = int(torch.randint(-self.hue_delta, self.hue_delta, ()).item()) if self.hue_delta else 0
        return {
            "brightness": beta if fires[0] else None,
            "contrast": contrast if fires[1] else None,
            "contrast_first": contrast_first,
            "saturation": saturation if fires[2] else None,
            "hue": hue if fires[3] else None,
        }

    def transform(self, inpt: Any, params: dict) -> Any:
        # Masks (and any other tv_tensor but Image) carry labels or geometry, not colour.
        if isinstance(inpt, tv_tensors.TVTensor) and not isinstance(inpt, tv_tensors.Image):
            return inpt
        out = apply_photometric(inpt.as_subclass(torch.Tensor), params)
        return tv_tensors.wrap(out, like=inpt) if isinstance(inpt, tv_tensors.Image) else out

    def extra_repr(self) -> str:
        return "brightness_delta=%g, contrast_range=%s, saturation_range=%s, hue_delta=%d" % (
            self.brightness_delta, self.contrast_range, self.saturation_range, self.hue_delta)
