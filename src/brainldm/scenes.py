"""Procedurally drawn scenes with truthful captions, for the synthetic mini-NSD.

Each scene is a coloured background with one to three objects (shape, colour,
size, position). Pixels and captions carry related but different information:
the captions name shapes, colours, sizes and places but not exact positions,
and the pixels carry texture and exact geometry the captions never mention.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle", "star")
COLOURS = {
    "red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 70, 220),
    "yellow": (235, 215, 40), "white": (245, 245, 245), "black": (20, 20, 20),
    "purple": (140, 50, 170), "orange": (245, 140, 30),
}
BACKGROUNDS = {
    "grey": (128, 128, 128), "sky blue": (130, 190, 235), "dark green": (30, 90, 40),
    "sand": (215, 195, 150), "night": (25, 25, 60), "pink": (235, 170, 190),
}
SIZES = ("small", "large")
PLACES = ("left", "right", "top", "bottom", "centre")
_PLACE_XY = {"left": (0.27, 0.5), "right": (0.73, 0.5), "top": (0.5, 0.27), "bottom": (0.5, 0.73), "centre": (0.5, 0.5)}
_COUNT_WORDS = {1: "one", 2: "two", 3: "three"}


@dataclass(frozen=True)
class SceneObject:
    shape: str
    colour: str
    size: str
    place: str
    jitter: tuple[float, float]


@dataclass(frozen=True)
class Scene:
    background: str
    objects: tuple[SceneObject, ...]
    texture_seed: int


def random_scene(rng: np.random.Generator) -> Scene:
    """Draw a scene description: 1-3 objects at distinct places on a background."""
    n = int(rng.integers(1, 4))
    places = rng.choice(len(PLACES), size=n, replace=False)
    objects = tuple(
        SceneObject(
            shape=SHAPES[rng.integers(len(SHAPES))],
            colour=list(COLOURS)[rng.integers(len(COLOURS))],
            size=SIZES[rng.integers(len(SIZES))],
            place=PLACES[p],
            jitter=(float(rng.uniform(-0.06, 0.06)), float(rng.uniform(-0.06, 0.06))),
        )
        for p in places
    )
    return Scene(list(BACKGROUNDS)[rng.integers(len(BACKGROUNDS))], objects, int(rng.integers(2**31)))


def render(scene: Scene, size: int) -> np.ndarray:
    """Pixels of a scene: (size, size, 3) uint8."""
    rng = np.random.default_rng(scene.texture_seed)
    bg = np.array(BACKGROUNDS[scene.background], dtype=np.float32)
    # Background: base colour under an illumination the captions do not mention (a
    # colour cast and a strong smooth gradient, as lighting varies between photos),
    # plus fine texture noise.
    yy, xx = np.mgrid[0:size, 0:size] / size
    angle = rng.uniform(0, 2 * np.pi)
    gradient = (np.cos(angle) * xx + np.sin(angle) * yy - 0.5) * rng.uniform(60, 140)
    cast = rng.normal(0, 50, size=3)
    pixels = bg + cast + gradient[..., None] + rng.normal(0, 6, size=(size, size, 3))
    img = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for obj in scene.objects:
        cx, cy = _PLACE_XY[obj.place]
        cx, cy = (cx + obj.jitter[0]) * size, (cy + obj.jitter[1]) * size
        r = size * (0.09 if obj.size == "small" else 0.18)
        colour = COLOURS[obj.colour]
        if obj.shape == "circle":
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour)
        elif obj.shape == "square":
            draw.rectangle([cx - r, cy - r, cx + r, cy + r], fill=colour)
        elif obj.shape == "triangle":
            draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=colour)
        else:  # star
            pts = []
            for k in range(10):
                rad = r if k % 2 == 0 else r * 0.45
                a = -np.pi / 2 + k * np.pi / 5
                pts.append((cx + rad * np.cos(a), cy + rad * np.sin(a)))
            draw.polygon(pts, fill=colour)
    return np.asarray(img, dtype=np.uint8)


def captions(scene: Scene, rng: np.random.Generator, n: int = 5) -> list[str]:
    """``n`` different, truthful captions of a scene (COCO style)."""
    def phrase(o: SceneObject, article: str = "a") -> str:
        where = "in the centre" if o.place == "centre" else f"at the {o.place}" if o.place in ("top", "bottom") else f"on the {o.place}"
        return f"{article} {o.size} {o.colour} {o.shape} {where}"

    objs = list(scene.objects)
    count = _COUNT_WORDS[len(objs)]
    templates = [
        lambda: " and ".join(phrase(o) for o in objs) + f" on a {scene.background} background.",
        lambda: f"{count.capitalize()} shape{'s' if len(objs) > 1 else ''} on a {scene.background} background: " + ", ".join(phrase(o) for o in objs) + ".",
        lambda: f"A picture of " + " and ".join(f"a {o.colour} {o.shape}" for o in objs) + f" over {scene.background}.",
        lambda: f"There is " + " and ".join(phrase(o) for o in objs) + ".",
        lambda: f"A {scene.background} scene with {count} object{'s' if len(objs) > 1 else ''}, " + " and ".join(f"a {o.size} {o.shape}" for o in objs) + ".",
        lambda: "The " + " and the ".join(f"{o.colour} {o.shape}" for o in objs) + f" stand out against the {scene.background} background.",
    ]
    order = rng.permutation(len(templates))[:n]
    return [templates[i]() for i in order]


def attributes(scene: Scene) -> np.ndarray:
    """The semantic content the captions state: (n_attributes,) float32.

    Counts of each shape, each object colour, each size, each place, one-hot
    background and the number of objects.
    """
    vec = []
    for values, key in ((SHAPES, "shape"), (tuple(COLOURS), "colour"), (SIZES, "size"), (PLACES, "place")):
        vec += [sum(getattr(o, key) == v for o in scene.objects) for v in values]
    vec += [scene.background == b for b in BACKGROUNDS]
    vec.append(len(scene.objects))
    return np.asarray(vec, dtype=np.float32)


def attribute_names() -> list[str]:
    """Names of the entries of :func:`attributes`."""
    return (
        [f"shape:{s}" for s in SHAPES] + [f"colour:{c}" for c in COLOURS] + [f"size:{s}" for s in SIZES]
        + [f"place:{p}" for p in PLACES] + [f"background:{b}" for b in BACKGROUNDS] + ["n_objects"]
    )


def local_contrast(low: np.ndarray, mean_weight: float = 0.25) -> np.ndarray:
    """What the synthetic early visual cortex sees: each grid cell's deviation from the
    image mean plus ``mean_weight`` x the image mean, per channel, like V1's
    contrast-dominated, weakly luminance-tuned responses.

    low: (n, channels, grid, grid) from :func:`low_level_features`; same shape out.
    """
    mean = low.mean(axis=(2, 3), keepdims=True)
    return (low - mean + mean_weight * mean).astype(np.float32)


def low_level_features(images: np.ndarray, grid: int = 8) -> np.ndarray:
    """Local luminance and colour-opponent contrast on a grid.

    images: (n, H, W, 3) uint8. Returns (n, 3, grid, grid) float32: channel 0
    luminance, 1 red-green, 2 blue-yellow, each averaged over a grid cell, in [-1, 1].
    """
    x = images.astype(np.float32) / 127.5 - 1.0
    n, h, w, _ = x.shape
    cells = x[:, : h - h % grid, : w - w % grid].reshape(n, grid, h // grid, grid, w // grid, 3).mean(axis=(2, 4))
    r, g, b = cells[..., 0], cells[..., 1], cells[..., 2]
    lum = (r + g + b) / 3
    return np.stack([lum, r - g, b - (r + g) / 2], axis=1).astype(np.float32)
