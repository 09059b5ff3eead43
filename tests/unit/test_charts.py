"""modiff.charts: the one chart module (matplotlib) draws stable files, loaded only when drawing."""

from __future__ import annotations

import math
import subprocess
import sys

from modiff.charts import Difference, Panel, Series, interval_chart, line_chart

#: Draws a two-panel chart and prints its SVG.
DRAW = """
import sys
from modiff.charts import Panel, Series, line_chart
panels = [
    Panel("training seconds", [Series("latent", [(10.0, 0.2), (20.0, 0.6)]), Series("", [(10.0, 0.3)], faint=True)]),
    Panel("denoiser steps", [Series("pixel", [(100.0, 0.1), (200.0, 0.4)], "#d62728")]),
]
sys.stdout.write(line_chart(panels, title="one object", y_label="accuracy", hline=(0.5, "threshold 0.5")))
"""


def test_the_same_data_draws_the_same_svg_in_two_processes() -> None:
    """A report is diffable: no date, no random ids, text kept as text."""
    procs = [subprocess.Popen([sys.executable, "-c", DRAW], stdout=subprocess.PIPE, text=True) for _ in range(2)]
    first, second = (p.communicate(timeout=120)[0] for p in procs)
    assert first == second and first.startswith("<?xml") and "</svg>" in first
    for text in ("one object", "accuracy", "training seconds", "denoiser steps", "latent", "pixel", "threshold 0.5"):
        assert f">{text}<" in first, text  # the legend, titles and labels as text, not glyph paths


def test_png_and_an_empty_panel() -> None:
    png = line_chart(Panel("step", [Series("a", [(1.0, 2.0), (2.0, 1.0)])]), title="t", y_label="y", fmt="png")
    assert isinstance(png, bytes) and png.startswith(b"\x89PNG")
    assert ">no data yet<" in str(line_chart(Panel("step", []), title="t", y_label="y"))


def test_the_cli_does_not_load_matplotlib_or_scipy() -> None:
    code = "import sys, modiff.cli, modiff.ablation; print('matplotlib' in sys.modules, 'scipy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_an_interval_chart_draws_a_one_sided_cost_to_the_edge() -> None:
    rows = [Difference("fast − slow", -math.inf, -math.inf, -450.0, "a better"),
            Difference("same − same", 3.0, -20.0, 30.0, "not separable at this budget")]
    svg = str(interval_chart([("seconds to 0.8", rows)], title="a − b"))
    assert all(f">{text}<" in svg for text in ("fast − slow", "same − same", "seconds to 0.8"))
