"""Shape masks for the synthetic scenes: flowing regions, rotated boxes, strips, cracks.

Every function returns a boolean (height, width) mask and draws its randomness
from the numpy Generator it is given, so a scene is reproducible from its seed.
"""
import cv2
import numpy as np

from lowpower.data.synthetic.noise import value_noise


def flow_region(rng, size, area_frac, elongation=2.5, wobble=0.6):
    """An organic, elongated region (water, lava, mud, snow...) with a noisy edge.

    Args:
        rng: numpy Generator.
        size: (height, width).
        area_frac: rough share of the image the region covers.
        elongation: ratio of the long to the short axis.
        wobble: how strongly noise bends the outline (0 = ellipse).

    Example:
        >>> flow_region(np.random.default_rng(0), (512, 512), 0.2).dtype
        dtype('bool')
    """
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    cy, cx = rng.uniform(0.2, 0.8) * h, rng.uniform(0.2, 0.8) * w
    short = np.sqrt(area_frac * h * w / (np.pi * elongation))
    long_ = short * elongation
    theta = rng.uniform(0, np.pi)
    u = ((xx - cx) * np.cos(theta) + (yy - cy) * np.sin(theta)) / long_
    v = (-(xx - cx) * np.sin(theta) + (yy - cy) * np.cos(theta)) / short
    # Bend the long axis so the region meanders like a flow rather than an ellipse.
    v = v + rng.uniform(-0.8, 0.8) * u ** 2
    distance = np.sqrt(u ** 2 + v ** 2)
    bend = wobble * (value_noise(rng, size, 6) - 0.5) * 2
    return distance + bend < 1.0


def blob(rng, size, center, radius, wobble=0.35):
    """A roundish blob with a noisy edge around `center` (y, x)."""
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    distance = np.hypot(yy - center[0], xx - center[1]) / max(radius, 1.0)
    return distance + wobble * (value_noise(rng, size, 10) - 0.5) * 2 < 1.0


def rotated_box(size, center, box_hw, angle_deg):
    """Filled rotated rectangle; `center` is (y, x), `box_hw` is (height, width)."""
    mask = np.zeros(size, np.uint8)
    rect = ((float(center[1]), float(center[0])), (float(box_hw[1]), float(box_hw[0])), float(angle_deg))
    corners = cv2.boxPoints(rect).round().astype(np.int32)
    cv2.fillPoly(mask, [corners], 1)
    return mask.astype(bool)


def random_path(rng, size, steps=6, margin=-0.1):
    """A gently curving path that crosses the image, as integer (x, y) points."""
    h, w = size
    if rng.random() < 0.5:
        start = (rng.uniform(margin, 1 - margin) * w, margin * h)
        end = (rng.uniform(margin, 1 - margin) * w, (1 - margin) * h)
    else:
        start = (margin * w, rng.uniform(margin, 1 - margin) * h)
        end = ((1 - margin) * w, rng.uniform(margin, 1 - margin) * h)
    t = np.linspace(0, 1, steps)[:, None]
    points = (1 - t) * np.array(start) + t * np.array(end)
    points[1:-1] += rng.normal(0, 0.06 * min(h, w), (steps - 2, 2))
    return points.round().astype(np.int32)


def strip(size, points, width):
    """A thick polyline (road, river bank) through `points`."""
    mask = np.zeros(size, np.uint8)
    cv2.polylines(mask, [points], False, 1, thickness=int(width), lineType=cv2.LINE_8)
    return mask.astype(bool)


def crack_lines(rng, size, origin, length, width, branches=3):
    """A jagged, branching fissure starting at `origin` (y, x)."""
    mask = np.zeros(size, np.uint8)
    for _ in range(branches):
        y, x = origin
        heading = rng.uniform(0, 2 * np.pi)
        points = [(int(x), int(y))]
        for _ in range(int(length / 8)):
            heading += rng.normal(0, 0.45)
            x += 8 * np.cos(heading)
            y += 8 * np.sin(heading)
            points.append((int(x), int(y)))
        thickness = max(1, int(width * rng.uniform(0.7, 1.3)))
        cv2.polylines(mask, [np.array(points, np.int32)], False, 1, thickness=thickness)
        origin = points[len(points) // 2][::-1]
    return mask.astype(bool)


def break_up(rng, mask, keep=0.6, cells=24):
    """Remove noisy chunks from a mask: collapsed roofs, broken outlines."""
    noise = value_noise(rng, mask.shape, cells)
    threshold = np.quantile(noise[mask], 1 - keep) if mask.any() else 0.5
    return mask & (noise >= threshold)
