"""Per-class surface textures for the synthetic scenes.

Each function returns a float32 (height, width, 3) RGB image over the whole
frame; the scene pastes it inside the class's mask. Confusable pairs draw from
the same colour palette on purpose (damaged/undamaged buildings, fire/lava,
flood/ice jam, debris/avalanche) so that only texture and shape tell them apart.
"""
import cv2
import numpy as np

from lowpower.data.synthetic.noise import fractal_noise, stretched_noise, value_noise, voronoi_cells

ROOF_COLOURS = [(170, 85, 65), (125, 125, 130), (95, 105, 125), (195, 180, 155), (150, 70, 60)]
HOT_COLOURS = [(255, 215, 70), (245, 130, 25), (200, 45, 15)]
WATER_COLOURS = [(105, 105, 90), (75, 95, 110), (95, 110, 105), (120, 110, 85)]
SLOPE_COLOURS = [(205, 200, 192), (185, 175, 160), (195, 192, 188)]
# Vegetation and soil: the classes' palettes stay apart from it, the confusable pairs do not.
TERRAIN_COLOURS = [(80, 110, 55), (55, 85, 45), (115, 115, 65), (110, 88, 62)]


def pick(rng, colours, spread=12.0):
    """One palette entry with a small random shift, as a float array (3,)."""
    base = np.array(colours[rng.integers(len(colours))], np.float32)
    return base + rng.normal(0, spread, 3).astype(np.float32)


def shade(field, colour, low=0.75, high=1.2):
    """Modulate a colour by a [0, 1] field: brightness between low and high."""
    return (low + (high - low) * field)[..., None] * colour[None, None, :]


def terrain(rng, size):
    """Background: a patchwork of grass, soil, rock and sand with fine grain."""
    # The patchwork is low-frequency: draw it at a quarter resolution and upsample.
    small = (size[0] // 4, size[1] // 4)
    weights = np.stack([fractal_noise(rng, small, 3, octaves=3) for _ in TERRAIN_COLOURS], -1)
    weights = cv2.resize(np.exp(weights * 6.0), (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
    weights /= weights.sum(-1, keepdims=True)
    colours = np.stack([pick(rng, TERRAIN_COLOURS, 10) for _ in TERRAIN_COLOURS])
    base = weights @ colours
    grain = fractal_noise(rng, size, 32, octaves=3)
    return base * (0.8 + 0.4 * grain)[..., None]


def roof(rng, size, angle_deg):
    """Intact roof: one flat colour, a ridge line splitting two shaded halves."""
    colour = pick(rng, ROOF_COLOURS)
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    theta = np.deg2rad(angle_deg)
    side = np.sign(np.sin(theta) * xx - np.cos(theta) * yy + rng.uniform(-1, 1))
    return colour[None, None, :] * (1.0 + 0.08 * side)[..., None]


def rubble(rng, size, colour=None):
    """Collapsed roof: the roof palette broken into speckled fragments and dark holes."""
    colour = pick(rng, ROOF_COLOURS) if colour is None else colour
    # Coarse enough to survive the 4x downscale of a CPU model's input.
    speckle = value_noise(rng, size, 24)
    chunks = value_noise(rng, size, 10)
    texture = shade(speckle, colour, 0.45, 1.35)
    dark = chunks < 0.35
    texture[dark] *= 0.45
    return texture


def flames(rng, size):
    """Fire: fine turbulent yellow-orange-red tongues."""
    heat = fractal_noise(rng, size, 10, octaves=3, persistence=0.65)
    hot = np.array(HOT_COLOURS, np.float32)
    low = np.clip(heat * 2, 0, 1)[..., None]
    high = np.clip(heat * 2 - 1, 0, 1)[..., None]
    return (1 - low) * hot[2] + low * ((1 - high) * hot[1] + high * hot[0])


def lava(rng, size):
    """Lava: dark crust plates split by glowing orange veins."""
    _, edge = voronoi_cells(rng, size, 110)
    glow = np.exp(-edge / 6.0)
    crust = shade(fractal_noise(rng, size, 40, octaves=2), np.array([70, 35, 25], np.float32), 0.7, 1.3)
    vein = pick(rng, HOT_COLOURS[:2], 10)
    return (1 - glow)[..., None] * crust + glow[..., None] * vein


def water(rng, size, angle_deg):
    """Flood water: smooth turbid colour with long parallel ripples."""
    colour = pick(rng, WATER_COLOURS)
    ripples = stretched_noise(rng, size, 20, angle_deg, 8)
    broad = fractal_noise(rng, size, 4, octaves=2)
    return shade(0.6 * broad + 0.4 * ripples, colour, 0.85, 1.15)


def ice_plates(rng, size):
    """Ice jam: the water palette broken into angular plates with pale rims."""
    colour = pick(rng, WATER_COLOURS)
    labels, edge = voronoi_cells(rng, size, 90)
    plate_tone = rng.uniform(0.8, 1.35, labels.max() + 1).astype(np.float32)[labels]
    rim = np.exp(-edge / 5.0)[..., None]
    plates = colour[None, None, :] * plate_tone[..., None]
    return (1 - rim) * plates + rim * np.array([205, 210, 215], np.float32)


def snow_runout(rng, size, angle_deg):
    """Avalanche: smooth pale deposit streaked along the flow direction."""
    colour = pick(rng, SLOPE_COLOURS)
    streaks = stretched_noise(rng, size, 24, angle_deg, 10)
    return shade(streaks, colour, 0.85, 1.12)


def rock_flow(rng, size):
    """Debris / mud flow: the same pale palette strewn with rocks and their shadows."""
    colour = pick(rng, SLOPE_COLOURS)
    rocks = value_noise(rng, size, 28)
    base = shade(fractal_noise(rng, size, 12, octaves=2), colour, 0.8, 1.05)
    base[rocks > 0.68] *= 0.55
    base[rocks < 0.25] *= 1.15
    return base


def ash_cloud(rng, size):
    """Pyroclastic flow: billowing grey cauliflower clouds."""
    puffs = np.abs(fractal_noise(rng, size, 10, octaves=5, persistence=0.6) - 0.5) * 2
    grey = np.array([140, 135, 130], np.float32) + rng.normal(0, 10, 3).astype(np.float32)
    return shade(1 - puffs, grey, 0.4, 1.4)


def asphalt(rng, size):
    """Road surface: grey with fine grain (markings are drawn by the scene)."""
    grey = np.full(3, rng.uniform(80, 125), np.float32) + rng.normal(0, 4, 3).astype(np.float32)
    return shade(value_noise(rng, size, 120), grey, 0.92, 1.08)


def fissure(rng, size):
    """Cracks: near-black depth with a slightly lighter broken edge."""
    depth = value_noise(rng, size, 60)
    return shade(depth, np.array([45, 38, 32], np.float32), 0.7, 1.6)
