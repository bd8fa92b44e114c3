"""A run report: one self-contained HTML page (``RUN/report.html``) to read offline or send.

    title       the run folder's name
    config      every field of config.json
    curves      f_gap, langevin_move, gen_loss, gen_spread, des_slope, des_energy, sec_per_it from
                stats.jsonl (those logged), one matplotlib PNG each
    progress    a few evenly spaced samples-*.png grids per kind (gen, rev, des) with their step
    metrics     the lines of metrics.jsonl (``coopnets eval``) as a table

Every image is embedded as a base64 ``data:`` URI and the page links to nothing, so it works
without network access. Needs matplotlib (``pip install 'coopnets[report]'``).
"""
from __future__ import annotations

import base64
import html
import io
import json
import re
from pathlib import Path

from .errors import UserError
from .export import read_jsonl

CURVES = ("f_gap", "langevin_move", "gen_loss", "gen_spread", "des_slope", "des_energy",
          "sec_per_it")
GRID_RE = re.compile(r"^samples-([a-z]+)-(\d+)\.png$")
GRID_KINDS = {"gen": "generator", "rev": "revised by the descriptor", "des": "descriptor chains"}
GRIDS_PER_KIND = 4
METRIC_COLUMNS = ("metric", "value", "std", "mode", "num_samples", "seed", "ref", "time")

STYLE = """body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:2px 8px;
text-align:left;font-size:90%}figure{display:inline-block;margin:0 1em 1em 0;vertical-align:top}
figcaption{font-size:90%;color:#555}img.grid{image-rendering:pixelated;min-width:200px;max-width:100%}"""


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _plot(steps: list, values: list, name: str) -> bytes:
    """One training curve as PNG bytes, drawn by the Agg canvas (no pyplot, no global backend)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(4.5, 2.8), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.plot(steps, values, lw=1, marker="o" if len(steps) < 30 else None, ms=3)
    ax.set_xlabel("step")
    ax.set_title(name)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})  # no matplotlib URL in the file
    return buf.getvalue()


def _spread(items: list, k: int) -> list:
    """``k`` evenly spaced items of ``items``, first and last included."""
    if len(items) <= k:
        return items
    return [items[round(i * (len(items) - 1) / (k - 1))] for i in range(k)]


def progress_grids(run_dir: Path, per_kind: int = GRIDS_PER_KIND) -> dict[str, list[tuple[int, Path]]]:
    """{kind: [(step, path), ...]} of the run's sample grids, evenly spaced over training."""
    found: dict[str, list] = {}
    for p in run_dir.iterdir():
        m = GRID_RE.match(p.name)
        if m:
            found.setdefault(m.group(1), []).append((int(m.group(2)), p))
    return {kind: _spread(sorted(found[kind]), per_kind) for kind in sorted(found)}


def _table(rows: list[list], head: list | None = None) -> str:
    e = html.escape
    out = ["<table>"]
    if head:
        out.append("<tr>" + "".join(f"<th>{e(str(h))}</th>" for h in head) + "</tr>")
    out += ["<tr>" + "".join(f"<td>{e(_cell(v))}</td>" for v in row) + "</tr>" for row in rows]
    return "\n".join(out + ["</table>"])


def _cell(v) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    return "" if v is None else str(v)


def write_report(run_dir, out=None) -> Path:
    """Write the HTML report of a run folder to ``out`` (default RUN/report.html); returns it."""
    run = Path(run_dir).expanduser()
    if not run.is_dir():
        raise UserError(f"{run} is not a run folder" + (" (it does not exist)" if not run.exists() else ""))
    try:
        config = json.loads((run / "config.json").read_text())
    except FileNotFoundError:
        raise UserError(f"{run} is not a run folder: it has no config.json") from None
    except json.JSONDecodeError as e:
        raise UserError(f"{run / 'config.json'} is not valid JSON: {e}") from None
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise UserError("coopnets report needs matplotlib: pip install 'coopnets[report]'") from None
    e = html.escape
    body = [f"<h1>Run {e(run.name)}</h1>"]
    body += ["<h2>Configuration</h2>", _table([[k, v] for k, v in config.items()], ["field", "value"])]

    stats = read_jsonl(run / "stats.jsonl")
    body.append("<h2>Training curves</h2>")
    curves = [name for name in CURVES if any(name in r for r in stats)]
    if not curves:
        body.append("<p>No training statistics logged yet (stats.jsonl).</p>")
    for name in curves:
        pts = [(r["step"], r[name]) for r in stats if name in r and "step" in r]
        png = _plot([s for s, _ in pts], [v for _, v in pts], name)
        body.append(f'<figure><img alt="{e(name)}" src="{_data_uri(png)}">'
                    f"<figcaption>{e(name)}</figcaption></figure>")

    body.append("<h2>Samples over training</h2>")
    grids = progress_grids(run)
    if not grids:
        body.append("<p>No sample grids saved yet (samples-*.png).</p>")
    for kind, items in grids.items():
        body.append(f"<h3>{e(GRID_KINDS.get(kind, kind))}</h3><div>")
        for step, path in items:
            body.append(f'<figure><img class="grid" alt="{e(kind)} step {step}" '
                        f'src="{_data_uri(path.read_bytes())}"><figcaption>step {step}</figcaption></figure>')
        body.append("</div>")

    metrics = read_jsonl(run / "metrics.jsonl")
    if metrics:
        body += ["<h2>Evaluations</h2>",
                 _table([[m.get(c) for c in METRIC_COLUMNS] for m in metrics], list(METRIC_COLUMNS))]

    page = ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">"
            f"<title>coopnets run {e(run.name)}</title><style>{STYLE}</style></head>\n<body>\n"
            + "\n".join(body) + "\n</body></html>\n")
    dest = Path(out).expanduser() if out else run / "report.html"
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(page, encoding="utf-8")
    return dest
