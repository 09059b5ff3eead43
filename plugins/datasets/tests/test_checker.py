"""The rule-based image checker: connected components, and scoring renders."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modiff_datasets.evaluation import Thresholds, check_image, classify_shape, detect, label_components, nearest_colour
from modiff_datasets.shapes import CELLS, PALETTE, SIZES, ShapeObject, render, side
from modiff_datasets.testing import centred_scenes, next_colour, next_shape, sampled_scenes

FAST = settings(max_examples=60, deadline=None, derandomize=True)


def _flood_fill_reference(fg: np.ndarray) -> tuple[np.ndarray, int]:
    """Plain stack flood fill, 4-connected, numbered in row-major order."""
    h, w = fg.shape
    lab = -np.ones((h, w), dtype=np.int64)
    n = 0
    for y in range(h):
        for x in range(w):
            if fg[y, x] and lab[y, x] < 0:
                stack = [(y, x)]
                lab[y, x] = n
                while stack:
                    a, b = stack.pop()
                    for c, d in ((a + 1, b), (a - 1, b), (a, b + 1), (a, b - 1)):
                        if 0 <= c < h and 0 <= d < w and fg[c, d] and lab[c, d] < 0:
                            lab[c, d] = n
                            stack.append((c, d))
                n += 1
    return lab, n


@settings(max_examples=80, deadline=None, derandomize=True)
@given(st.integers(1, 24), st.integers(1, 24), st.floats(0.0, 1.0), st.integers(0, 2**32 - 1))
def test_components_match_flood_fill(h: int, w: int, density: float, seed: int) -> None:
    fg = np.random.default_rng(seed).random((h, w)) < density
    labels, count = label_components(fg)
    ref, ref_count = _flood_fill_reference(fg)
    assert count == ref_count and np.array_equal(labels, ref)


def test_components_long_snake() -> None:
    fg = np.zeros((64, 64), dtype=bool)
    fg[::2] = True
    fg[1::4, -1] = True
    fg[3::4, 0] = True
    labels, count = label_components(fg)
    assert count == 1 and labels[fg].max() == 0 and labels[~fg].max() == -1
    diag = np.eye(8, dtype=bool)  # diagonal neighbours are not 4-connected
    assert label_components(diag)[1] == 8


def test_colour_and_shape_rules() -> None:
    for name, rgb in PALETTE.items():
        assert nearest_colour(rgb) == name
        assert nearest_colour(np.array(rgb) * 0.8 + 10) == name
    t = Thresholds()
    assert [classify_shape(r, 0.0, t) for r in (0.5, 0.56, 0.64, 0.66, 0.79, 0.89, 0.9, 1.0)] == [
        "triangle", "triangle", "triangle", "circle", "circle", "circle", "square", "square",
    ]  # fmt: skip
    # a blurred triangle is fuller, but its mass still sits low
    assert classify_shape(0.72, 0.1, t) == "triangle" and classify_shape(0.72, 0.01, t) == "circle"
    assert classify_shape(0.95, 0.1, t) == "square"
    assert t.min_area(32) == 8 and t.min_area(64) == 30 and t.min_area(128) == 118


@pytest.mark.parametrize("n", [32, 64, 128])
def test_every_single_object_reads_back_exactly(n: int) -> None:
    """Every shape × cell × size at the centred position and at the four
    extreme jitter corners (colours rotating), and every colour × shape."""
    from modiff_datasets.shapes.world import candidate_origins

    colours = list(PALETTE)
    k = 0
    for size in SIZES:
        s = side(size, n)
        for cell in range(9):
            xs, ys = candidate_origins(cell, s, n)
            for origin in {(xs[0], ys[0]), (xs[-1], ys[-1]), (xs[0], ys[-1]), (xs[-1], ys[0]), None}:
                for shape in ("circle", "square", "triangle"):
                    obj = ShapeObject(colours[k % len(colours)], shape, cell, size, origin)  # colours rotate
                    k += 1
                    rgb, _ = render([obj], n)
                    r = check_image(rgb, [obj])
                    assert r.correct, (obj, r)
    for colour in colours:  # and every colour with every shape
        for shape in ("circle", "square", "triangle"):
            obj = ShapeObject(colour, shape, 4, "small")
            assert check_image(render([obj], n)[0], [obj]).correct


@FAST
@given(sampled_scenes())
def test_ground_truth_scores_one(scene: tuple) -> None:
    n, objects = scene
    rgb, _ = render(objects, n)
    r = check_image(rgb, objects)
    assert r.correct and r.colour and r.shape and r.position and r.count
    assert r.objects_correct == len(objects)
    found = sorted((d.colour, d.shape, d.cell) for d in r.detections)
    assert found == sorted((o.colour, o.shape, o.cell) for o in objects)


@FAST
@given(centred_scenes(max_objects=9))
def test_ground_truth_scores_one_crowded(scene: tuple) -> None:
    n, objects = scene
    rgb, _ = render(objects, n)
    assert check_image(rgb, objects).correct


def _free_cell(objects: tuple) -> int | None:
    used = {o.cell for o in objects}
    return next((c for c in range(9) if c not in used), None)


@FAST
@given(sampled_scenes(max_objects=2), st.integers(0, 10**6))
def test_wrong_images_score_zero(scene: tuple, pick: int) -> None:
    n, objects = scene
    k = pick % len(objects)
    target = objects[k]

    def with_changed(**change: object) -> list[ShapeObject]:
        return [replace(o, **change) if i == k else o for i, o in enumerate(objects)]

    # another colour
    rgb, _ = render(with_changed(colour=next_colour(target.colour)), n)
    r = check_image(rgb, objects)
    assert not r.correct and not r.colour and r.shape and r.position and r.count
    # another shape
    rgb, _ = render(with_changed(shape=next_shape(target.shape)), n)
    r = check_image(rgb, objects)
    assert not r.correct and not r.shape and r.colour and r.count
    # another cell (everything centred, so nothing can touch)
    free = _free_cell(objects)
    rgb, _ = render([replace(o, origin=None) for o in with_changed(cell=free)], n)
    r = check_image(rgb, objects)
    assert not r.correct and not r.position and r.count
    # an extra object
    extra = ShapeObject(target.colour, target.shape, free, "small")
    rgb, _ = render([replace(o, origin=None) for o in objects] + [extra], n)
    r = check_image(rgb, objects)
    assert not r.correct and not r.count and r.colour and r.shape and r.position
    # a missing object
    if len(objects) == 2:
        rgb, _ = render([objects[1 - k]], n)
        r = check_image(rgb, objects)
        assert not r.correct and not r.count and r.objects_correct == 1
    # a blank image
    r = check_image(np.zeros((n, n, 3), np.uint8), objects)
    assert not (r.correct or r.colour or r.shape or r.position or r.count) and r.objects_correct == 0


@pytest.mark.parametrize("n", [32, 64, 128])
def test_noise_specks_are_ignored_but_blobs_are_not(n: int) -> None:
    obj = ShapeObject("cyan", "square", 4, "small")
    rgb, _ = render([obj], n)
    noisy = rgb.copy()
    rng = np.random.default_rng(0)
    noisy += rng.integers(0, 40, noisy.shape, dtype=np.uint8) * (rgb == 0)  # dim background noise
    for y, x in ((1, 1), (n - 2, 3), (2, n - 3)):  # isolated bright pixels
        noisy[y, x] = (255, 255, 255)
    assert check_image(noisy, [obj]).correct
    blob = noisy.copy()
    blob[1:6, 1:6] = PALETTE["red"]  # 25 px: bigger than the noise floor at 32 px
    if 25 >= Thresholds().min_area(n):
        assert not check_image(blob, [obj]).count


def test_prompt_without_position_accepts_any_cell() -> None:
    obj = ShapeObject("red", "triangle", 2, "large")
    rgb, _ = render([obj], 64)
    assert check_image(rgb, [ShapeObject("red", "triangle", None)]).correct
    assert not check_image(rgb, [ShapeObject("red", "triangle", 0)]).correct


def test_check_image_rejects_bad_arrays() -> None:
    obj = [ShapeObject("red", "circle", 0)]
    with pytest.raises(ValueError, match="uint8"):
        check_image(np.zeros((32, 32, 3), np.float32), obj)
    with pytest.raises(ValueError, match="RGB"):
        check_image(np.zeros((32, 32), np.uint8), obj)
    with pytest.raises(ValueError, match="at least one"):
        check_image(np.zeros((32, 32, 3), np.uint8), [])


def test_detections_describe_the_blobs() -> None:
    objs = [ShapeObject("yellow", "circle", 0, "large"), ShapeObject("purple", "triangle", 8, "small")]
    rgb, _ = render(objs, 64)
    found = {(d.colour, d.shape, CELLS[d.cell]) for d in detect(rgb)}
    assert found == {("yellow", "circle", "top left"), ("purple", "triangle", "bottom right")}
    d = detect(rgb)[0]
    assert d.to_dict()["mean_colour"] == [240.0, 220.0, 40.0]


def _box_blur(rgb: np.ndarray) -> np.ndarray:
    padded = np.pad(rgb.astype(np.float64), ((1, 1), (1, 1), (0, 0)), mode="edge")
    n = rgb.shape[0]
    return sum(padded[i : i + n, j : j + n] for i in range(3) for j in range(3)) / 9.0


@pytest.mark.parametrize(("n", "at_least"), [(32, 0.95), (64, 0.98), (128, 0.98)])
def test_blurred_renders_still_read_correctly(n: int, at_least: float) -> None:
    """A generator's shapes have soft edges: a 3 × 3 blur must not change the
    verdict, except where it bridges the one-pixel gap between neighbours."""
    from modiff_datasets.shapes import SceneSampler

    sampler = SceneSampler(seed=11, image_size=n, max_objects=2)
    correct = 0
    for i in range(150):
        scene = sampler.scene(i)
        rgb, _ = render(scene.objects, n)
        correct += check_image(np.clip(_box_blur(rgb), 0, 255).astype(np.uint8), scene.objects).correct
    assert correct / 150 >= at_least
    # dimmer but same hue is the same colour; plain nearest-RGB would call this cyan green
    assert nearest_colour(np.array(PALETTE["cyan"]) * 0.65) == "cyan"
