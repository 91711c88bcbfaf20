"""Compose one synthetic aerial disaster scene: an RGB image and its class-id mask.

A scene type (earthquake, flood, volcano ...) decides which of the 14 LPCVC
classes may appear, so confusable classes meet in the same picture the way
they do in the real data. Painting order matters: later layers overwrite
earlier ones in both the image and the label.
"""
import cv2
import numpy as np

from lowpower.data.synthetic import shapes, textures
from lowpower.data.synthetic.noise import fractal_noise

BACKGROUND, AVALANCHE, BUILDING, BUILDING_DAMAGED, CRACKS, DEBRIS, FIRE, FLOOD, ICE, LAVA, PERSON, \
    PYROCLASTIC, ROAD, VEHICLE = range(14)

SCENES = ("earthquake", "flood", "winter", "volcano", "wildfire", "mountain", "rural")
VIVID = [(220, 40, 40), (40, 80, 220), (240, 220, 40), (240, 240, 240), (40, 170, 60), (240, 120, 30)]
CAR_COLOURS = [(235, 235, 235), (180, 180, 185), (200, 30, 30), (30, 60, 160), (25, 25, 30)]


class Canvas:
    """An RGB float image and its uint8 label, painted layer by layer."""

    def __init__(self, image):
        self.image = image
        self.label = np.zeros(image.shape[:2], np.uint8)
        self.size = image.shape[:2]

    def paint(self, mask, texture, class_id):
        self.image[mask] = texture[mask] if texture.ndim == 3 else texture
        if class_id is not None:
            self.label[mask] = class_id


def add_flow(rng, canvas, class_id, texture, area):
    region = shapes.flow_region(rng, canvas.size, area, elongation=rng.uniform(1.5, 4))
    canvas.paint(region, texture, class_id)
    return region


def add_roads(rng, canvas, count):
    for _ in range(count):
        path = shapes.random_path(rng, canvas.size)
        width = int(rng.uniform(18, 34))
        canvas.paint(shapes.strip(canvas.size, path, width), textures.asphalt(rng, canvas.size), ROAD)
        # Dashed centre line: a road's give-away next to grey rock or ash.
        line = np.zeros(canvas.size, np.uint8)
        for a, b in zip(path[:-1], path[1:]):
            for t in np.arange(0, 1, 0.08)[::2]:
                p = (a + (b - a) * t).astype(int)
                q = (a + (b - a) * (t + 0.04)).astype(int)
                cv2.line(line, tuple(int(v) for v in p), tuple(int(v) for v in q), 1, 2)
        canvas.paint(line.astype(bool) & (canvas.label == ROAD), np.array([230, 225, 200], np.float32), None)
    return canvas.label == ROAD


def add_buildings(rng, canvas, count, damaged_share):
    h, w = canvas.size
    cy, cx = rng.uniform(0.2, 0.8) * h, rng.uniform(0.2, 0.8) * w
    angle = rng.uniform(0, 90)
    for _ in range(count):
        center = (cy + rng.normal(0, 0.18 * h), cx + rng.normal(0, 0.18 * w))
        box = (rng.uniform(24, 60), rng.uniform(30, 80))
        footprint = shapes.rotated_box(canvas.size, center, box, angle + rng.normal(0, 4))
        shadow = np.roll(footprint, (5, 5), (0, 1)) & ~footprint
        canvas.image[shadow] *= 0.55
        if rng.random() < damaged_share:
            colour = textures.pick(rng, textures.ROOF_COLOURS)
            broken = shapes.break_up(rng, footprint, keep=rng.uniform(0.55, 0.8))
            spill = shapes.break_up(rng, cv2.dilate(footprint.astype(np.uint8), np.ones((9, 9))).astype(bool),
                                    keep=0.35) & ~footprint
            canvas.paint(broken | spill, textures.rubble(rng, canvas.size, colour), BUILDING_DAMAGED)
        else:
            canvas.paint(footprint, textures.roof(rng, canvas.size, angle), BUILDING)


def add_cracks(rng, canvas, count):
    h, w = canvas.size
    for _ in range(count):
        origin = (rng.uniform(0.1, 0.9) * h, rng.uniform(0.1, 0.9) * w)
        mask = shapes.crack_lines(rng, canvas.size, origin, rng.uniform(80, 200), rng.uniform(8, 13))
        canvas.paint(mask, textures.fissure(rng, canvas.size), CRACKS)


def add_vehicles(rng, canvas, count, near=None):
    places = np.argwhere(near) if near is not None and near.any() else None
    for _ in range(count):
        if places is not None:
            cy, cx = places[rng.integers(len(places))]
        else:
            cy, cx = rng.uniform(20, canvas.size[0] - 20), rng.uniform(20, canvas.size[1] - 20)
        angle = rng.uniform(0, 180)
        body = shapes.rotated_box(canvas.size, (cy, cx), (rng.uniform(18, 22), rng.uniform(34, 44)), angle)
        canvas.paint(body, textures.pick(rng, CAR_COLOURS, 8), VEHICLE)
        glass = shapes.rotated_box(canvas.size, (cy, cx), (12, 8), angle) & body
        canvas.paint(glass, np.array([30, 35, 45], np.float32), None)


def add_people(rng, canvas, count):
    h, w = canvas.size
    cy, cx = rng.uniform(30, h - 30), rng.uniform(30, w - 30)
    for _ in range(count):
        y, x = int(cy + rng.normal(0, 25)), int(cx + rng.normal(0, 25))
        body = np.zeros(canvas.size, np.uint8)
        cv2.ellipse(body, (x, y), (int(rng.uniform(7, 9)), int(rng.uniform(9, 12))), rng.uniform(0, 180), 0, 360, 1, -1)
        cv2.circle(body, (x + 1, y - 10), 5, 1, -1)
        body = body.astype(bool)
        canvas.image[np.roll(body, (3, 3), (0, 1)) & ~body] *= 0.5
        canvas.paint(body, textures.pick(rng, VIVID, 15), PERSON)


def render_layers(rng, canvas, scene):
    """Paint the class layers that the scene type calls for."""
    size = canvas.size
    flow_angle = rng.uniform(0, 180)
    if scene == "flood":
        roads = add_roads(rng, canvas, rng.integers(1, 3))
        add_buildings(rng, canvas, rng.integers(3, 10), damaged_share=0.2)
        add_flow(rng, canvas, FLOOD, textures.water(rng, size, flow_angle), rng.uniform(0.15, 0.35))
        add_vehicles(rng, canvas, rng.integers(0, 5), near=roads & (canvas.label == ROAD))
        add_people(rng, canvas, rng.integers(0, 6) * (rng.random() < 0.5))
    elif scene == "winter":
        river = add_flow(rng, canvas, FLOOD, textures.water(rng, size, flow_angle), rng.uniform(0.15, 0.3))
        jam = shapes.flow_region(rng, size, rng.uniform(0.06, 0.15)) & river
        canvas.paint(jam | (shapes.flow_region(rng, size, 0.08) & (rng.random() < 0.4)),
                     textures.ice_plates(rng, size), ICE)
        if rng.random() < 0.5:
            add_flow(rng, canvas, AVALANCHE, textures.snow_runout(rng, size, flow_angle), rng.uniform(0.05, 0.15))
        add_roads(rng, canvas, rng.integers(0, 2))
    elif scene == "volcano":
        add_flow(rng, canvas, PYROCLASTIC, textures.ash_cloud(rng, size), rng.uniform(0.08, 0.25))
        add_flow(rng, canvas, LAVA, textures.lava(rng, size), rng.uniform(0.08, 0.22))
        add_roads(rng, canvas, rng.integers(0, 2))
        add_fires(rng, canvas, rng.integers(0, 3))
        add_buildings(rng, canvas, rng.integers(0, 4), damaged_share=0.5)
    elif scene == "wildfire":
        add_roads(rng, canvas, rng.integers(1, 3))
        add_buildings(rng, canvas, rng.integers(2, 8), damaged_share=0.5)
        add_fires(rng, canvas, rng.integers(1, 4))
        add_vehicles(rng, canvas, rng.integers(0, 4), near=canvas.label == ROAD)
    elif scene == "mountain":
        add_flow(rng, canvas, AVALANCHE, textures.snow_runout(rng, size, flow_angle), rng.uniform(0.08, 0.25))
        add_flow(rng, canvas, DEBRIS, textures.rock_flow(rng, size), rng.uniform(0.06, 0.2))
        add_roads(rng, canvas, rng.integers(0, 2))
        add_cracks(rng, canvas, rng.integers(0, 2))
    elif scene == "earthquake":
        roads = add_roads(rng, canvas, rng.integers(1, 3))
        add_buildings(rng, canvas, rng.integers(4, 12), damaged_share=0.5)
        add_cracks(rng, canvas, rng.integers(1, 3))
        if rng.random() < 0.4:
            add_flow(rng, canvas, DEBRIS, textures.rock_flow(rng, size), rng.uniform(0.05, 0.12))
        add_vehicles(rng, canvas, rng.integers(0, 4), near=roads & (canvas.label == ROAD))
        add_people(rng, canvas, rng.integers(0, 8) * (rng.random() < 0.6))
    else:  # rural: the calm scenes that keep background the dominant class
        roads = add_roads(rng, canvas, rng.integers(1, 3))
        add_buildings(rng, canvas, rng.integers(1, 6), damaged_share=0.0)
        add_vehicles(rng, canvas, rng.integers(0, 5), near=roads)
        add_people(rng, canvas, rng.integers(0, 6) * (rng.random() < 0.5))


def add_fires(rng, canvas, count):
    h, w = canvas.size
    for _ in range(count):
        center = (rng.uniform(0.15, 0.85) * h, rng.uniform(0.15, 0.85) * w)
        region = shapes.blob(rng, canvas.size, center, rng.uniform(20, 55), wobble=0.5)
        # Smoke drifts off the fire; it is background, not fire, as in the real labels.
        smoke = shapes.blob(rng, canvas.size, (center[0] - 30, center[1] + 30), 60, wobble=0.6) & ~region
        canvas.image[smoke] = 0.5 * canvas.image[smoke] + 0.5 * 150
        canvas.paint(region, textures.flames(rng, canvas.size), FIRE)


def apply_camera(rng, image):
    """Per-image lighting, haze, blur and sensor noise, so colour alone is unreliable."""
    h, w = image.shape[:2]
    light = 0.8 + 0.4 * fractal_noise(rng, (h, w), 2, octaves=2)
    gain = rng.uniform(0.75, 1.25) * rng.uniform(0.88, 1.12, 3).astype(np.float32)
    image = image * light[..., None] * gain[None, None, :]
    haze = rng.uniform(0.0, 0.2)
    image = (1 - haze) * image + haze * np.array([170, 180, 190], np.float32)
    image = 255.0 * (np.clip(image, 0, 255) / 255.0) ** rng.uniform(0.8, 1.25)
    sigma = rng.uniform(0.0, 1.2)
    if sigma > 0.3:
        image = cv2.GaussianBlur(image, (0, 0), sigma)
    image = image + rng.normal(0, rng.uniform(2, 8), image.shape).astype(np.float32)
    return np.clip(image, 0, 255).round().astype(np.uint8)


def make_scene(rng, size=(512, 512), scene=None):
    """Render one scene.

    Args:
        rng: numpy Generator (the scene is a pure function of its state).
        size: (height, width) in pixels.
        scene: a name from SCENES, or None to draw one at random.

    Returns:
        (image, label): uint8 RGB (H, W, 3) and uint8 class ids (H, W).

    Example:
        >>> image, label = make_scene(np.random.default_rng(0))
        >>> image.shape, label.shape
        ((512, 512, 3), (512, 512))
    """
    scene = SCENES[rng.integers(len(SCENES))] if scene is None else scene
    canvas = Canvas(textures.terrain(rng, size).astype(np.float32))
    render_layers(rng, canvas, scene)
    return apply_camera(rng, canvas.image), canvas.label
