"""Procedural noise fields used to texture the synthetic scenes.

All fields are float32 arrays in [0, 1] (or [-1, 1] where stated) at the
requested size, built from random low-resolution grids upsampled with cubic
interpolation: cheap, smooth, and fully determined by the generator passed in.
"""
import cv2
import numpy as np


def value_noise(rng, size, cells):
    """Smooth noise in [0, 1] with about `cells` random values across the image.

    Args:
        rng: numpy Generator.
        size: (height, width) of the field.
        cells: number of independent values along each side (feature scale).

    Example:
        >>> value_noise(np.random.default_rng(0), (512, 512), 8).shape
        (512, 512)
    """
    h, w = size
    cells = max(2, int(cells))
    grid = rng.random((cells + 3, cells + 3), dtype=np.float32)
    big = cv2.resize(grid, (w + 3 * w // cells, h + 3 * h // cells), interpolation=cv2.INTER_CUBIC)
    # Crop away the border where cubic interpolation has fewer neighbours.
    oy, ox = h // cells, w // cells
    return np.clip(big[oy:oy + h, ox:ox + w], 0.0, 1.0)


def fractal_noise(rng, size, cells, octaves=4, persistence=0.5):
    """Sum of value-noise octaves (coarse to fine), normalised to [0, 1].

    Args:
        rng: numpy Generator.
        size: (height, width).
        cells: feature count of the coarsest octave; each octave doubles it.
        octaves: number of octaves.
        persistence: amplitude ratio between successive octaves.
    """
    total = np.zeros(size, np.float32)
    amplitude, norm = 1.0, 0.0
    for octave in range(octaves):
        total += amplitude * value_noise(rng, size, cells * 2 ** octave)
        norm += amplitude
        amplitude *= persistence
    return normalise(total / norm)


def stretched_noise(rng, size, cells, angle_deg, stretch):
    """Noise elongated along `angle_deg`: streaks such as snow runout or flow lines.

    Args:
        rng: numpy Generator.
        size: (height, width).
        cells: feature count across the streaks.
        angle_deg: direction of the streaks, degrees.
        stretch: how much longer features are along the streak than across it.
    """
    h, w = size
    side = int(np.ceil(np.hypot(h, w)))
    across = value_noise(rng, (side, max(2, side // int(stretch))), cells)
    square = cv2.resize(across, (side, side), interpolation=cv2.INTER_LINEAR)
    rot = cv2.getRotationMatrix2D((side / 2, side / 2), angle_deg, 1.0)
    turned = cv2.warpAffine(square, rot, (side, side), borderMode=cv2.BORDER_REFLECT)
    y0, x0 = (side - h) // 2, (side - w) // 2
    return turned[y0:y0 + h, x0:x0 + w]


def voronoi_cells(rng, size, count):
    """Voronoi partition of the image: (cell id per pixel, distance to the nearest edge).

    Used for plate-like textures (ice floes, lava crust). Distances are in pixels.
    """
    h, w = size
    seeds = np.full((h, w), 255, np.uint8)
    ys = rng.integers(0, h, count)
    xs = rng.integers(0, w, count)
    seeds[ys, xs] = 0
    _, labels = cv2.distanceTransformWithLabels(seeds, cv2.DIST_L2, 5, labelType=cv2.DIST_LABEL_PIXEL)
    edges = np.zeros((h, w), np.uint8)
    edges[:, 1:] |= (labels[:, 1:] != labels[:, :-1]).astype(np.uint8)
    edges[1:, :] |= (labels[1:, :] != labels[:-1, :]).astype(np.uint8)
    edge_distance = cv2.distanceTransform(1 - edges, cv2.DIST_L2, 3)
    return labels, edge_distance


def normalise(field):
    """Rescale a field linearly to [0, 1]."""
    low, high = float(field.min()), float(field.max())
    return (field - low) / max(high - low, 1e-6)
