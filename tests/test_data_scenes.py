import numpy as np
import pytest

from recipes.data.scenes import (
    BACKGROUND,
    COLOURS,
    RELATIONS,
    SHAPES,
    SIZES,
    Scene,
    SceneObject,
    attention_localization,
    make_scenes,
    scene_splits,
)

SCENES = make_scenes(300, image_size=64, seed=0)
PAIRS = [scene for scene in SCENES if len(scene.objects) == 2]


def _centre(box):
    left, top, right, bottom = box
    return (left + right) / 2, (top + bottom) / 2


def _parse(caption):
    """`(objects as (size, colour, shape), relation)` read back from a caption."""
    words = caption.split()
    first = tuple(words[1:4])
    if len(words) == 4:
        return [first], None
    relation = " ".join(words[4:-4])
    return [first, tuple(words[-3:])], relation


def test_make_scenes_is_deterministic_and_seeded():
    again = make_scenes(20, image_size=64, seed=0)
    other = make_scenes(20, image_size=64, seed=1)
    for scene, same in zip(SCENES[:20], again, strict=True):
        assert scene.caption == same.caption
        assert scene.objects == same.objects
        np.testing.assert_array_equal(scene.image, same.image)
    assert sum(np.array_equal(a.image, b.image) for a, b in zip(again, other, strict=True)) == 0


@pytest.mark.parametrize("image_size", [16, 32, 64, 96])
def test_scene_images_have_the_requested_size(image_size):
    for scene in make_scenes(30, image_size=image_size, seed=3):
        assert scene.image.shape == (image_size, image_size, 3)
        assert scene.image.dtype == np.uint8
        for scene_object in scene.objects:
            left, top, right, bottom = scene_object.box
            assert 0 <= left < right <= image_size and 0 <= top < bottom <= image_size


def test_captions_name_the_objects_and_word_objects_point_at_them():
    for scene in SCENES:
        mentioned, relation = _parse(scene.caption)
        assert mentioned == [(o.size, o.colour, o.shape) for o in scene.objects]
        assert relation is None or relation in RELATIONS
        words = scene.words
        # Exactly the size, colour and shape words are mapped, each to its object.
        assert len(scene.word_objects) == 3 * len(scene.objects)
        for position, object_index in scene.word_objects.items():
            assert words[position] in scene.objects[object_index].words
        unmapped = {w for i, w in enumerate(words) if i not in scene.word_objects}
        assert unmapped <= {"a", "above", "below", "left", "right", "of"}


def test_relation_word_matches_the_boxes():
    for scene in PAIRS:
        _, relation = _parse(scene.caption)
        first, second = (scene_object.box for scene_object in scene.objects)
        (first_x, first_y), (second_x, second_y) = _centre(first), _centre(second)
        # The boxes are apart on the relation's axis and the offset on the other axis
        # is at most half the distance: only one relation fits.
        if relation == "above":
            assert first[3] < second[1]
        elif relation == "below":
            assert second[3] < first[1]
        elif relation == "left of":
            assert first[2] < second[0]
        else:
            assert second[2] < first[0]
        vertical = relation in ("above", "below")
        major, minor = abs(first_y - second_y), abs(first_x - second_x)
        if not vertical:
            major, minor = minor, major
        assert 2 * minor <= major


def test_canonical_order_is_larger_first_then_top_or_left():
    for scene in PAIRS:
        first, second = scene.objects
        _, relation = _parse(scene.caption)
        if first.size != second.size:
            assert (first.size, second.size) == ("large", "small")
        else:
            assert relation in ("above", "left of")


def test_every_relation_and_attribute_occurs():
    relations = {_parse(scene.caption)[1] for scene in SCENES}
    assert relations == {None, *RELATIONS}
    objects = [scene_object for scene in SCENES for scene_object in scene.objects]
    assert {o.shape for o in objects} == set(SHAPES)
    assert {o.colour for o in objects} == set(COLOURS)
    assert {o.size for o in objects} == set(SIZES)


def test_pixels_are_the_objects_drawn_in_their_boxes():
    for scene in SCENES[:100]:
        drawn = np.any(scene.image != BACKGROUND, axis=-1)
        inside = np.zeros_like(drawn)
        for scene_object in scene.objects:
            left, top, right, bottom = scene_object.box
            inside[top:bottom, left:right] = True
            patch = scene.image[top:bottom, left:right]
            own_colour = np.all(patch == COLOURS[scene_object.colour], axis=-1)
            # The shape touches all four sides of its box.
            assert own_colour[0].any() and own_colour[-1].any()
            assert own_colour[:, 0].any() and own_colour[:, -1].any()
        assert not np.any(drawn & ~inside)


def test_scene_splits_are_deterministic_and_share_no_image():
    # Tiny images have few layouts: about 20 val and test scenes of these streams repeat
    # a training scene, unless they are replaced.
    splits = scene_splits(2000, 500, 500, image_size=16, seed=0)
    assert [len(splits[name]) for name in ("train", "val", "test")] == [2000, 500, 500]
    layouts = [
        {(s.caption, tuple(o.box for o in s.objects)) for s in splits[name]}
        for name in ("train", "val", "test")
    ]
    assert len(set.union(*layouts)) == sum(len(layout) for layout in layouts)
    assert len(layouts[1] | layouts[2]) == 1000
    again = scene_splits(2000, 500, 500, image_size=16, seed=0)
    assert [s.caption for s in again["test"]] == [s.caption for s in splits["test"]]
    # A split does not depend on the size of the others (its own random stream); only
    # repeats of earlier splits can differ, and there are none at 64 pixels.
    bigger = scene_splits(10, 5, 20, image_size=64, seed=0)["test"]
    smaller = scene_splits(5, 2, 20, image_size=64, seed=0)["test"]
    assert [s.caption for s in bigger] == [s.caption for s in smaller]


# A hand-made 64-pixel scene on an 8 x 8 grid (8-pixel cells): object 0 fills cells
# (0, 0)-(1, 1), object 1 the cells (5, 5)-(6, 6).
HAND_MADE = Scene(
    image=np.zeros((64, 64, 3), dtype=np.uint8),
    caption="a small red circle above a large blue square",
    objects=[
        SceneObject("circle", "red", "small", (0, 0, 16, 16)),
        SceneObject("square", "blue", "large", (40, 40, 56, 56)),
    ],
    word_objects={1: 0, 2: 0, 3: 0, 6: 1, 7: 1, 8: 1},
)
ON_FIRST, ON_SECOND, OUTSIDE, TOUCHING_SECOND = 9, 6 * 8 + 6, 3 * 8 + 3, 7 * 8 + 7


def _one_hot_attention(cells, steps=10):
    """Attention `(steps, 64)` peaking at `cells[t]` on step `t` (cell 0 elsewhere)."""
    attention = np.full((steps, 64), 0.1 / 63)
    for step in range(steps):
        attention[step, cells.get(step, 0)] = 0.9
    return attention


@pytest.mark.parametrize(
    "cells, generated, kinds, expected",
    [
        pytest.param(
            {1: 0, 2: 8, 3: ON_FIRST, 6: 45, 7: ON_SECOND, 8: 46},
            None,
            None,
            1.0,
            id="on-the-objects",
        ),
        pytest.param(
            {1: OUTSIDE, 2: OUTSIDE, 3: OUTSIDE, 6: 0, 7: 1, 8: OUTSIDE},
            None,
            None,
            0.0,
            id="elsewhere",
        ),
        # The cell right of and below box 1 only touches it (the box excludes x, y = 56).
        pytest.param(
            {1: 0, 2: 0, 3: 0, 6: TOUCHING_SECOND, 7: TOUCHING_SECOND, 8: TOUCHING_SECOND},
            None,
            None,
            0.5,
            id="touching-is-not-overlapping",
        ),
        # Shape words only: "circle" on object 0, "square" outside.
        pytest.param({3: ON_FIRST, 8: OUTSIDE}, None, ("shape",), 0.5, id="shape-words"),
        # Words that differ from the reference at their position ("green", the second
        # "small") are not counted: "small", "circle", "blue" and "square" are, two of
        # them on their object.
        pytest.param(
            {1: ON_FIRST, 3: OUTSIDE, 7: ON_SECOND, 8: OUTSIDE},
            "a small green circle above a small blue square",
            None,
            0.5,
            id="generated-differs",
        ),
        pytest.param({1: ON_FIRST, 2: OUTSIDE}, "a small red", None, 0.5, id="generated-shorter"),
    ],
)
def test_attention_localization_on_hand_made_attention(cells, generated, kinds, expected):
    generated_words = None if generated is None else [generated]
    score = attention_localization(
        [_one_hot_attention(cells)], [HAND_MADE], (8, 8), 64, generated_words, kinds
    )
    assert score == pytest.approx(expected)


def test_attention_localization_of_generated_scenes():
    grid_shape, cell_size = (8, 8), 8
    on_object, far_away = [], []
    for scene in SCENES[:50]:
        steps = len(scene.words)
        attention_on, attention_far = np.zeros((2, steps, 64))
        for position, object_index in scene.word_objects.items():
            x, y = _centre(scene.objects[object_index].box)
            attention_on[position, int(y // cell_size) * 8 + int(x // cell_size)] = 1.0
            # The cell whose centre is furthest from the object never overlaps it here.
            distances = [np.hypot(c % 8 * 8 + 4 - x, c // 8 * 8 + 4 - y) for c in range(64)]
            attention_far[position, int(np.argmax(distances))] = 1.0
        on_object.append(attention_on)
        far_away.append(attention_far)
    assert attention_localization(on_object, SCENES[:50], grid_shape, None) == 1.0
    assert attention_localization(far_away, SCENES[:50], grid_shape, 64) == 0.0


@pytest.mark.parametrize(
    "attention, generated, error",
    [
        (np.zeros((10, 63)), None, "must be"),  # regions do not match the grid
        (np.zeros((5, 64)), None, "steps"),  # fewer steps than caption words
    ],
)
def test_attention_localization_rejects_bad_input(attention, generated, error):
    with pytest.raises(ValueError, match=error):
        attention_localization([attention], [HAND_MADE], (8, 8), 64, generated)


def test_attention_localization_without_counted_words_is_nan():
    score = attention_localization([np.zeros((10, 64))], [HAND_MADE], (8, 8), 64, ["the end"])
    assert np.isnan(score)
