"""Line charts as PNG with pillow alone: panels side by side, labelled axes and
ticks, one line per series and a shared legend (for the learning curves).

matplotlib is not a dependency of the project, and these charts need little:
straight lines between measured points, round tick values, readable labels.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

#: Distinguishable line colours (Okabe–Ito, then a few more).
PALETTE = [
    (0, 114, 178), (230, 159, 0), (0, 158, 115), (204, 121, 167), (86, 180, 233),
    (213, 94, 0), (0, 0, 0), (240, 228, 66), (120, 120, 120), (150, 75, 0),
    (100, 50, 200), (0, 90, 50),
]
DASHES = [None, (10, 5), (3, 4), (12, 4, 3, 4)]


@dataclass
class Series:
    label: str
    points: list[tuple[float, float]]


@dataclass
class Panel:
    title: str
    series: list[Series] = field(default_factory=list)


def nice_ticks(lo: float, hi: float, count: int = 6) -> list[float]:
    """About ``count`` round values covering ``[lo, hi]`` (1, 2 or 5 × a power of ten apart)."""
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / max(1, count - 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.floor(lo / step) * step
    ticks, v = [], first
    while v <= hi + 1e-9 * step:
        ticks.append(round(v, 10))
        v += step
    if ticks[-1] < hi:
        ticks.append(round(ticks[-1] + step, 10))
    return ticks


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # an old pillow without scalable default font
        return ImageFont.load_default()


def _fmt(v: float) -> str:
    if abs(v) >= 1000 and float(v).is_integer():
        return f"{int(v):,}".replace(",", " ")
    if float(v).is_integer():
        return str(int(v))
    return f"{v:g}"


def _dashed(draw: ImageDraw.ImageDraw, a: tuple[float, float], b: tuple[float, float], colour: tuple[int, ...],
            width: int, dash: tuple[int, ...] | None) -> None:
    if dash is None:
        draw.line([a, b], fill=colour, width=width)
        return
    length = math.dist(a, b)
    if length == 0:
        return
    ux, uy = (b[0] - a[0]) / length, (b[1] - a[1]) / length
    pos, i, on = 0.0, 0, True
    while pos < length:
        seg = min(dash[i % len(dash)], length - pos)
        if on:
            draw.line([(a[0] + ux * pos, a[1] + uy * pos), (a[0] + ux * (pos + seg), a[1] + uy * (pos + seg))],
                      fill=colour, width=width)
        pos += seg
        i += 1
        on = not on


def _save_png(img: Image.Image, path: Path) -> Path:
    """Write ``img`` to ``path`` atomically (a reader never sees half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    img.save(tmp, format="PNG")
    tmp.replace(path)
    return path


def line_chart(
    panels: Sequence[Panel],
    path: Path,
    *,
    x_label: str,
    y_label: str,
    title: str = "",
    y_range: tuple[float, float] | None = (0.0, 1.0),
    note: str = "",
) -> Path:
    """Draw ``panels`` side by side into a PNG at ``path`` (written atomically)."""
    pw, ph = 430, 330
    left, right, top, bottom = 62, 18, 34, 52
    labels = sorted({s.label for p in panels for s in p.series}, key=lambda lab: [s.label for p in panels
                                                                                    for s in p.series].index(lab))
    legend_rows = math.ceil(len(labels) / 3) if labels else 0
    head = 36 if title else 8
    width = len(panels) * pw
    height = head + ph + 12 + 22 * legend_rows + (22 if note else 0) + 8
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    f_title, f_axis, f_tick = _font(18), _font(14), _font(12)
    if title:
        draw.text((width / 2, 10), title, fill="black", font=f_title, anchor="mt")
    style = {
        lab: (PALETTE[i % len(PALETTE)], DASHES[(i // len(PALETTE)) % len(DASHES)]) for i, lab in enumerate(labels)
    }

    xs = [x for p in panels for s in p.series for x, _ in s.points]
    ys = [y for p in panels for s in p.series for _, y in s.points]
    x_ticks = nice_ticks(0.0, max(xs) if xs else 1.0)
    if y_range is None:
        y_ticks = nice_ticks(min(ys) if ys else 0.0, max(ys) if ys else 1.0)
    else:
        y_ticks = nice_ticks(*y_range)
    x0, x1 = x_ticks[0], x_ticks[-1]
    y0, y1 = y_ticks[0], y_ticks[-1]

    for k, panel in enumerate(panels):
        ox, oy = k * pw, head
        ax_l, ax_r, ax_t, ax_b = ox + left, ox + pw - right, oy + top, oy + ph - bottom

        def px(
            x: float, y: float, ax_l: int = ax_l, ax_r: int = ax_r, ax_t: int = ax_t, ax_b: int = ax_b
        ) -> tuple[float, float]:
            return (ax_l + (x - x0) / (x1 - x0) * (ax_r - ax_l), ax_b - (y - y0) / (y1 - y0) * (ax_b - ax_t))

        draw.text(((ax_l + ax_r) / 2, oy + 8), panel.title, fill="black", font=f_axis, anchor="mt")
        for t in y_ticks:
            _, yy = px(x0, t)
            draw.line([(ax_l, yy), (ax_r, yy)], fill=(228, 228, 228))
            draw.text((ax_l - 6, yy), _fmt(t), fill="black", font=f_tick, anchor="rm")
        for t in x_ticks:
            xx, _ = px(t, y0)
            draw.line([(xx, ax_t), (xx, ax_b)], fill=(238, 238, 238))
            draw.line([(xx, ax_b), (xx, ax_b + 4)], fill="black")
            draw.text((xx, ax_b + 6), _fmt(t), fill="black", font=f_tick, anchor="mt")
        draw.rectangle([ax_l, ax_t, ax_r, ax_b], outline="black")
        draw.text(((ax_l + ax_r) / 2, ax_b + 24), x_label, fill="black", font=f_axis, anchor="mt")
        # The y label, rotated, on its own small image.
        lab = Image.new("RGBA", (ax_b - ax_t, 18), (255, 255, 255, 0))
        ImageDraw.Draw(lab).text(((ax_b - ax_t) / 2, 9), y_label, fill="black", font=f_axis, anchor="mm")
        lab = lab.rotate(90, expand=True)
        img.paste(lab, (ox + 4, ax_t), lab)
        for s in panel.series:
            colour, dash = style[s.label]
            pts = [px(x, y) for x, y in sorted(s.points)]
            for a, b in itertools.pairwise(pts):
                _dashed(draw, a, b, colour, 2, dash)
            for x, y in pts:
                draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=colour)

    ly = head + ph + 8
    col_w = width / 3
    for i, lab in enumerate(labels):
        colour, dash = style[lab]
        cx, cy = 20 + (i % 3) * col_w, ly + (i // 3) * 22 + 8
        _dashed(draw, (cx, cy), (cx + 30, cy), colour, 3, dash)
        draw.text((cx + 38, cy), lab, fill="black", font=f_tick, anchor="lm")
    if note:
        draw.text((10, ly + 22 * legend_rows + 6), note, fill=(80, 80, 80), font=f_tick, anchor="lt")
    return _save_png(img, path)


@dataclass
class Difference:
    """One row of an interval chart: ``a − b`` with its interval and verdict."""

    label: str
    value: float
    low: float
    high: float
    verdict: str


#: Row colours by verdict: a side named in colour, "not separable" in grey.
VERDICT_COLOURS = {"a better": (0, 140, 90), "b better": (200, 60, 30)}


def interval_chart(panels: Sequence[tuple[str, Sequence[Difference]]], path: Path, *, x_label: str,
                   title: str = "",
                   key: str = "95 % intervals; green: a better, red: b better, grey: not separable") -> Path:
    """Differences with their intervals, one row per label and one panel per
    metric, around a line at zero (a forest plot): which levers moved what, and
    by how much the data can tell. Written atomically to ``path``."""
    labels = list(dict.fromkeys(d.label for _, rows in panels for d in rows))
    pw, row_h, left, right, top, bottom = 330, 26, 96, 16, 34, 52
    head = 36 if title else 8
    ph = top + row_h * max(1, len(labels)) + bottom
    width, height = len(panels) * pw, head + ph + 30
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    f_title, f_axis, f_tick = _font(18), _font(14), _font(12)
    if title:
        draw.text((width / 2, 10), title, fill="black", font=f_title, anchor="mt")
    ends = [v for _, rows in panels for d in rows for v in (d.low, d.high) if math.isfinite(v)] or [-1.0, 1.0]
    reach = max(abs(min(ends)), abs(max(ends)), 1e-9)
    ticks = nice_ticks(-reach, reach, count=5)
    x0, x1 = ticks[0], ticks[-1]
    for k, (name, rows) in enumerate(panels):
        ox = k * pw
        ax_l, ax_r, ax_t, ax_b = ox + left, ox + pw - right, head + top, head + ph - bottom

        def px(x: float, ax_l: int = ax_l, ax_r: int = ax_r) -> float:
            return ax_l + (min(max(x, x0), x1) - x0) / (x1 - x0) * (ax_r - ax_l)

        draw.text(((ax_l + ax_r) / 2, head + 8), name, fill="black", font=f_axis, anchor="mt")
        for t in ticks:
            draw.line([(px(t), ax_t), (px(t), ax_b)], fill=(0, 0, 0) if t == 0 else (232, 232, 232))
            draw.text((px(t), ax_b + 6), _fmt(t), fill="black", font=f_tick, anchor="mt")
        draw.rectangle([ax_l, ax_t, ax_r, ax_b], outline="black")
        draw.text(((ax_l + ax_r) / 2, ax_b + 24), x_label, fill="black", font=f_axis, anchor="mt")
        by_label = {d.label: d for d in rows}
        for i, label in enumerate(labels):
            y = ax_t + row_h * (i + 0.5)
            draw.text((ax_l - 6, y), label, fill="black", font=f_tick, anchor="rm")
            d = by_label.get(label)
            if d is None:
                continue
            colour = VERDICT_COLOURS.get(d.verdict, (120, 120, 120))
            draw.line([(px(d.low), y), (px(d.high), y)], fill=colour, width=3)
            for end in (d.low, d.high):
                draw.line([(px(end), y - 5), (px(end), y + 5)], fill=colour, width=2)
            draw.ellipse([px(d.value) - 4, y - 4, px(d.value) + 4, y + 4], fill=colour)
    draw.text((10, height - 20), key, fill=(80, 80, 80), font=f_tick, anchor="lt")
    return _save_png(img, path)
