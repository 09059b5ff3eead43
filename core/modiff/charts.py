"""The project's one chart module: line charts drawn by matplotlib, as SVG or PNG.

The ablation report, its learning curves and the benchmarks' figures all come
from here, so there is one look and one set of axis rules, kept by a maintained
plotting library instead of hand-drawn coordinates.

matplotlib loads only when a chart is drawn (``modiff --help`` and reading an
ablation file do not pay for it), on its Agg backend (no display is needed),
and its SVG output is made byte-stable: a fixed hash salt for element ids, no
date in the metadata and text kept as text (``svg.fonttype = "none"``), so the
same data gives the same file and a report can be diffed or fingerprinted.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

#: Distinguishable line colours, one per cell in the order the cells come.
PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22"]

#: The settings every chart is drawn under (see the module docstring).
STABLE_RC = {
    "svg.hashsalt": "modiff",
    "svg.fonttype": "none",
    "font.size": 9,
    "axes.grid": True,
    "grid.color": "#e8e8e8",
    "axes.spines.top": False,
    "axes.spines.right": False,
}


@dataclass(frozen=True)
class Series:
    """One line: its points ``(x, y)``; a faint line (a single seed behind its mean) has no legend entry."""

    label: str
    points: Sequence[tuple[float, float]]
    colour: str = PALETTE[0]
    width: float = 1.5
    faint: bool = False


@dataclass(frozen=True)
class Panel:
    """One set of axes: its series and what its x-axis measures."""

    x_label: str
    series: Sequence[Series] = field(default_factory=tuple)
    title: str = ""


def colours(names: Sequence[str]) -> dict[str, str]:
    """A colour per name, in order, from :data:`PALETTE` (cycled)."""
    return {n: PALETTE[i % len(PALETTE)] for i, n in enumerate(names)}


def _finite(x: Any, y: Any, log_y: bool) -> bool:
    ok = isinstance(x, (int, float)) and isinstance(y, (int, float)) and math.isfinite(x) and math.isfinite(y)
    return ok and (y > 0 if log_y else True)


def _short(text: str, n: int = 40) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def line_chart(
    panels: Panel | Sequence[Panel],
    *,
    title: str,
    y_label: str,
    y_range: tuple[float, float] | None = None,
    log_y: bool = False,
    hline: tuple[float, str] | None = None,
    panel_size: tuple[float, float] = (4.4, 3.0),
    fmt: Literal["svg", "png"] = "svg",
) -> str | bytes:
    """Panels side by side sharing the y-axis, one legend below them all.

    Returns the SVG text (``fmt="svg"``) or the PNG bytes. ``hline`` draws a
    labelled horizontal reference line (a threshold) in every panel; a panel
    with no finite point says "no data yet". Markers sit on the points of a
    line that has a dozen or fewer, where each is a measurement worth seeing.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    panels = [panels] if isinstance(panels, Panel) else list(panels)
    legend: dict[str, Series] = {}
    for p in panels:
        for s in p.series:
            if s.label and not s.faint:
                legend.setdefault(s.label, s)
    with matplotlib.rc_context(STABLE_RC):
        rows = math.ceil(len(legend) / 2)
        width, legend_h = panel_size[0] * len(panels), 0.2 * rows + (0.1 if rows else 0)
        height = panel_size[1] + legend_h
        fig = Figure(figsize=(width, height))
        # fixed margins in inches (not a layout engine, which doubles the drawing time of a report)
        fig.subplots_adjust(left=0.7 / width, right=1 - 0.15 / width, top=1 - 0.4 / height,
                            bottom=(0.55 + legend_h) / height, wspace=0.08)
        axes = fig.subplots(1, len(panels), sharey=True, squeeze=False)[0]
        fig.suptitle(title, fontweight="bold", y=1 - 0.08 / height)
        for ax, panel in zip(axes, panels):
            _draw(ax, panel, log_y, y_range, hline)
        axes[0].set_ylabel(y_label)
        if legend:
            handles = [matplotlib.lines.Line2D([], [], color=s.colour, linewidth=s.width) for s in legend.values()]
            fig.legend(handles, [_short(lab) for lab in legend], loc="lower center", ncols=2, frameon=False,
                       bbox_to_anchor=(0.5, 0.02 / height), borderaxespad=0, handlelength=1.5)
        buffer = io.BytesIO()
        metadata = {"Date": None} if fmt == "svg" else {"Software": None}
        fig.savefig(buffer, format=fmt, metadata=metadata)
    data = buffer.getvalue()
    return data.decode() if fmt == "svg" else data


def _draw(ax: Any, panel: Panel, log_y: bool, y_range: tuple[float, float] | None, hline: Any) -> None:
    if panel.title:
        ax.set_title(panel.title)
    ax.set_xlabel(panel.x_label)
    if log_y:
        ax.set_yscale("log")
    drawn = False
    for s in panel.series:
        good = sorted((x, y) for x, y in s.points if _finite(x, y, log_y))
        if not good:
            continue
        drawn = True
        xs, ys = zip(*good)
        marker = "o" if not s.faint and len(good) <= 12 else None
        ax.plot(xs, ys, color=s.colour, linewidth=s.width, alpha=0.35 if s.faint else 1.0, marker=marker,
                markersize=3)
    if not drawn:
        ax.text(0.5, 0.5, "no data yet", transform=ax.transAxes, ha="center", va="center")
    if y_range is not None:
        ax.set_ylim(*y_range)
    if drawn:
        ax.set_xlim(left=min(0.0, ax.get_xlim()[0]))
    if hline is not None:
        ax.axhline(hline[0], color="#444", linestyle="--", linewidth=1)
        ax.annotate(hline[1], (1, hline[0]), xycoords=("axes fraction", "data"), ha="right", va="bottom",
                    fontsize=8)


@dataclass(frozen=True)
class Difference:
    """One row of an interval chart: ``a − b`` with its interval and the verdict read from it."""

    label: str
    value: float
    low: float
    high: float
    verdict: str


#: Row colours by verdict: a side named in colour, "not separable" in grey.
VERDICT_COLOURS = {"a better": "#2ca02c", "b better": "#d62728"}


def interval_chart(
    panels: Sequence[tuple[str, Sequence[Difference]]], *, title: str, x_label: str = "a − b",
    fmt: Literal["svg", "png"] = "svg",
) -> str | bytes:
    """Differences with their intervals around a line at zero, one row per label
    and one panel per metric (a forest plot): which comparisons moved what, and
    how much the data can tell. An unbounded end (a one-sided cost verdict) is
    drawn to the panel's edge."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    labels = list(dict.fromkeys(d.label for _, rows in panels for d in rows))
    with matplotlib.rc_context({**STABLE_RC, "axes.grid.axis": "x"}):
        width = 0.8 + 3.0 * len(panels) + 0.1 * max((len(lab) for lab in labels), default=0)
        height = 0.9 + 0.26 * max(1, len(labels)) + 0.3
        fig = Figure(figsize=(width, height))
        left = (0.3 + 0.065 * max((len(lab) for lab in labels), default=0)) / width
        fig.subplots_adjust(left=min(left, 0.45), right=1 - 0.15 / width, top=1 - 0.55 / height,
                            bottom=0.75 / height, wspace=0.08)
        axes = fig.subplots(1, len(panels), sharey=True, squeeze=False)[0]
        fig.suptitle(title, fontweight="bold", y=1 - 0.08 / height)
        for ax, (name, rows) in zip(axes, panels):
            ax.set_title(name)
            ax.set_xlabel(x_label)
            ax.axvline(0.0, color="#222", linewidth=1)
            ends = [v for d in rows for v in (d.low, d.high, d.value) if math.isfinite(v)] or [-1.0, 1.0]
            reach = max(abs(min(ends)), abs(max(ends)), 1e-9) * 1.1
            ax.set_xlim(-reach, reach)
            by_label = {d.label: d for d in rows}
            for i, label in enumerate(labels):
                d = by_label.get(label)
                if d is None:
                    continue
                colour = VERDICT_COLOURS.get(d.verdict, "#888888")
                low, high = (max(min(v, reach), -reach) for v in (d.low, d.high))
                ax.plot([low, high], [i, i], color=colour, linewidth=2.5, solid_capstyle="butt")
                if math.isfinite(d.value):
                    ax.plot([d.value], [i], "o", color=colour, markersize=5)
        axes[0].set_yticks(range(len(labels)), [_short(lab, 48) for lab in labels])
        axes[0].set_ylim(len(labels) - 0.5, -0.5)
        fig.text(0.5, 0.02 / height, "95 % intervals; green: a better, red: b better, grey: not separable",
                 ha="center", va="bottom", fontsize=8, color="#555")
        buffer = io.BytesIO()
        fig.savefig(buffer, format=fmt, metadata={"Date": None} if fmt == "svg" else {"Software": None})
    data = buffer.getvalue()
    return data.decode() if fmt == "svg" else data
