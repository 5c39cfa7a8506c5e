"""Procedural street scenes in the exact Cityscapes layout (leftImg8bit + gtFine labelIds).

No dataset can be downloaded here, so tests, training demos and the default benchmark use these.
Each frame is drawn from its own RNG seeded by (seed, split, index): deterministic per seed and
independent of how many frames are written. Objects are painted far-to-near with perspective scale,
then texture, lighting and blur are applied to the image only (labels stay exact).
"""
import os
from dataclasses import dataclass

import numpy as np

from .data import import_cv2, write_png
from .errors import SanetError

# Cityscapes labelIds of the classes drawn.
ROAD, SIDEWALK, BUILDING, WALL, FENCE, POLE, LIGHT, SIGN = 7, 8, 11, 12, 13, 17, 19, 20
VEGETATION, TERRAIN, SKY, PERSON, RIDER, CAR, TRUCK, BUS, BICYCLE = 21, 22, 23, 24, 25, 26, 27, 28, 33
SPLIT_IDS = {"train": 0, "val": 1, "test": 2}


@dataclass
class SynthConfig:
    height: int = 256
    width: int = 512
    train: int = 200
    val: int = 50
    seed: int = 0
    city: str = "synthville"


class Canvas:
    """Paints an RGB image and its labelId map together, so a shape's pixels and label always agree."""

    def __init__(self, height, width):
        self.image = np.zeros((height, width, 3), np.uint8)
        self.label = np.zeros((height, width), np.uint8)
        self.cv2 = import_cv2()

    def poly(self, points, label_id, colour):
        pts = [np.round(np.asarray(points, np.float64)).astype(np.int32)]
        self.cv2.fillPoly(self.image, pts, tuple(int(c) for c in colour))
        self.cv2.fillPoly(self.label, pts, int(label_id))

    def rect(self, x0, y0, x1, y1, label_id, colour):
        self.poly([(x0, y0), (x1, y0), (x1, y1), (x0, y1)], label_id, colour)

    def ellipse(self, cx, cy, rx, ry, label_id, colour):
        centre, axes = (int(round(cx)), int(round(cy))), (max(1, int(round(rx))), max(1, int(round(ry))))
        self.cv2.ellipse(self.image, centre, axes, 0, 0, 360, tuple(int(c) for c in colour), -1)
        self.cv2.ellipse(self.label, centre, axes, 0, 0, 360, int(label_id), -1)


def _jitter(rng, colour, amount=25):
    return np.clip(np.asarray(colour) + rng.integers(-amount, amount + 1, 3), 0, 255)


def draw_scene(height, width, rng):
    """One street scene: returns (image uint8 RGB (H, W, 3), labelIds uint8 (H, W))."""
    canvas = Canvas(height, width)
    horizon = int(height * rng.uniform(0.35, 0.5))
    vanish_x = width * rng.uniform(0.35, 0.65)
    # Sky: vertical gradient.
    top, bottom = _jitter(rng, (90, 140, 215)), _jitter(rng, (190, 210, 235))
    ramp = np.linspace(0, 1, horizon + 1)[:, None, None]
    canvas.image[: horizon + 1] = (top * (1 - ramp) + bottom * ramp).astype(np.uint8)
    canvas.label[: horizon + 1] = SKY
    # Ground: terrain everywhere below the horizon, then sidewalks and road in perspective.
    canvas.rect(0, horizon, width, height, TERRAIN, _jitter(rng, (150, 190, 110)))
    road_half = width * rng.uniform(0.45, 0.7)
    walk_half = road_half + width * rng.uniform(0.2, 0.4)
    canvas.poly([(vanish_x - 4, horizon), (vanish_x + 4, horizon), (vanish_x + walk_half, height),
                 (vanish_x - walk_half, height)], SIDEWALK, _jitter(rng, (200, 170, 190)))
    canvas.poly([(vanish_x - 2, horizon), (vanish_x + 2, horizon), (vanish_x + road_half, height),
                 (vanish_x - road_half, height)], ROAD, _jitter(rng, (110, 100, 115), 15))

    def depth_scale(y):  # object size grows linearly below the horizon
        return max(0.02, (y - horizon) / float(height - horizon))

    def ground_x(y, offset):  # x of a point on the road plane at lateral offset (-1 left edge, 1 right edge)
        return vanish_x + offset * road_half * depth_scale(y)

    # Lane markings: dashed lines converging at the vanishing point (road label, white paint).
    for lane in (-0.33, 0.33):
        y = float(horizon + 4)
        while y < height:
            step = 6 + 30 * depth_scale(y)
            y2 = min(height, y + step * 0.6)
            half0, half1 = 0.5 + 2 * depth_scale(y), 0.5 + 2 * depth_scale(y2)
            canvas.poly([(ground_x(y, lane) - half0, y), (ground_x(y, lane) + half0, y),
                         (ground_x(y2, lane) + half1, y2), (ground_x(y2, lane) - half1, y2)], ROAD, (235, 235, 235))
            y += step

    # Buildings and vegetation behind the sidewalks, on both sides of the street.
    for side in (-1, 1):
        x = vanish_x + side * width * 0.02
        while 0 <= x <= width:
            span = width * rng.uniform(0.08, 0.25)
            x_next = x + side * span
            roof = horizon - height * rng.uniform(0.1, 0.35)
            base = horizon + 2
            if rng.random() < 0.7:
                colour = _jitter(rng, (120, 110, 105), 40)
                canvas.poly([(x, roof), (x_next, roof), (x_next, base), (x, base)], BUILDING, colour)
                for wy in np.arange(roof + 6, base - 6, 10):  # windows: texture with the building label
                    for wx in np.arange(min(x, x_next) + 4, max(x, x_next) - 6, 9):
                        canvas.rect(wx, wy, wx + 4, wy + 5, BUILDING, colour * 0.5)
            else:
                for _ in range(rng.integers(3, 7)):
                    cx = x + side * span * rng.random()
                    canvas.ellipse(cx, roof + rng.uniform(0, base - roof), span * rng.uniform(0.2, 0.5),
                                   (base - roof) * rng.uniform(0.3, 0.6), VEGETATION, _jitter(rng, (70, 120, 40), 30))
            x = x_next
        if rng.random() < 0.6:  # a wall or fence along the sidewalk edge
            kind, colour = (WALL, (150, 140, 130)) if rng.random() < 0.5 else (FENCE, (160, 130, 110))
            far_x, near_x = vanish_x + side * 6, vanish_x + side * walk_half
            canvas.poly([(far_x, horizon - 2), (near_x, height - height * 0.15), (near_x, height),
                         (far_x, horizon + 1)], kind, _jitter(rng, colour, 15))

    # Street furniture and agents, painted far to near.
    objects = []
    for _ in range(rng.integers(2, 6)):
        objects.append(("pole", horizon + (height - horizon) * rng.uniform(0.1, 0.9), rng.choice((-1, 1))))
    for _ in range(rng.integers(1, 5)):
        objects.append(("vehicle", horizon + (height - horizon) * rng.uniform(0.05, 0.7), rng.uniform(-0.8, 0.8)))
    for _ in range(rng.integers(1, 5)):
        objects.append(("person", horizon + (height - horizon) * rng.uniform(0.1, 0.95), rng.choice((-1, 1))))
    for kind, y, where in sorted(objects, key=lambda item: item[1]):
        scale = depth_scale(y)
        if kind == "pole":
            x = ground_x(y, where * rng.uniform(1.05, 1.3))
            top = y - height * 0.9 * scale - 8
            half = 0.5 + 2 * scale
            canvas.rect(x - half, top, x + half, y, POLE, _jitter(rng, (110, 110, 110), 10))
            size = 3 + 14 * scale
            if rng.random() < 0.5:
                canvas.rect(x - size * 0.4, top, x + size * 0.4, top + size * 1.1, LIGHT, (30, 30, 30))
                canvas.ellipse(x, top + size * 0.3, size * 0.2, size * 0.2, LIGHT, ((230, 40, 30), (60, 220, 80))[rng.integers(2)])
            else:
                colour = ((230, 210, 20), (30, 80, 200), (220, 30, 30))[rng.integers(3)]
                canvas.rect(x - size * 0.6, top, x + size * 0.6, top + size, SIGN, colour)
        elif kind == "vehicle":
            x = ground_x(y, where)
            label_id, w_frac, h_frac = ((CAR, 0.55, 0.38), (TRUCK, 0.75, 0.7), (BUS, 0.9, 0.8))[rng.choice(3, p=(0.7, 0.15, 0.15))]
            w, h = road_half * w_frac * scale, road_half * h_frac * scale
            colour = _jitter(rng, rng.integers(30, 225, 3), 10)
            canvas.rect(x - w / 2, y - h * 0.6, x + w / 2, y - h * 0.1, label_id, colour)
            canvas.poly([(x - w * 0.35, y - h * 0.6), (x - w * 0.25, y - h), (x + w * 0.25, y - h), (x + w * 0.35, y - h * 0.6)],
                        label_id, colour * 0.8)
            for wheel in (-0.32, 0.32):
                canvas.ellipse(x + wheel * w, y - h * 0.1, w * 0.1, h * 0.12, label_id, (20, 20, 20))
        else:
            x = ground_x(y, where * rng.uniform(1.0, 1.3))
            h = height * 0.75 * scale + 6
            riding = rng.random() < 0.3
            body = _jitter(rng, rng.integers(20, 235, 3), 5)
            label_id = RIDER if riding else PERSON
            if riding:
                for wheel in (-0.25, 0.25):
                    canvas.ellipse(x + wheel * h, y - h * 0.12, h * 0.12, h * 0.12, BICYCLE, (40, 40, 40))
                canvas.rect(x - h * 0.25, y - h * 0.2, x + h * 0.25, y - h * 0.15, BICYCLE, (160, 20, 20))
            canvas.rect(x - h * 0.09, y - h * 0.45, x + h * 0.09, y - (h * 0.15 if riding else 0), label_id, body * 0.6)
            canvas.rect(x - h * 0.12, y - h * 0.82, x + h * 0.12, y - h * 0.42, label_id, body)
            canvas.ellipse(x, y - h * 0.9, h * 0.08, h * 0.09, label_id, _jitter(rng, (220, 180, 150), 30))
    return _photometric(canvas.image, rng), canvas.label


def _photometric(image, rng):
    """Texture noise, a lighting gradient and mild blur: the image only, never the label."""
    cv2 = import_cv2()
    height, width = image.shape[:2]
    noise = cv2.resize(rng.normal(0, 12, (height // 4 + 1, width // 4 + 1, 3)).astype(np.float32), (width, height))
    light = np.linspace(rng.uniform(0.7, 1.1), rng.uniform(0.9, 1.3), width, dtype=np.float32)[None, :, None]
    out = (image.astype(np.float32) + noise + rng.normal(0, 4, image.shape)) * light * rng.uniform(0.8, 1.15)
    out = np.clip(out, 0, 255).astype(np.uint8)
    if rng.random() < 0.5:
        out = cv2.GaussianBlur(out, (3, 3), 0)
    return out


def frame_rng(seed, split, index):
    return np.random.default_rng([seed, SPLIT_IDS[split], index])


def generate_dataset(root, config: SynthConfig, progress=None):
    """Write ``config.train`` + ``config.val`` frames under ``root`` in the Cityscapes layout."""
    if config.height % 8 or config.width % 8 or config.height < 64 or config.width < 64:
        raise SanetError("--size {} {}: height and width must be multiples of 8 and at least 64".format(
            config.height, config.width))
    if config.train < 0 or config.val < 0 or config.train + config.val == 0:
        raise SanetError("--train {} --val {}: frame counts must be 0 or more, and at least one frame in all".format(
            config.train, config.val))
    if config.seed < 0:
        raise SanetError("--seed {}: use a seed of 0 or more".format(config.seed))
    written = 0
    for split, count in (("train", config.train), ("val", config.val)):
        image_dir = os.path.join(root, "leftImg8bit", split, config.city)
        label_dir = os.path.join(root, "gtFine", split, config.city)
        for index in range(count):
            image, label = draw_scene(config.height, config.width, frame_rng(config.seed, split, index))
            stem = "{}_{:06d}_000019".format(config.city, index)
            write_png(os.path.join(image_dir, stem + "_leftImg8bit.png"), image)
            write_png(os.path.join(label_dir, stem + "_gtFine_labelIds.png"), label)
            written += 1
            if progress:
                progress(written)
    return written
