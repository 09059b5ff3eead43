"""The shapes renderer and sampler against SHAPES.md."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modiff_datasets.shapes import (
    CELLS,
    COLOURS,
    MASK_CLASSES,
    PALETTE,
    SHAPES,
    TEMPLATES,
    SceneSampler,
    ShapeObject,
    caption,
    check_image_size,
    parse,
    render,
    side,
    stencil,
)
from modiff_datasets.shapes.world import boxes_apart, centred_origin
from modiff_datasets.testing import centred_scenes, sampled_scenes

FAST = settings(max_examples=60, deadline=None, derandomize=True)


def test_palette_is_the_spec() -> None:
    assert PALETTE == {
        "red": (230, 40, 40),
        "green": (40, 200, 60),
        "blue": (50, 90, 240),
        "yellow": (240, 220, 40),
        "purple": (170, 60, 220),
        "cyan": (40, 210, 220),
    }
    assert CELLS == (
        "top left", "top", "top right", "left", "center", "right", "bottom left", "bottom", "bottom right",
    )  # fmt: skip
    assert MASK_CLASSES == {"circle": 1, "square": 2, "triangle": 3}


@pytest.mark.parametrize(("n", "small", "large"), [(32, 7, 10), (64, 14, 19), (128, 28, 38)])
def test_sizes_are_fractions_of_the_image_rounded(n: int, small: int, large: int) -> None:
    assert side("small", n) == small == round(0.22 * n)
    assert side("large", n) == large == round(0.30 * n)


@pytest.mark.parametrize("s", [5, 6, 7, 10, 14, 19, 28, 38])
def test_stencils(s: int) -> None:
    for shape in SHAPES:
        st_ = stencil(shape, s)
        ys, xs = np.nonzero(st_)
        assert (ys.min(), xs.min(), ys.max(), xs.max()) == (0, 0, s - 1, s - 1), "touches all four box sides"
        assert np.array_equal(st_, st_[:, ::-1]), "left-right symmetric"
    assert stencil("square", s).all()
    tri = stencil("triangle", s)
    widths = tri.sum(1)
    assert widths[-1] == s and widths[0] <= 2 and np.all(np.diff(widths) >= 0), "apex up, horizontal base"
    circle = stencil("circle", s)
    assert np.array_equal(circle, circle.T) and np.array_equal(circle, circle[::-1])
    assert 0.5 <= tri.mean() < 0.6 and 0.74 < circle.mean() < 0.9


def _object_pixels(obj: ShapeObject, n: int) -> tuple[slice, slice]:
    x0, y0 = obj.origin  # type: ignore[misc]
    s = side(obj.size, n)
    return slice(y0, y0 + s), slice(x0, x0 + s)


@FAST
@given(sampled_scenes())
def test_render_matches_spec(scene: tuple) -> None:
    n, objects = scene
    rgb, mask = render(objects, n)
    assert rgb.shape == (n, n, 3) and rgb.dtype == np.uint8 and mask.shape == (n, n) and mask.dtype == np.int64
    # mask agrees with pixels: painted exactly where the mask is non-zero, black elsewhere
    assert np.array_equal(mask > 0, rgb.any(axis=2))
    assert not rgb[mask == 0].any()
    covered = np.zeros((n, n), dtype=int)
    step = n / 3
    for obj in objects:
        ys, xs = _object_pixels(obj, n)
        region = mask[ys, xs] > 0
        covered[ys, xs] += region
        s = side(obj.size, n)
        assert s == round(0.22 * n if obj.size == "small" else 0.30 * n)
        # exact colour and class everywhere the object is painted, hard edges (no other colour)
        assert np.all(rgb[ys, xs][region] == PALETTE[obj.colour])
        assert np.all(mask[ys, xs][region] == MASK_CLASSES[obj.shape])
        # the painted bounding box is exactly s × s
        r, c = np.nonzero(region)
        assert (r.min(), c.min(), r.max(), c.max()) == (0, 0, s - 1, s - 1)
        # centre within its cell's centre ± 1/8 cell, in each axis
        row, col = divmod(obj.cell, 3)
        cx, cy = obj.origin[0] + s / 2, obj.origin[1] + s / 2
        assert abs(cx - (col + 0.5) * step) <= step / 8 + 1e-9
        assert abs(cy - (row + 0.5) * step) <= step / 8 + 1e-9
    assert covered.max() <= 1, "objects never overlap"
    assert int((mask > 0).sum()) == int(covered.sum())
    assert len({o.cell for o in objects}) == len(objects), "each object in its own cell"
    boxes = [(o.origin[0], o.origin[1], side(o.size, n)) for o in objects]
    assert all(boxes_apart(a, b) for i, a in enumerate(boxes) for b in boxes[i + 1 :])


@FAST
@given(centred_scenes())
def test_centred_placement_never_touches(scene: tuple) -> None:
    n, objects = scene
    rgb, mask = render(objects, n)  # raises if two boxes touch
    assert sorted(np.unique(mask).tolist()) == sorted({0, *(MASK_CLASSES[o.shape] for o in objects)})


def test_render_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="unknown colour 'orange'"):
        render([ShapeObject("orange", "circle", 0, "small")], 32)
    with pytest.raises(ValueError, match="unknown shape"):
        render([ShapeObject("red", "hexagon", 0, "small")], 32)
    with pytest.raises(ValueError, match="touches or overlaps"):
        render(
            [ShapeObject("red", "circle", 0, "large", (0, 0)), ShapeObject("red", "circle", 1, "large", (10, 0))],
            32,
        )
    with pytest.raises(ValueError, match="leaves the"):
        render([ShapeObject("red", "circle", 0, "large", (30, 0))], 32)
    with pytest.raises(ValueError, match="26"):
        render([ShapeObject("red", "circle", 0, "large")], 25)


def test_image_sizes() -> None:
    for n in (24, 26, 32, 48, 64, 96, 128, 256):
        assert check_image_size(n) == n
    for n in (8, 16, 23, 25):
        with pytest.raises(ValueError, match="image_size"):
            check_image_size(n)


def test_deterministic_from_seed_and_index() -> None:
    a = SceneSampler(seed=3, image_size=64, max_objects=2)
    b = SceneSampler(seed=3, image_size=64, max_objects=2)
    assert [a.scene(i) for i in range(50)] == [b.scene(i) for i in range(50)]
    assert [a.scene(i) for i in (40, 7, 3)] == [b.scene(i) for i in (40, 7, 3)], "order of access does not matter"
    c = SceneSampler(seed=4, image_size=64, max_objects=2)
    assert [a.scene(i) for i in range(20)] != [c.scene(i) for i in range(20)]


def test_captions_do_not_depend_on_image_size() -> None:
    samplers = [SceneSampler(seed=1, image_size=n, max_objects=2) for n in (32, 64, 128)]
    for i in range(100):
        caps = {s.scene(i).caption for s in samplers}
        assert len(caps) == 1 and caps == {samplers[0].caption(i)}


def test_holdout_pairs_are_never_rendered() -> None:
    holdout = ["yellow triangle", "Blue  Circle", "red square"]
    sampler = SceneSampler(seed=0, image_size=32, max_objects=2, holdout=holdout)
    assert sampler.holdout == ("yellow triangle", "blue circle", "red square")
    seen = Counter()
    for i in range(3000):
        for o in sampler.scene(i).objects:
            seen[o.pair] += 1
    assert not set(seen) & set(sampler.holdout)
    assert len(seen) == 18 - 3, "every other pair does appear"
    # and in pixels: no pixel has a held-out colour with a held-out shape's class
    for i in range(300):
        rgb, mask = render(sampler.scene(i).objects, 32)
        for pair in sampler.holdout:
            colour, shape = pair.split()
            assert not np.any(np.all(rgb == PALETTE[colour], axis=2) & (mask == MASK_CLASSES[shape]))


def test_object_counts() -> None:
    one = SceneSampler(max_objects=1)
    assert {len(one.scene(i).objects) for i in range(200)} == {1}
    two = SceneSampler(max_objects=2)
    counts = Counter(len(two.scene(i).objects) for i in range(1000))
    assert set(counts) == {1, 2} and 400 < counts[2] < 600
    only_two = SceneSampler(max_objects=2, object_weights=[0, 1])
    assert {len(only_two.scene(i).objects) for i in range(200)} == {2}
    with pytest.raises(ValueError, match="one weight per object count"):
        SceneSampler(max_objects=2, object_weights=[1.0])
    with pytest.raises(ValueError, match="max_objects"):
        SceneSampler(max_objects=10)


def test_unsized_large_draws_large_shapes_for_captions_without_a_size() -> None:
    """With ``unsized="large"`` a caption without a size word always shows large
    shapes (what such a prompt means in this world); scenes whose caption says
    the size are the same as with ``"any"``, drawn from the same numbers."""
    any_size = SceneSampler(seed=3, max_objects=2)
    large = SceneSampler(seed=3, max_objects=2, unsized="large")
    said = unsaid = 0
    for i in range(400):
        a, b = any_size.scene(i), large.scene(i)
        assert a.template == b.template
        if TEMPLATES[a.template].says_size:
            said += 1
            assert a == b
        else:
            unsaid += 1
            assert {o.size for o in b.objects} == {"large"}
            assert [(o.colour, o.shape, o.cell) for o in a.objects] == [(o.colour, o.shape, o.cell) for o in b.objects]
            assert b.caption == a.caption
    assert said > 100 and unsaid > 100
    # without the setting, captions that do not say the size show small shapes too
    assert any(
        o.size == "small"
        for i in range(400)
        if not TEMPLATES[any_size.scene(i).template].says_size
        for o in any_size.scene(i).objects
    )
    with pytest.raises(ValueError, match="unsized must be 'any', 'large' or 'said'"):
        SceneSampler(unsized="small")


def test_unsized_said_names_every_small_shape_and_draws_the_same_scenes() -> None:
    """With ``unsized="said"`` the scenes are those of ``"any"``; only captions
    change, so that a shape a caption leaves unsized is always a large one."""
    any_size = SceneSampler(seed=4, max_objects=2)
    said = SceneSampler(seed=4, max_objects=2, unsized="said")
    changed = 0
    for i in range(400):
        a, b = any_size.scene(i), said.scene(i)
        assert a.objects == b.objects and a.template == b.template
        assert said.caption(i) == b.caption
        read = parse(b.caption)
        assert [(o.colour, o.shape, o.cell) for o in read] == [(o.colour, o.shape, o.cell) for o in b.objects]
        for spoken, drawn in zip(read, b.objects):
            assert spoken.size in (drawn.size, None if drawn.size == "large" else drawn.size)
        if TEMPLATES[a.template].says_size or all(o.size == "large" for o in a.objects):
            assert b.caption == a.caption
        else:
            changed += 1
            assert b.caption != a.caption
    assert changed > 50


def test_positions_and_sizes_are_spread() -> None:
    sampler = SceneSampler(seed=0, image_size=64, max_objects=2)
    objects = [o for i in range(2000) for o in sampler.scene(i).objects]
    assert {o.cell for o in objects} == set(range(9))
    assert {o.size for o in objects} == {"small", "large"}
    assert {o.colour for o in objects} == set(COLOURS) and {o.shape for o in objects} == set(SHAPES)
    # jitter is used: not every object sits at the same offset in its cell
    assert len({(o.origin[0] - (o.cell % 3) * 64 / 3) for o in objects if o.size == "small"}) > 3


@FAST
@given(st.integers(0, 2**31), st.integers(0, 10**9), st.integers(1, 3))
def test_captions_name_every_object(seed: int, index: int, max_objects: int) -> None:
    scene = SceneSampler(seed=seed, image_size=32, max_objects=max_objects).scene(index)
    text = scene.caption
    for o in scene.objects:
        assert o.colour in text and o.shape in text and CELLS[o.cell] in text
    parsed = parse(text)
    assert [(p.colour, p.shape, p.cell) for p in parsed] == [(o.colour, o.shape, o.cell) for o in scene.objects]
    said = TEMPLATES[scene.template].says_size
    assert [p.size for p in parsed] == [o.size if said else None for o in scene.objects]


def test_caption_templates_vary() -> None:
    sampler = SceneSampler(seed=0, max_objects=2)
    scenes = [sampler.scene(i) for i in range(400)]
    assert {s.template for s in scenes} == set(range(len(TEMPLATES)))
    assert any(TEMPLATES[t].says_size for t in range(len(TEMPLATES)))
    assert not all(TEMPLATES[t].says_size for t in range(len(TEMPLATES)))
    # word order varies: the position comes first in some captions and last in others
    starts = {s.caption.split()[0] for s in scenes}
    assert len(starts) >= 5
    objs = [ShapeObject("red", "circle", 0, "large"), ShapeObject("blue", "square", 8, "small")]
    assert caption(objs[:1], 0) == "a large red circle in the top left"
    assert caption(objs[:1], 1) == "red circle, top left"
    assert caption(objs, 3) == "a red circle at the top left and a blue square at the bottom right"


def test_parse_reads_prompts_people_write() -> None:
    assert parse("A Big RED circle in the middle") == [ShapeObject("red", "circle", 4, "large")]
    assert parse("a green triangle") == [ShapeObject("green", "triangle", None, None)]
    assert [o.cell for o in parse("purple square top right; cyan circle, bottom left")] == [2, 6]
    for bad in ("a dog", "a red blue circle", "a red circle and a square", "", "red circle top left bottom"):
        with pytest.raises(ValueError, match="cannot read"):
            parse(bad)


def test_jitter_zero_draws_every_shape_at_its_cells_centre_with_the_same_captions() -> None:
    """``jitter=0`` keeps the scenes' objects and captions and moves each shape
    to :func:`centred_origin`; the default jitter moves some of them off it."""
    still = SceneSampler(seed=5, max_objects=2, jitter=0.0)
    moving = SceneSampler(seed=5, max_objects=2)
    off_centre = 0
    for i in range(200):
        a, b = still.scene(i), moving.scene(i)
        assert a.caption == b.caption
        assert [(o.colour, o.shape, o.cell, o.size) for o in a.objects] == [
            (o.colour, o.shape, o.cell, o.size) for o in b.objects
        ]
        for o in a.objects:
            assert tuple(o.origin) == centred_origin(o.cell, side(o.size, 32), 32)
        off_centre += sum(tuple(o.origin) != centred_origin(o.cell, side(o.size, 32), 32) for o in b.objects)
    assert off_centre > 100, "the default jitter places most shapes off the centred position"
    with pytest.raises(ValueError, match="jitter must be"):
        SceneSampler(jitter=0.6)
