"""Which timesteps a sampler visits for a number of steps.

Samplers differ in how they spread ``steps`` over ``[0, T)`` and in whether
they visit ``t = 0`` at all; each family below reproduces the grid of its
diffusers counterpart, so a model tuned with one library's sampler settings
behaves the same here:

* ``discrete`` (ddpm, ddim): integer timesteps, the last one a real step.
* ``continuous`` (euler, euler-ancestral, heun, lms): float timesteps; with
  ``linspace`` they are fractional and sigma is interpolated between the
  neighbouring training timesteps.
* ``multistep`` (dpmpp-2m, dpmpp-2m-sde, unipc): integer timesteps spread over
  ``steps + 1`` points whose last one (``t = 0``) is dropped, since the final
  step goes to sigma = 0 anyway.
* ``consistency`` (lcm): LCM's skipping schedule, see
  :func:`consistency_timesteps`; spacing and offset do not apply.
"""

from __future__ import annotations

import math
from typing import Any, Literal

Family = Literal["discrete", "continuous", "multistep", "consistency"]


def _linspace(stop: float, num: int) -> list[float]:
    """``numpy.linspace(0, stop, num)`` bit for bit (step = stop / (num - 1), exact endpoint)."""
    if num == 1:
        return [0.0]
    step = stop / (num - 1)
    out = [i * step for i in range(num)]
    out[-1] = float(stop)
    return out


def _round(values: list[float]) -> list[int]:
    """Round half to even, like ``numpy.round``."""
    return [int(round(v)) for v in values]


def check_steps(num_train_timesteps: int, steps: object) -> None:
    """``ValueError`` unless ``steps`` is an integer from 1 to ``num_train_timesteps``."""
    n = num_train_timesteps
    if not isinstance(steps, int) or isinstance(steps, bool) or not 1 <= steps <= n:
        raise ValueError(f"steps must be an integer from 1 to num_train_timesteps = {n}; got {steps!r}")


def spaced_timesteps(
    num_train_timesteps: int, steps: int, spacing: str, steps_offset: int, family: Family, *, check: bool = True
) -> list[float]:
    """The timesteps visited, first (noisiest) to last, as floats.

    Raises ``ValueError`` when ``steps`` is not in ``[1, num_train_timesteps]``
    or, with ``check``, when ``steps_offset`` pushes a timestep past the last
    training timestep (Karras grids only use the spaced grid's noise range,
    clamped, so they pass ``check=False``).
    """
    n = num_train_timesteps
    check_steps(n, steps)
    ts = _grid(n, steps, spacing, steps_offset, family)
    if check and ts[0] > n - 1:
        raise ValueError(
            f"steps_offset = {steps_offset} with {steps} leading-spaced steps puts the first timestep at {ts[0]:g}, "
            f"beyond the last training timestep {n - 1}; use fewer steps, steps_offset = 0 or another spacing"
        )
    return ts


def consistency_timesteps(num_train_timesteps: int, steps: int, original_steps: int, shift: float = 1.0) -> list[float]:
    """LCM's timesteps (diffusers' ``LCMScheduler.set_timesteps``), first to last.

    The skipping schedule the model was distilled on has ``original_steps``
    points ``k = T // original_steps`` apart, ending at ``k - 1``; ``steps`` of
    them are taken evenly by index from the noisiest one. Where diffusers
    refuses the settings, the schedule stays defined: it has at most ``T``
    points (``original_steps > T``) and at least ``steps`` (more steps than
    ``original_steps``), so every step count from 1 to ``T`` has a grid.

    ``shift`` other than 1 moves the taken points along the same skipping
    schedule (see :func:`shift_consistency_points`); 1 is diffusers' grid.
    """
    n = num_train_timesteps
    check_steps(n, steps)
    points = max(min(original_steps, n), steps)
    k = n // points
    step = points / steps  # numpy.linspace(0, points, steps, endpoint=False) is i * step
    picked = [points - math.floor(i * step) for i in range(steps)]  # point j is timestep j * k - 1
    if shift != 1.0:
        picked = shift_consistency_points(picked, points, shift)
    return [float(j * k - 1) for j in picked]


def time_shift(u: Any, shift: float, scale: float = 1.0) -> Any:
    """The time shift of Esser et al. 2024, ``u -> s u / (1 + (s - 1) u)`` on
    ``u`` in ``[0, 1]`` (a float or a tensor), times ``scale``: ``s > 1`` moves
    times towards the noisy end. The one formula behind training's
    ``timestep_shift`` and the ``lcm`` sampler's ``inference_shift``; computed
    as ``scale * s * u / (...)`` in that order, which the training draw's bits
    (and every committed fingerprint) depend on."""
    return scale * shift * u / (1 + (shift - 1) * u)


def shift_consistency_points(picked: list[int], points: int, shift: float) -> list[int]:
    """The skipping schedule's points ``picked`` (``points`` down to 1, decreasing)
    moved by the time shift ``u -> s u / (1 + (s - 1) u)`` of ``u = j / points``
    (the one ``timestep_shift`` draws training timesteps with), rounded to the
    nearest point and kept distinct and decreasing: ``s > 1`` spends the steps
    at noisier timesteps, ``s < 1`` at cleaner ones. The first point (the
    noisiest) stays where it is."""
    moved = []
    for j in picked:
        u = j / points
        moved.append(min(points, max(1, round(time_shift(u, shift, points)))))
    for i in range(1, len(moved)):  # distinct, decreasing ...
        moved[i] = min(moved[i], moved[i - 1] - 1)
    for i in range(len(moved) - 1, -1, -1):  # ... and at least 1 (steps <= points leaves room)
        floor = 1 if i == len(moved) - 1 else moved[i + 1] + 1
        moved[i] = max(moved[i], floor)
    return moved


def _grid(n: int, steps: int, spacing: str, steps_offset: int, family: Family) -> list[float]:
    if spacing == "trailing":
        # numpy.arange(n, 0, -n / steps) bit for bit (it steps by the
        # difference of its first two values), but always exactly `steps`
        # values: numpy's float length can come out one too long.
        delta = (n - n / steps) - n
        return [float(round(n + k * delta) - 1) for k in range(steps)]
    if family == "multistep":
        if spacing == "linspace":
            ts = _round(_linspace(n - 1, steps + 1))[::-1][:-1]
        elif spacing == "leading":
            ratio = n // (steps + 1)
            ts = [k * ratio + steps_offset for k in range(steps, 0, -1)]
        else:
            raise ValueError(f"unknown timestep_spacing {spacing!r}; use leading, trailing or linspace")
        if len(set(ts)) < len(ts):
            # diffusers repeats timesteps here (steps = T) and divides by zero;
            # every training timestep once is the grid those settings mean.
            ts = list(range(n - 1, n - 1 - steps, -1))
        return [float(t) for t in ts]
    if spacing == "linspace":
        values = _linspace(n - 1, steps)[::-1]
        return [float(v) for v in _round(values)] if family == "discrete" else values
    if spacing == "leading":
        ratio = n // steps
        return [float(k * ratio + steps_offset) for k in range(steps - 1, -1, -1)]
    raise ValueError(f"unknown timestep_spacing {spacing!r}; use leading, trailing or linspace")


def karras_sigmas(sigma_min: float, sigma_max: float, steps: int, rho: float = 7.0) -> list[float]:
    """Karras et al. (2022) noise levels: uniform in ``sigma ** (1 / rho)``."""
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    ramp = _linspace(1.0, steps)
    return [(hi + r * (lo - hi)) ** rho for r in ramp]
