"""The ablation report: one self-contained HTML page and a Markdown twin.

Read top down, the page answers in order: what did each comparison decide
(the verdicts, computed by :func:`modiff.ablation.analyse`), how do the cells
stand on the few metrics the file names (with 95 % intervals), what does
quality cost in training seconds (learning curves), and then, folded away,
every metric, every run, the samples and the loss curves.

The page embeds every image and plot (data URIs; plots are SVG drawn by
:mod:`modiff.charts`), fits a 1400-pixel window, and can be mailed or archived as
one file. A small script at its end records on ``<body>`` how many images
loaded, how many comparison rows there are and how wide the page is, which
the tests read back from a headless browser.
"""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path
from typing import Any

from .charts import Difference, Panel, Series, colours, interval_chart, line_chart
from .runs import atomic_write_json, atomic_write_text
from .stats import seconds_to_reach

VERDICT_CLASS = {"a better": "a", "b better": "b"}


# ---------------------------------------------------------------------------
# Numbers as text
# ---------------------------------------------------------------------------


def _num(value: float, digits: int, signed: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "?"
    if math.isinf(value):
        return ("−" if value < 0 else "+" if signed else "") + "∞"
    text = f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"
    return text.replace("-", "−")


def _digits(metric: str) -> int:
    return 0 if "seconds" in metric else 2


def fmt_estimate(est: dict[str, Any] | None, metric: str) -> str:
    """``0.81 [0.75, 0.86]``; a cost that not every seed reached says so."""
    if est is None:
        return "–"
    d = _digits(metric)
    if "reached" in est and "value" not in est:
        return "not reached" if est["reached"] == 0 else f"{est['reached']}/{est['seeds']} seeds reached"
    if "low" not in est or est["low"] == est["high"] == est["value"] and est.get("seeds", 1) < 2:
        return _num(est["value"], d)
    return f"{_num(est['value'], d)} [{_num(est['low'], d)}, {_num(est['high'], d)}]"


def fmt_difference(result: dict[str, Any]) -> str:
    """``+0.12 [+0.05, +0.19]``; a one-sided bound as ``< −450``."""
    diff = result.get("difference")
    if diff is None:
        return result.get("note") or "no data"
    d = _digits(result["metric"])
    unit = " s" if "seconds" in result["metric"] else ""
    if math.isinf(diff["low"]) and diff["low"] < 0:
        return f"< {_num(diff['high'], d, signed=True)}{unit}"
    if math.isinf(diff["high"]) and diff["high"] > 0:
        return f"> {_num(diff['low'], d, signed=True)}{unit}"
    low, high = _num(diff["low"], d, signed=True), _num(diff["high"], d, signed=True)
    return f"{_num(diff['value'], d, signed=True)}{unit} [{low}, {high}]"


# ---------------------------------------------------------------------------
# Plots
# ---------------------------------------------------------------------------


def _mean_curve(runs: list[dict[str, Any]], metric: str) -> list[dict[str, float]]:
    """A cell's curve averaged over its seeds, at the steps every seed evaluated:
    ``{"step", "train_seconds", "value"}`` per evaluation."""
    by_step: dict[int, list[tuple[float, float]]] = {}
    for r in runs:
        for p in r.get("curve") or []:
            if isinstance(p["eval"].get(metric), (int, float)):
                by_step.setdefault(p["step"], []).append((p["train_seconds"], p["eval"][metric]))
    return [
        {"step": step, "train_seconds": sum(s for s, _ in v) / len(v), "value": sum(y for _, y in v) / len(v)}
        for step, v in sorted(by_step.items())
        if len(v) == len(runs)
    ]


def load_free_seconds(timing: dict[str, Any] | None, cell: str, step: float) -> float | None:
    """Seconds a cell's run needs to reach denoiser step ``step`` on an unloaded
    machine, read from the interleaved step timing (:mod:`modiff.step_timing`):
    its stages before the denoiser plus ``step`` denoiser steps, each at its
    measured cost relative to the reference cell, in the reference's seconds."""
    cost = ((timing or {}).get("cells") or {}).get(cell)
    if not cost:
        return None
    return (cost["fixed_reference_steps"] + step * cost["denoiser_relative"]) * timing["unit_seconds"]  # type: ignore[index]


#: The x-axes of a learning curve: what each panel measures, and how a point is read on it.
CURVE_AXES = (
    ("training seconds (every stage; evaluation excluded)", "train_seconds"),
    ("denoiser steps", "step"),
)


def curve_charts(summary: dict[str, Any], records: list[dict[str, Any]]) -> dict[str, str]:
    """Per compact metric that the learning curves record: each cell's metric against
    training seconds and against denoiser steps (and, with ``[timing]``, against
    load-free seconds), one faint line per seed and a bold one through their means."""
    palette = colours([c["name"] for c in summary["cells"]])
    threshold = summary.get("threshold")
    timing = summary.get("timing")
    axes = list(CURVE_AXES)
    if timing:
        axes.append(("load-free seconds (interleaved step timing)", "load_free"))
    charts = {}
    for metric in summary["compact"]:
        panels: list[list[Series]] = [[] for _ in axes]
        for cell in summary["cells"]:
            name, colour = cell["name"], palette[cell["name"]]
            runs = [r for r in records if r.get("status") == "done" and (r.get("group") or r["name"]) == name]
            for k, (_, key) in enumerate(axes):
                if len(runs) > 1 and key != "load_free":
                    for r in runs:
                        pts = [(p[key], p["eval"][metric]) for p in r.get("curve") or []
                               if isinstance(p["eval"].get(metric), (int, float))]
                        panels[k].append(Series("", pts, colour, width=1, faint=True))
                mean = _mean_curve(runs, metric)
                if key == "load_free":
                    pts = [(load_free_seconds(timing, name, p["step"]), p["value"]) for p in mean]
                    pts = [(x, y) for x, y in pts if x is not None]
                else:
                    pts = [(p[key], p["value"]) for p in mean]
                panels[k].append(Series(name, pts, colour, width=2))
        if not any(s.points for series in panels for s in series):
            continue
        hline = None
        if threshold and threshold["metric"] == metric:
            hline = (threshold["value"], f"threshold {threshold['value']:g}")
        name = summary["names"].get(metric, metric)
        charts[metric] = str(line_chart(
            [Panel(x_label, series) for (x_label, _), series in zip(axes, panels)],
            title=name,
            y_label=name,
            y_range=(0.0, 1.0) if ("accuracy" in metric or "iou" in metric) else None,
            hline=hline,
        ))
    return charts


def loss_chart(summary: dict[str, Any], records: list[dict[str, Any]]) -> str:
    """Denoiser loss against step, one line per run, log-scaled."""
    palette = colours([c["name"] for c in summary["cells"]])
    series, labelled = [], set()
    for r in records:
        group = r.get("group") or r["name"]
        label = "" if group in labelled else group
        labelled.add(group)
        series.append(Series(label, r.get("losses") or [], palette.get(group, "#888"), width=1.2))
    panel = Panel("step", series)
    return str(line_chart(panel, title="denoiser loss", y_label="loss (log scale)", log_y=True, panel_size=(6.6, 3.0)))


def verdict_chart(summary: dict[str, Any]) -> str | None:
    """Every comparison's ``a − b`` with its interval, coloured by its verdict, one
    panel per metric (a forest plot); ``None`` while no comparison has a difference."""
    metrics = list(dict.fromkeys(r["metric"] for c in summary["comparisons"] for r in c["results"]))
    panels = []
    for m in metrics:
        rows = []
        for c in summary["comparisons"]:
            r = next((r for r in c["results"] if r["metric"] == m), None)
            if r is not None and r.get("difference") is not None:
                d = r["difference"]
                rows.append(Difference(f"{c['a']} − {c['b']}", d["value"], d["low"], d["high"], r["verdict"]))
        panels.append((summary["names"].get(m, m), rows))
    if not any(rows for _, rows in panels):
        return None
    return str(interval_chart([p for p in panels if p[1]], title="a − b, each comparison"))


# ---------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------


def verdict_table(summary: dict[str, Any]) -> tuple[list[str], list[list[tuple[str, str]]]]:
    """Header and rows of the comparisons: claim, a, b, then per metric the verdict and difference.

    Each body cell is ``(text, css class)``; a metric a comparison does not
    name is blank.
    """
    metrics = list(dict.fromkeys(r["metric"] for c in summary["comparisons"] for r in c["results"]))
    error = summary.get("evaluator_error") or {}
    header = ["claim", "a", "b", *(summary["names"].get(m, m) for m in metrics)]
    rows = []
    for c in summary["comparisons"]:
        by_metric = {r["metric"]: r for r in c["results"]}
        row = [(c["claim"], "claim"), (c["a"], "cellname"), (c["b"], "cellname")]
        for m in metrics:
            r = by_metric.get(m)
            if r is None:
                row.append(("", ""))
                continue
            notes = [r["note"]] if r.get("note") and r.get("difference") is not None else []
            if within_error(r, error.get(m)):
                notes.append(f"smaller than the evaluator's measured error, {100 * error[m]:.1f} %")
            note = f" ({'; '.join(notes)})" if notes else ""
            row.append((f"{r['verdict']}|{fmt_difference(r)}{note}", VERDICT_CLASS.get(r["verdict"], "ns")))
        rows.append(row)
    return header, rows


def within_error(result: dict[str, Any], error: float | None) -> bool:
    """Whether a comparison's difference is smaller than the evaluator's measured
    error on that metric: then it may come from the instrument, not the cells."""
    diff = result.get("difference")
    if error is None or diff is None or not math.isfinite(diff["value"]):
        return False
    return abs(diff["value"]) < error


def error_text(summary: dict[str, Any]) -> str:
    """A sentence on the evaluator's own measured error, or nothing when it states none."""
    error = summary.get("evaluator_error") or {}
    if not error:
        return ""
    shown = ", ".join(f"{summary['names'].get(m, m)} {100 * v:.1f} %" for m, v in error.items())
    return (
        f" The evaluator states its own measured error (the share of items it scores wrong on images with known "
        f"answers): {shown}. A difference smaller than it is marked: it may be the instrument's, not the cells'."
    )


def compact_table(summary: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """One row per cell: its compact metrics, training seconds, seconds per image and,
    with ``[timing]``, its step cost against the first cell's and its load-free seconds."""
    timing = summary.get("timing")
    header = ["cell", "runs", *(summary["names"].get(m, m) for m in summary["compact"]), "train s", "s / image"]
    if timing:
        header += [f"step cost (× {timing['reference']})", "load-free s"]
    rows = []
    for cell in summary["cells"]:
        runs = f"{cell['runs_done']}/{cell['runs']}" + (f" ({len(cell['failed'])} failed)" if cell["failed"] else "")
        rows.append(
            [
                cell["name"],
                runs,
                *(fmt_estimate(cell["metrics"].get(m), m) for m in summary["compact"]),
                _num(cell["train_seconds"], 0) if cell["train_seconds"] is not None else "–",
                _num(cell["seconds_per_image"], 3) if cell["seconds_per_image"] is not None else "–",
            ]
        )
        if timing:
            cost = timing["cells"].get(cell["name"])
            free = load_free_seconds(timing, cell["name"], cell.get("steps") or 0) if cost else None
            rows[-1] += [_num(cost["denoiser_relative"], 2) if cost else "–", _num(free, 0) if free else "–"]
    return header, rows


def full_table(summary: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Every metric (rows) of every cell (columns): the cells are few, the metrics many."""
    header = ["metric", *(c["name"] for c in summary["cells"])]
    rows = []
    for m in summary["all_metrics"]:
        rows.append(
            [f"{summary['names'].get(m, m)} ({m})", *(fmt_estimate(c["metrics"].get(m), m) for c in summary["cells"])]
        )
    rows.append(["parameters", *(f"{c['parameters']:,}" if c["parameters"] else "–" for c in summary["cells"])])
    return header, rows


def runs_table(summary: dict[str, Any], records: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    header = ["run", "status", *(summary["names"].get(m, m) for m in summary["compact"]), "train s", "wall s"]
    rows = []
    for r in records:
        ev = r.get("evaluation") or {}
        values = []
        for m in summary["compact"]:
            if m == "seconds_to_threshold" and summary.get("threshold"):
                t = summary["threshold"]
                curve = [
                    (p["train_seconds"], p["eval"].get(t["metric"]))
                    for p in r.get("curve") or []
                    if isinstance(p["eval"].get(t["metric"]), (int, float))
                ]
                reached = seconds_to_reach(curve, t["value"]) if r.get("status") == "done" else None
                values.append("not reached" if reached is None else _num(reached, 0))
            else:
                v = ev.get(m)
                values.append(_num(v, 3) if isinstance(v, (int, float)) else "–")
        rows.append(
            [
                r["name"],
                r.get("status", "?"),
                *values,
                _num(r.get("train_seconds"), 0) if r.get("train_seconds") else "–",
                _num(r.get("wall_seconds"), 0) if r.get("wall_seconds") else "–",
            ]
        )
    return header, rows


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"


def _intro(summary: dict[str, Any]) -> str:
    cells = len(summary["cells"])
    text = (
        f"{cells} cells, {summary['runs']} runs ({summary['runs_done']} finished); seeds {summary['seeds']}; "
        f"the runs took {_minutes(summary['wall_seconds'])} in all (training, evaluation and samples)"
    )
    span = summary.get("span_seconds")
    if span:
        text += f"; {_minutes(span)} of wall time from the first run's start to the last one's end"
    text += "."
    t = summary.get("threshold")
    if t:
        text += f" Cost is read at {summary['names'].get(t['metric'], t['metric'])} ≥ {t['value']:g}."
    timing = summary.get("timing")
    if timing:
        text += (
            f" Step costs were timed interleaved in one process ({timing['rounds']} rounds, medians, one thread): "
            f"{timing['reference']}'s denoiser step took {1000 * timing['unit_seconds']:.0f} ms; load-free seconds "
            "are each cell's stages at their measured cost in those milliseconds."
        )
        for name, error in (timing.get("errors") or {}).items():
            text += f" {name} was not timed ({error})."
    return text


CURVES_NOTE = (
    "Each cell's evaluations during training (train.eval_every): bold, the mean over its seeds at the steps every "
    "seed evaluated; faint, each seed. Training seconds are the runs' own, measured under whatever else the machine "
    "ran; with [timing] in the ablation file a third panel puts the same points on load-free seconds, from each "
    "cell's training step timed interleaved with the others' in one process."
)

METHOD = (
    "Each comparison reads a − b: the verdict, the difference and its interval. Intervals are 95 %: for "
    "accuracies a bootstrap over prompts (or images) and seeds, paired when two cells scored the same prompts "
    "under the same seeds; for seconds to the threshold Student's (one cell) or Welch's (a difference) t over "
    "seeds. A verdict names a cell only when the interval of a − b excludes zero; it is computed, never written "
    "in the ablation file."
)


# ---------------------------------------------------------------------------
# The page and its twin
# ---------------------------------------------------------------------------


def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    def esc(text: str) -> str:
        return text.replace("|", "\\|")

    return [
        "| " + " | ".join(esc(h) for h in header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(esc(c) for c in row) + " |" for row in rows),
    ]


def _cell_html(text: str) -> str:
    """``0.81 [0.75, 0.86]`` as the value over its interval in small type (narrow columns)."""
    value, sep, interval = text.partition(" [")
    if not sep:
        return html.escape(text)
    return f'{html.escape(value)}<br><span class="ci">[{html.escape(interval)}</span>'


def _html_table(header: list[str], rows: list[list[str]], cls: str, row_classes: list[str] | None = None) -> str:
    out = [
        f'<table class="{cls}"><thead><tr>'
        + "".join(f"<th>{html.escape(h)}</th>" for h in header)
        + "</tr></thead><tbody>"
    ]
    for i, row in enumerate(rows):
        rc = f' class="{row_classes[i]}"' if row_classes and row_classes[i] else ""
        out.append(f"<tr{rc}>" + "".join(f"<td>{_cell_html(c)}</td>" for c in row) + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def _svg_img(svg: str, alt: str) -> str:
    data = base64.b64encode(svg.encode()).decode()
    return f'<img class="plot" alt="{html.escape(alt)}" src="data:image/svg+xml;base64,{data}">'


def retrained_lines(summary: dict[str, Any]) -> list[str]:
    """One line per run trained again because its cell's settings changed since it
    last ran (:mod:`modiff.cell_settings`): the old run is not reused, and is kept."""
    return [
        f"{r['name']}: trained again: its settings changed (old run kept at {', '.join(r['kept_at'])})"
        for r in summary.get("retrained") or []
    ]


def write_report(summary: dict[str, Any], source: Path, out: Path, records: list[dict[str, Any]]) -> tuple[Path, Path]:
    """Write ``summary.json``, ``report.md`` (with its SVG files) and ``report.html`` into ``out``.

    ``summary`` is the ablation's analysis (:func:`modiff.ablation.analyse`) of
    ``records``, ``source`` the ablation file: the report only shows them."""
    atomic_write_json(out / "summary.json", summary)
    charts = curve_charts(summary, records)
    losses = loss_chart(summary, records)
    verdicts_svg = verdict_chart(summary)
    if verdicts_svg is not None:
        atomic_write_text(out / "verdicts.svg", verdicts_svg)
    for metric, svg in charts.items():
        atomic_write_text(out / f"curve-{metric}.svg", svg)
    atomic_write_text(out / "losses.svg", losses)
    v_header, v_rows = verdict_table(summary)
    c_header, c_rows = compact_table(summary)
    f_header, f_rows = full_table(summary)
    r_header, r_rows = runs_table(summary, records)
    failed = [r for r in records if r.get("status") != "done"]
    samples = [
        (c["name"], next((r for r in records if (r.get("group") or r["name"]) == c["name"] and r.get("grid")), None))
        for c in summary["cells"]
    ]

    # -- Markdown ---------------------------------------------------------
    md = [
        f"# {summary['title']}",
        "",
        f"From `{source}` over `{', '.join(summary['base'])}`. {_intro(summary)}",
        "",
    ]
    md += [f"- {line}" for line in retrained_lines(summary)] + ([""] if summary.get("retrained") else [])
    if failed:
        md += [f"**{len(failed)} run(s) failed** (rerun the same command to retry them):", ""]
        md += [f"- `{r['name']}`: {r.get('error', '?')}" for r in failed] + [""]
    pending = summary.get("pending") or []
    if pending:
        md += [f"**{len(pending)} run(s) not finished yet** (the grid is still running or was stopped):", ""]
        md += [f"- `{name}`" for name in pending] + [""]
    if v_rows:
        md += ["## Verdicts", ""]
        md += _md_table(v_header, [[t.replace("|", ": ", 1) if "|" in t else t for t, _ in row] for row in v_rows])
        md += ["", METHOD + error_text(summary), ""]
        md += ["![every comparison's difference and interval](verdicts.svg)", ""] if verdicts_svg else []
    md += ["## Cells", ""] + _md_table(c_header, c_rows) + [""]
    if charts:
        md += ["## Quality against training time", "", CURVES_NOTE, ""]
        md += [f"![{summary['names'].get(m, m)}](curve-{m}.svg)" for m in charts] + [""]
    md += ["<details><summary>Every metric</summary>", ""] + _md_table(f_header, f_rows) + ["", "</details>", ""]
    md += ["<details><summary>Every run</summary>", ""] + _md_table(r_header, r_rows) + ["", "</details>", ""]
    if any(r for _, r in samples):
        md += ["<details><summary>Samples (same prompts and seeds in every cell)</summary>", ""]
        md += [f"**{name}**\n\n![{name}]({r['grid']})\n" for name, r in samples if r]
        md += ["</details>", ""]
    md += ["<details><summary>Denoiser loss</summary>", "", "![losses](losses.svg)", "", "</details>", ""]
    md_path = out / "report.md"
    atomic_write_text(md_path, "\n".join(md))

    # -- HTML -------------------------------------------------------------
    verdicts = [
        '<table class="verdicts"><thead><tr>'
        + "".join(f"<th>{html.escape(h)}</th>" for h in v_header)
        + "</tr></thead><tbody>"
    ]
    for row in v_rows:
        cells = []
        for text, cls in row:
            if "|" in text and cls in ("a", "b", "ns"):
                word, diff = text.split("|", 1)
                diff, _, note = diff.partition(" (")
                note_html = f'<br><span class="note">({html.escape(note)}</span>' if note else ""
                cells.append(f'<td class="{cls}"><b>{html.escape(word)}</b><br>{_cell_html(diff)}{note_html}</td>')
            else:
                cells.append(f'<td class="{cls}">{html.escape(text)}</td>')
        verdicts.append("<tr>" + "".join(cells) + "</tr>")
    verdicts.append("</tbody></table>")
    failed_html = "".join(f'<p class="retrained">{html.escape(line)}</p>' for line in retrained_lines(summary))
    if failed:
        items = "".join(
            f"<li><code>{html.escape(r['name'])}</code>: {html.escape(r.get('error', '?'))}</li>" for r in failed
        )
        failed_html = (
            f'<div class="failed"><b>{len(failed)} run(s) failed</b> (rerun the same command to retry them):'
            f"<ul>{items}</ul></div>"
        )
    if pending:
        items = "".join(f"<li><code>{html.escape(name)}</code></li>" for name in pending)
        failed_html += (
            f'<div class="pending"><b>{len(pending)} run(s) not finished yet</b> '
            f"(the grid is still running or was stopped):<ul>{items}</ul></div>"
        )
    sample_html = []
    for name, r in samples:
        grid = out / r["grid"] if r else None
        if grid is not None and grid.is_file():
            data = base64.b64encode(grid.read_bytes()).decode()
            sample_html.append(
                f'<figure><img alt="{html.escape(name)}" src="data:image/png;base64,{data}">'
                f"<figcaption>{html.escape(name)} (seed {r['seed']})</figcaption></figure>"
            )
    run_classes = ["failed" if r.get("status") != "done" else "" for r in records]
    plots = "".join(_svg_img(svg, summary["names"].get(m, m)) for m, svg in charts.items())
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(summary["title"])}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5em auto; padding: 0 1em; max-width: 1360px; color: #222; }}
table {{ border-collapse: collapse; margin: 0.5em 0; }}
th, td {{ border: 1px solid #ccc; padding: 4px 8px; text-align: right; vertical-align: top; }}
th {{ background: #f4f4f4; }}
td:first-child, th:first-child {{ text-align: left; }}
table.verdicts td.claim {{ max-width: 22em; text-align: left; }}
table.verdicts td.cellname {{ text-align: left; font-family: monospace; }}
td.a, td.b {{ background: #e8f5e9; }} td.ns {{ color: #666; }}
span.ci {{ font-size: 0.85em; color: #555; white-space: nowrap; }}
span.note {{ font-size: 0.8em; color: #777; }}
tr.failed td {{ background: #fee; }}
div.failed {{ background: #fee; border: 1px solid #e99; padding: 0.5em 1em; }}
.scroll {{ overflow-x: auto; max-width: 100%; }}
.plots {{ display: flex; flex-wrap: wrap; gap: 8px; }}
img.plot {{ max-width: 100%; }}
figure {{ display: inline-block; vertical-align: top; margin: 0 1em 1em 0; }}
figure img {{ image-rendering: pixelated; max-width: 100%; }}
p.method {{ font-size: 0.9em; color: #555; max-width: 60em; }}
details {{ margin: 0.8em 0; }} summary {{ cursor: pointer; font-weight: bold; }}
</style></head>
<body>
<h1>{html.escape(summary["title"])}</h1>
<p>From <code>{html.escape(str(source))}</code>. {html.escape(_intro(summary))}</p>
{failed_html}
<h2>Verdicts</h2>
{"".join(verdicts) if v_rows else '<p>The file names no comparison ([[compare]] a = "...", b = "...").</p>'}
<p class="method">{html.escape(METHOD + error_text(summary))}</p>
{_svg_img(verdicts_svg, "every comparison's difference and interval") if verdicts_svg else ""}
<h2>Cells</h2>
<div class="scroll">{_html_table(c_header, c_rows, "compact")}</div>
<h2>Quality against training time</h2>
<p class="method">{html.escape(CURVES_NOTE)}</p>
<div class="plots">{plots or '<p>No learning curve was recorded (set "train.eval_every").</p>'}</div>
<details><summary>Every metric (mean and 95 % interval)</summary>
<div class="scroll">{_html_table(f_header, f_rows, "full")}</div></details>
<details><summary>Every run</summary>
<div class="scroll">{_html_table(r_header, r_rows, "runs", run_classes)}</div></details>
<details><summary>Samples (same prompts and seeds in every cell)</summary>
{"".join(sample_html) or "<p>No samples.</p>"}</details>
<details><summary>Denoiser loss</summary>{_svg_img(losses, "denoiser loss")}</details>
<script>
window.addEventListener("load", function () {{
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (i) {{ return i.complete && i.naturalWidth > 0; }}).length;
  document.body.setAttribute("data-images", ok + "/" + imgs.length);
  document.body.setAttribute("data-plots", String(document.querySelectorAll("img.plot").length));
  document.body.setAttribute("data-comparisons", String(document.querySelectorAll("table.verdicts tbody tr").length));
  document.body.setAttribute("data-cells", String(document.querySelectorAll("table.compact tbody tr").length));
  document.body.setAttribute("data-width", String(document.documentElement.scrollWidth));
}});
</script>
</body></html>
"""
    html_path = out / "report.html"
    atomic_write_text(html_path, page)
    return md_path, html_path
