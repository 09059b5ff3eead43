"""The ablation report: one self-contained HTML page and a Markdown twin.

The page embeds every image (data URIs) and draws the loss curves as inline
SVG, so it can be mailed or archived as one file. A small script at its end
records on ``<body>`` how many images loaded, which the tests read back from
a headless browser.
"""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path
from typing import Any

from .runs import atomic_write_text

#: Preferred order of evaluation columns; others follow in first-seen order.
PREFERRED = ["accuracy", "colour_accuracy", "shape_accuracy", "position_accuracy", "count_accuracy",
             "one_object_accuracy", "two_object_accuracy", "holdout_accuracy"]
PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22"]


def metric_columns(records: list[dict[str, Any]]) -> list[str]:
    seen: list[str] = []
    for r in records:
        for k, v in (r.get("evaluation") or {}).items():
            if isinstance(v, (int, float)) and not isinstance(v, bool) and "accuracy" in k and k not in seen:
                seen.append(k)
        for k, v in (r.get("evaluation") or {}).items():
            if isinstance(v, (int, float)) and not isinstance(v, bool) and ("iou" in k.lower()) and k not in seen:
                seen.append(k)
    return sorted(seen, key=lambda k: (PREFERRED.index(k) if k in PREFERRED else len(PREFERRED), seen.index(k)))


def rows(records: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    metrics = metric_columns(records)
    header = ["cell", "status", *metrics, "train s", "s / image", "parameters"]
    body = []
    for r in records:
        ev = r.get("evaluation") or {}
        params = r.get("parameters") or {}
        body.append(
            [
                r["name"],
                r.get("status", "?"),
                *(_fmt(ev.get(m)) for m in metrics),
                _fmt(r.get("train_seconds"), 1),
                _fmt(r.get("seconds_per_image"), 3),
                f"{sum(params.values()):,}" if params else "",
            ]
        )
    return header, body


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def loss_svg(records: list[dict[str, Any]], width: int = 640, height: int = 300) -> str:
    """Denoiser loss against step for every cell, log-scaled, as inline SVG."""
    curves = [(r["name"], r.get("losses") or []) for r in records]
    points = [(s, l) for _, c in curves for s, l in c if l and l > 0 and math.isfinite(l)]
    if not points:
        return "<p>No loss was recorded.</p>"
    max_step = max(s for s, _ in points) or 1
    lo, hi = math.log10(min(l for _, l in points)), math.log10(max(l for _, l in points))
    hi = hi if hi > lo else lo + 1
    pad_l, pad_b, pad_t, pad_r = 50, 30, 10, 10
    w, h = width - pad_l - pad_r, height - pad_t - pad_b

    def xy(step: float, loss: float) -> str:
        x = pad_l + w * step / max_step
        y = pad_t + h * (1 - (math.log10(loss) - lo) / (hi - lo))
        return f"{x:.1f},{y:.1f}"

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height + 20 * len(curves)}" role="img">']
    parts.append(f'<rect x="{pad_l}" y="{pad_t}" width="{w}" height="{h}" fill="none" stroke="#999"/>')
    for frac in (0, 0.5, 1):
        value = 10 ** (lo + frac * (hi - lo))
        y = pad_t + h * (1 - frac)
        parts.append(f'<text x="{pad_l - 4}" y="{y + 4:.1f}" font-size="10" text-anchor="end">{value:.3g}</text>')
    parts.append(f'<text x="{pad_l + w / 2}" y="{height - 6}" font-size="11" text-anchor="middle">step (max {max_step})</text>')
    for i, (name, curve) in enumerate(curves):
        colour = PALETTE[i % len(PALETTE)]
        good = [(s, l) for s, l in curve if l and l > 0 and math.isfinite(l)]
        if good:
            parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{" ".join(xy(s, l) for s, l in good)}"/>')
        y = height + 14 + 20 * i
        parts.append(f'<rect x="{pad_l}" y="{y - 9}" width="12" height="12" fill="{colour}"/>')
        parts.append(f'<text x="{pad_l + 18}" y="{y + 1}" font-size="12">{html.escape(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def write_report(ablation: Any, out: Path, records: list[dict[str, Any]]) -> tuple[Path, Path]:
    header, body = rows(records)
    title = f"Ablation {ablation.out.name}"
    md = [f"# {title}", "", f"From `{ablation.path}` over `{', '.join(str(b) for b in ablation.base_files)}`.", ""]
    md.append("| " + " | ".join(header) + " |")
    md.append("|" + "---|" * len(header))
    md.extend("| " + " | ".join(r) + " |" for r in body)
    md += ["", "## Samples (same prompts and seeds in every cell)", ""]
    for r in records:
        if r.get("grid"):
            md += [f"### {r['name']}", "", f"![{r['name']}]({r['grid']})", ""]
        elif r.get("error"):
            md += [f"### {r['name']}", "", f"Failed: `{r['error']}`", ""]
    svg = loss_svg(records)
    atomic_write_text(out / "losses.svg", svg)
    md += ["## Denoiser loss", "", "![losses](losses.svg)", ""]
    md_path = out / "report.md"
    atomic_write_text(md_path, "\n".join(md))

    table = ["<table><thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr></thead><tbody>"]
    for r, cells in zip(records, body):
        cls = "failed" if r.get("status") != "done" else ""
        table.append(f'<tr class="{cls}">' + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    table.append("</tbody></table>")
    samples = []
    for r in records:
        samples.append(f"<section><h3>{html.escape(r['name'])}</h3>")
        grid = out / r["grid"] if r.get("grid") else None
        if grid is not None and grid.is_file():
            data = base64.b64encode(grid.read_bytes()).decode()
            samples.append(f'<img alt="{html.escape(r["name"])}" src="data:image/png;base64,{data}">')
        if r.get("error"):
            samples.append(f'<pre class="error">{html.escape(r["error"])}</pre>')
        samples.append("</section>")
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; }} th, td {{ border: 1px solid #ccc; padding: 4px 8px; text-align: right; }}
td:first-child, th:first-child {{ text-align: left; }} tr.failed td {{ background: #fee; }}
section {{ display: inline-block; vertical-align: top; margin: 0 1em 1em 0; }} img {{ image-rendering: pixelated; max-width: 100%; }}
pre.error {{ color: #a00; white-space: pre-wrap; max-width: 40em; }}
</style></head>
<body>
<h1>{html.escape(title)}</h1>
<p>From <code>{html.escape(str(ablation.path))}</code>; every cell trains with the same budget and seed.</p>
<h2>Results</h2>
{''.join(table)}
<h2>Samples (same prompts and seeds in every cell)</h2>
{''.join(samples)}
<h2>Denoiser loss</h2>
{svg}
<script>
window.addEventListener("load", function () {{
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (i) {{ return i.complete && i.naturalWidth > 0; }}).length;
  document.body.setAttribute("data-images", ok + "/" + imgs.length);
  document.body.setAttribute("data-rows", String(document.querySelectorAll("tbody tr").length));
}});
</script>
</body></html>
"""
    html_path = out / "report.html"
    atomic_write_text(html_path, page)
    return md_path, html_path
