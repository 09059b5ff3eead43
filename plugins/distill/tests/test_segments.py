"""Multistep consistency (``[conditioner] segments``): where each timestep is mapped to."""

from __future__ import annotations

import pytest
import torch

from modiff_distill import ConsistencySettings
from modiff_distill.task import jump, segment_ends


def test_each_point_maps_to_the_lower_end_of_its_segment() -> None:
    j = torch.arange(1, 51)
    two = segment_ends(j, 50, 2)
    # trailing ddim at 2 steps visits 999 (point 50) and 499 (point 25): 999 jumps to 499, 499 to the clean sample
    assert two.tolist() == [0] * 25 + [25] * 25
    assert segment_ends(j, 50, 1).tolist() == [0] * 50
    five = segment_ends(j, 50, 5)
    assert sorted(set(five.tolist())) == [0, 10, 20, 30, 40]
    assert all(e < p <= e + 10 for p, e in zip(j.tolist(), five.tolist(), strict=True))


def test_a_jump_is_a_ddim_step_or_the_clean_sample_at_the_bottom() -> None:
    x0, eps = torch.randn(2, 4, 3, 3), torch.randn(2, 4, 3, 3)
    a, s = torch.full((2, 1, 1, 1), 0.6), torch.full((2, 1, 1, 1), 0.8)
    out = jump(x0, eps, a, s, torch.tensor([False, True]))
    torch.testing.assert_close(out[0], 0.6 * x0[0] + 0.8 * eps[0])
    torch.testing.assert_close(out[1], x0[1])


def test_segments_must_divide_the_skipping_schedule() -> None:
    assert ConsistencySettings(teacher="runs/demo", segments=2).segments == 2
    with pytest.raises(ValueError, match="segments = 3 does not divide original_inference_steps = 50"):
        ConsistencySettings(teacher="runs/demo", segments=3)


def test_the_teachers_path_needs_a_multistep_student() -> None:
    assert ConsistencySettings(teacher="runs/demo", segments=2, original_inference_steps=2, teacher_path=True)
    assert ConsistencySettings(teacher="runs/demo", segments=2, original_inference_steps=4, teacher_path=True)
    with pytest.raises(ValueError, match=r"teacher_path needs multistep consistency \(segments >= 1\)"):
        ConsistencySettings(teacher="runs/demo", teacher_path=True)


def test_the_teachers_path_takes_each_sample_down_to_its_own_point() -> None:
    """``teacher_path``: a sample at point ``j`` is the top input after the teacher's guided
    DDIM steps from the top point down to ``j`` (a fake teacher: clean sample 1, noise = x)."""
    from types import SimpleNamespace

    from modiff_distill.task import ConsistencyLoss

    a = {t: 1 - (t + 1) / 1000 for t in range(1000)}  # signal at t; noise 1 - signal (a toy schedule)

    class Schedule:
        def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            at = torch.tensor([a[int(v)] for v in t]).view(-1, 1, 1, 1)
            return at * x0 + (1 - at) * noise

    loss = object.__new__(ConsistencyLoss)
    loss.components = SimpleNamespace(scheduler=Schedule())
    loss.settings = SimpleNamespace(original_inference_steps=4)
    loss._guided = lambda x, t, text, w: (torch.ones_like(x), x)  # type: ignore[method-assign]
    top = torch.full((4, 1, 1, 1), 5.0)
    got = loss._on_teacher_path(top, torch.tensor([4, 3, 2, 1]), 250, None, torch.ones(4))
    expected, x = [5.0], 5.0
    for t in (749, 499, 249):  # each step lands at a[t] * 1 + (1 - a[t]) * x
        x = a[t] + (1 - a[t]) * x
        expected.append(x)
    torch.testing.assert_close(got.flatten(), torch.tensor(expected))
