"""Scenes of the synthetic benchmark: 1 to 4 flat shapes on a 2x2 grid, rendered to 32x32 RGB.

Each grid cell is exactly one 16x16 vision patch of the tiny model, so a patch embedding sees one whole object
and perception is learnable in minutes on a CPU. Every scene has exactly one large object; the others are small.

Perception is imperfect by construction, as in real images: colours are drawn around their prototype widely
enough that neighbours overlap (orange between red and yellow, purple near blue: an ideal observer names the
colour right about 89% of the time, `COLOUR_JITTER`), and an octagon is a circle with eight corners cut, which
at this resolution and with jittered sizes is often indistinguishable. So no method can saturate the tasks,
and a captioner that misreads an octagon names an object that is not there (a hallucination CHAIR counts).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

IMAGE_SIZE = 32
CELL = 16
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "cross", "octagon")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (50, 90, 230),
    "yellow": (230, 210, 40),
    "purple": (150, 60, 200),
    "orange": (235, 130, 30),
}
POSITIONS: tuple[str, ...] = ("top left", "top right", "bottom left", "bottom right")
BACKGROUND = (40, 40, 40)
RADIUS = {"large": (5.8, 7.0), "small": (3.8, 4.8)}  # uniform ranges: sizes overlap between shapes
JITTER = 1.0
COLOUR_JITTER = 60  # uniform per channel around the prototype: neighbouring colours overlap
MAX_OBJECTS = 4


@dataclass(frozen=True)
class SceneObject:
    """One shape: its category and attributes plus the exact geometry it is drawn with."""

    shape: str
    colour: str
    size: str
    cell: int
    cx: float
    cy: float
    rgb: tuple[int, int, int]
    radius: float

    @property
    def position(self) -> str:
        return POSITIONS[self.cell]


@dataclass(frozen=True)
class Scene:
    """The objects of one image; `objects[0]` is the large one, the rest follow in grid order."""

    objects: tuple[SceneObject, ...]

    @property
    def main(self) -> SceneObject:
        return self.objects[0]


def sample_scene(rng: np.random.Generator) -> Scene:
    """A random scene: 1-4 objects in distinct cells, one large, shapes and colours uniform, jittered."""
    n = int(rng.integers(1, MAX_OBJECTS + 1))
    cells = rng.permutation(MAX_OBJECTS)[:n]
    objects = []
    for i, cell in enumerate(cells):
        size = "large" if i == 0 else "small"
        colour = str(rng.choice(list(COLOURS)))
        rgb = np.clip(np.array(COLOURS[colour]) + rng.integers(-COLOUR_JITTER, COLOUR_JITTER + 1, size=3), 0, 255)
        objects.append(
            SceneObject(
                shape=str(rng.choice(SHAPES)),
                colour=colour,
                size=size,
                cell=int(cell),
                cx=float((cell % 2 + 0.5) * CELL + rng.uniform(-JITTER, JITTER)),
                cy=float((cell // 2 + 0.5) * CELL + rng.uniform(-JITTER, JITTER)),
                rgb=(int(rgb[0]), int(rgb[1]), int(rgb[2])),
                radius=float(rng.uniform(*RADIUS[size])),
            )
        )
    objects[1:] = sorted(objects[1:], key=lambda o: o.cell)
    return Scene(tuple(objects))


_YS, _XS = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE] + 0.5


def object_mask(obj: SceneObject) -> np.ndarray:
    """Boolean (32, 32) mask of the pixels the object covers."""
    r = obj.radius
    dx, dy = _XS - obj.cx, _YS - obj.cy
    if obj.shape == "circle":
        return dx**2 + dy**2 <= r**2
    if obj.shape == "square":
        return np.maximum(abs(dx), abs(dy)) <= 0.8 * r
    if obj.shape == "triangle":
        return (dy >= -r) & (dy <= 0.8 * r) & (abs(dx) <= 0.6 * (dy + r))
    if obj.shape == "cross":
        arm = 0.35 * r
        return ((abs(dx) <= arm) & (abs(dy) <= r)) | ((abs(dy) <= arm) & (abs(dx) <= r))
    if obj.shape == "octagon":  # regular, circumradius r, sides facing the axes
        return (np.maximum(abs(dx), abs(dy)) <= 0.924 * r) & (abs(dx) + abs(dy) <= 1.307 * r)
    raise ValueError(f"Unknown shape {obj.shape!r}: expected one of {SHAPES}.")


def render(scene: Scene) -> np.ndarray:
    """The scene as a (32, 32, 3) uint8 RGB array."""
    image = np.empty((IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    image[:] = BACKGROUND
    for obj in scene.objects:
        image[object_mask(obj)] = obj.rgb
    return image


def bbox(obj: SceneObject) -> tuple[float, float, float, float]:
    """COCO [x, y, width, height] of the drawn pixels."""
    ys, xs = np.nonzero(object_mask(obj))
    return float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)
