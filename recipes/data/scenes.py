"""Generated scenes of coloured shapes with captions, for image captioning without a download.

Each scene is a plain dark image with one or two shapes (a circle, square, triangle or
cross) of a colour (red, green, blue, yellow, white) and a size (small or large), drawn
with Pillow, and a caption that names them and, for two, says where the first one is
relative to the second:

    a small red circle
    a large blue square above a small yellow cross
    a small green triangle right of a small white circle

The caption is fully determined by the image, so a good model can reach exact-match
accuracy close to 1:

- Two objects are always clearly separated along one axis (their boxes do not overlap
  on it) and their centres are at least twice as far apart along that axis as along
  the other, so exactly one of "above"/"below" or "left of"/"right of" applies.
- Canonical order: the **larger** object is mentioned first; between two objects of the
  same size, the **top** one (vertical relation) or the **left** one (horizontal
  relation) is. So all four relations occur ("below" and "right of" only when the
  larger object is lower or further right), and finding which object to name first
  needs a look at both.

`Scene.word_objects` says which object each size, colour and shape word of the caption
names, and `attention_localization` measures how often a captioning model's attention,
at the steps that produce those words, peaks on a grid cell that overlaps the object.
"""

import dataclasses
import math

import numpy as np
from PIL import Image, ImageDraw

from recipes.data import SPLITS

SHAPES = ("circle", "square", "triangle", "cross")
COLOURS = {
    "red": (230, 40, 40),
    "green": (40, 190, 60),
    "blue": (60, 110, 245),
    "yellow": (240, 220, 40),
    "white": (245, 245, 245),
}
# Side of an object as a fraction of the image side: a range, so sizes vary a little, with
# a wide gap between the two so "small" and "large" never look alike.
SIZES = {"small": (0.16, 0.21), "large": (0.31, 0.37)}
BACKGROUND = (20, 20, 20)
RELATIONS = ("above", "below", "left of", "right of")
ONE_OBJECT_FRACTION = 0.25
OBJECT_WORD_KINDS = ("size", "colour", "shape")
MIN_IMAGE_SIZE = 16
_WORD_KIND = {
    **{word: "size" for word in SIZES},
    **{word: "colour" for word in COLOURS},
    **{word: "shape" for word in SHAPES},
}
_MAX_PLACEMENT_ATTEMPTS = 1000


@dataclasses.dataclass(frozen=True)
class SceneObject:
    """One shape of a scene.

    Attributes:
        shape: One of `SHAPES`.
        colour: One of the keys of `COLOURS`.
        size: `"small"` or `"large"`.
        box: `(left, top, right, bottom)` in pixels; the shape covers the pixels with
            `left <= x < right` and `top <= y < bottom` (right and bottom excluded), and
            touches all four sides of its box.
    """

    shape: str
    colour: str
    size: str
    box: tuple

    @property
    def words(self):
        return [self.size, self.colour, self.shape]


@dataclasses.dataclass
class Scene:
    """A generated image and its caption.

    Attributes:
        image: uint8 array `(image_size, image_size, 3)`.
        caption: The caption, lowercase words separated by single spaces.
        objects: The `SceneObject`s in the order the caption mentions them.
        word_objects: `{word index: object index}` for the size, colour and shape words
            of the caption (indices into `caption.split()`); articles and relation
            words name no object and are not in it.
    """

    image: np.ndarray
    caption: str
    objects: list
    word_objects: dict

    @property
    def words(self):
        return self.caption.split()


def _draw(draw, scene_object):
    left, top, right, bottom = scene_object.box
    # Pillow's shape coordinates include the last pixel; the box excludes it.
    last_x, last_y = right - 1, bottom - 1
    fill = COLOURS[scene_object.colour]
    if scene_object.shape == "circle":
        draw.ellipse([left, top, last_x, last_y], fill=fill)
    elif scene_object.shape == "square":
        draw.rectangle([left, top, last_x, last_y], fill=fill)
    elif scene_object.shape == "triangle":
        draw.polygon([(left, last_y), (last_x, last_y), ((left + last_x) / 2, top)], fill=fill)
    elif scene_object.shape == "cross":
        side = right - left
        thickness = max(1, round(side / 3))
        start = (side - thickness) // 2
        draw.rectangle([left, top + start, last_x, top + start + thickness - 1], fill=fill)
        draw.rectangle([left + start, top, left + start + thickness - 1, last_y], fill=fill)
    else:
        raise ValueError(f"Unknown shape {scene_object.shape!r}")


def render(objects, image_size):
    """Draws `objects` on a plain background; returns a uint8 array `(size, size, 3)`."""
    image = Image.new("RGB", (image_size, image_size), BACKGROUND)
    draw = ImageDraw.Draw(image)
    for scene_object in objects:
        _draw(draw, scene_object)
    return np.asarray(image, dtype=np.uint8)


def _centre(box):
    left, top, right, bottom = box
    return np.array([(left + right) / 2, (top + bottom) / 2])


def relation(first_box, second_box):
    """Where the first box is relative to the second: one of `RELATIONS`.

    The relation is along the axis on which the centres are further apart; the scenes
    make that axis unambiguous.
    """
    delta_x, delta_y = _centre(first_box) - _centre(second_box)
    if abs(delta_y) > abs(delta_x):
        return "above" if delta_y < 0 else "below"
    return "left of" if delta_x < 0 else "right of"


def _random_attributes(rng, image_size):
    shape = SHAPES[rng.integers(len(SHAPES))]
    colour = list(COLOURS)[rng.integers(len(COLOURS))]
    size = list(SIZES)[rng.integers(len(SIZES))]
    low, high = SIZES[size]
    side = max(3, round(rng.uniform(low, high) * image_size))
    return shape, colour, size, side


def _place_pair(rng, sides, major_axis, image_size):
    """Top-left corners of two objects separated along `major_axis` (0: x, 1: y).

    The first object comes first along the axis (it is above or left of the second);
    the boxes are at least `gap` pixels apart on that axis, and the centres' offset on
    the other axis is at most half their distance on it.
    """
    margin = max(1, round(0.03 * image_size))
    gap = max(1, round(0.05 * image_size))
    minor_axis = 1 - major_axis
    free = image_size - 2 * margin - gap - sides[0] - sides[1]
    if free < 0:
        raise ValueError(f"image_size={image_size} is too small for two objects")
    # Two sorted offsets share the free space before, between and after the objects.
    before, after_first = np.sort(rng.integers(0, free + 1, size=2))
    corners = np.zeros((2, 2), dtype=int)
    corners[0, major_axis] = margin + before
    corners[1, major_axis] = margin + sides[0] + gap + after_first
    major_distance = corners[1, major_axis] + sides[1] / 2 - corners[0, major_axis] - sides[0] / 2
    for _ in range(_MAX_PLACEMENT_ATTEMPTS):
        minor = [rng.integers(margin, image_size - margin - side + 1) for side in sides]
        minor_distance = abs(minor[1] + sides[1] / 2 - minor[0] - sides[0] / 2)
        if 2 * minor_distance <= major_distance:
            corners[:, minor_axis] = minor
            return corners
    raise RuntimeError("Could not place two objects; this is a bug")


def _box(corner, side):
    left, top = (int(value) for value in corner)
    return (left, top, left + side, top + side)


def _describe(objects):
    """The caption and word-to-object map of objects given in mention order."""
    words, word_objects = [], {}
    for index, scene_object in enumerate(objects):
        if index == 1:
            words += relation(objects[0].box, objects[1].box).split()
        words.append("a")
        for word in scene_object.words:
            word_objects[len(words)] = index
            words.append(word)
    return " ".join(words), word_objects


def _make_scene(rng, image_size):
    if rng.random() < ONE_OBJECT_FRACTION:
        shape, colour, size, side = _random_attributes(rng, image_size)
        margin = max(1, round(0.03 * image_size))
        corner = rng.integers(margin, image_size - margin - side + 1, size=2)
        objects = [SceneObject(shape, colour, size, _box(corner, side))]
    else:
        attributes = [_random_attributes(rng, image_size) for _ in range(2)]
        major_axis = int(rng.integers(2))
        corners = _place_pair(rng, [side for *_, side in attributes], major_axis, image_size)
        objects = [
            SceneObject(shape, colour, size, _box(corner, side))
            for (shape, colour, size, side), corner in zip(attributes, corners, strict=True)
        ]
        # `objects` is in top/left-first order: the canonical order is the larger object
        # first, and a stable sort keeps top/left first between equal sizes.
        objects.sort(key=lambda scene_object: scene_object.size != "large")
    caption, word_objects = _describe(objects)
    return Scene(render(objects, image_size), caption, objects, word_objects)


def _check_image_size(image_size):
    if int(image_size) < MIN_IMAGE_SIZE:
        raise ValueError(f"image_size must be at least {MIN_IMAGE_SIZE}, got {image_size}")
    return int(image_size)


def make_scenes(count, image_size=64, seed=0):
    """Generates `count` scenes of `image_size` x `image_size` pixels.

    The same `(count, image_size, seed)` always gives the same scenes, and the first
    `k` scenes of a longer run are those of `make_scenes(k, ...)`.

    Returns:
        A list of `Scene`.
    """
    image_size = _check_image_size(image_size)
    rng = np.random.default_rng(seed)
    return [_make_scene(rng, image_size) for _ in range(count)]


def _layout(scene):
    return scene.caption, tuple(scene_object.box for scene_object in scene.objects)


def scene_splits(num_train, num_val, num_test, image_size=64, seed=0):
    """Generates train, validation and test scenes from separate random streams.

    Each split draws from its own stream (seeded by `(seed, split index)`), so a split
    does not change when the size of another does. A scene identical to an earlier one
    (same caption and the same boxes, hence the same image) is dropped and replaced by
    a new one, so no test or validation image is also a training image.

    Returns:
        `{"train": [...], "val": [...], "test": [...]}`, lists of `Scene`.
    """
    image_size = _check_image_size(image_size)
    seen = set()
    splits = {}
    for split_index, (split, count) in enumerate(
        zip(SPLITS, (num_train, num_val, num_test), strict=True)
    ):
        rng = np.random.default_rng([seed, split_index])
        scenes = []
        while len(scenes) < count:
            scene = _make_scene(rng, image_size)
            layout = _layout(scene)
            if layout not in seen:
                seen.add(layout)
                scenes.append(scene)
        splits[split] = scenes
    return splits


def _cell_overlaps(cell, grid_shape, image_shape, box):
    """Whether grid cell `cell` (row-major index) intersects `box` (not just touches it)."""
    rows, columns = grid_shape
    height, width = image_shape
    row, column = divmod(int(cell), columns)
    cell_left, cell_right = column * width / columns, (column + 1) * width / columns
    cell_top, cell_bottom = row * height / rows, (row + 1) * height / rows
    left, top, right, bottom = box
    return cell_left < right and left < cell_right and cell_top < bottom and top < cell_bottom


def attention_localization(
    attention, scenes, grid_shape, image_size=None, generated_words=None, kinds=None
):
    """The share of object words whose attention peaks on a cell that overlaps the object.

    For each counted word, the grid cell with the largest attention weight at the step
    that produced the word is compared with the box of the object the word names; the
    cell rectangle (the image divided evenly into `grid_shape` cells) must intersect the
    box. Step `t` of `attention` is the step that produced word `t` of the caption, as
    in `Seq2Seq.generate`'s `attention[:, beam]` (the start token is not a step).

    A word is counted when it is a size, colour or shape word of the reference caption
    (see `Scene.word_objects`; `kinds` narrows this, e.g. `("shape",)`) and the generated
    caption has the same word at the same position. Words of a generated caption that
    differ from the reference there are not counted: the object they would name is not
    known. So this measures where the model looks when it names an object right, and is
    read next to the caption accuracy.

    Args:
        attention: For each scene, the weights of each generated step, `(steps, H * W)`
            in row-major region order (an array `(scenes, steps, H * W)` or a list).
        scenes: The `Scene`s the captions were generated for.
        grid_shape: `(H, W)` of the encoder's grid (`ImageGridEncoder.grid_shape`).
        image_size: Side of the (square) images, or `(height, width)`; None reads it
            from the scenes' images.
        generated_words: For each scene, the generated caption (a string or a list of
            words); None means the reference captions (e.g. attention computed with
            teacher forcing).
        kinds: Which object words count, a subset of `OBJECT_WORD_KINDS` (default all).

    Returns:
        The share in [0, 1] as a float, or NaN when no word is counted.
    """
    kinds = set(OBJECT_WORD_KINDS if kinds is None else kinds)
    unknown = kinds - set(OBJECT_WORD_KINDS)
    if unknown:
        raise ValueError(f"Unknown word kinds {sorted(unknown)}; expected {OBJECT_WORD_KINDS}")
    if len(attention) != len(scenes):
        raise ValueError(f"Got attention for {len(attention)} scenes, but {len(scenes)} scenes")
    if generated_words is None:
        generated_words = [scene.words for scene in scenes]
    hits = counted = 0
    for weights, scene, words in zip(attention, scenes, generated_words, strict=True):
        weights = np.asarray(weights)
        words = words.split() if isinstance(words, str) else list(words)
        if weights.ndim != 2 or weights.shape[1] != math.prod(grid_shape):
            raise ValueError(
                f"Attention of a scene must be (steps, {math.prod(grid_shape)}) for grid "
                f"{tuple(grid_shape)}; got {weights.shape}"
            )
        if image_size is None:
            image_shape = scene.image.shape[:2]
        elif np.ndim(image_size) == 0:
            image_shape = (image_size, image_size)
        else:
            image_shape = tuple(image_size)
        reference = scene.words
        for position, object_index in scene.word_objects.items():
            word = reference[position]
            if _WORD_KIND[word] not in kinds:
                continue
            if position >= len(words) or words[position] != word:
                continue
            if position >= len(weights):
                raise ValueError(f"Attention has {len(weights)} steps; word {position} has none")
            counted += 1
            cell = np.argmax(weights[position])
            box = scene.objects[object_index].box
            hits += _cell_overlaps(cell, grid_shape, image_shape, box)
    return hits / counted if counted else float("nan")
