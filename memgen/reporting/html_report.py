"""``report.html``: one self-contained page per run that the MLflow artifact viewer renders.

Researchers would rather look than read: the page leads with the headline and the claims
scorecard, then every figure inline (base64 PNG, so the page needs nothing else from the
store), then the tables behind them, cut to their top rows.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Iterable, Mapping, Sequence

import pandas as pd

from memgen.replicates.claims import ClaimResult

_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:16px;color:#1b1b1b;
max-width:1100px}
h1{font-size:20px;margin:0 0 4px} h2{font-size:16px;margin:22px 0 8px;border-bottom:1px solid #ddd}
.sub{color:#666;font-size:13px;margin-bottom:10px}
pre.headline{background:#f6f8fa;padding:10px;font-size:13px;white-space:pre-wrap}
table{border-collapse:collapse;font-size:12px;margin:6px 0}
th,td{border:1px solid #ddd;padding:3px 7px;text-align:right} th{background:#f3f3f3}
td.l,th.l{text-align:left} .pass{background:#e3f6e3} .fail{background:#fbe3e3}
.na{color:#888} figure{margin:8px 0 18px} figure img{max-width:100%;border:1px solid #eee}
figcaption{font-size:12px;color:#555}
"""


def esc(text: object) -> str:
    return html.escape(str(text))


def fmt(value: object) -> str:
    """Numbers at 3 significant digits (a table is read, not recomputed); text as is."""
    if isinstance(value, bool) or value is None:
        return esc(value)
    if isinstance(value, (int, float)):
        if isinstance(value, float) and not math.isfinite(value):
            return "n/a"
        return f"{value:.3g}" if isinstance(value, float) and not value.is_integer() else \
            f"{int(value)}"
    return esc(value)


def table(frame: pd.DataFrame | None, max_rows: int = 20, note: str = "") -> str:
    """An HTML table of the first ``max_rows`` rows; a note says how many there are."""
    if frame is None or frame.empty:
        return "<p class='na'>none</p>"
    head = frame.head(max_rows)
    cells = ["<table><tr>" + "".join(f"<th class='l'>{esc(c)}</th>" for c in head.columns)
             + "</tr>"]
    for row in head.itertuples(index=False):
        cells.append("<tr>" + "".join(
            f"<td class='{'' if isinstance(v, (int, float)) else 'l'}'>{fmt(v)}</td>"
            for v in row) + "</tr>")
    cells.append("</table>")
    more = f" (first {max_rows} of {len(frame)} rows)" if len(frame) > max_rows else ""
    if note or more:
        cells.append(f"<div class='sub'>{esc(note)}{more}</div>")
    return "".join(cells)


def scorecard(claims: Sequence[ClaimResult] | pd.DataFrame | None) -> str:
    """The claims as a table, each verdict coloured."""
    if claims is None or len(claims) == 0:
        return "<p class='na'>no claims scored</p>"
    frame = claims if isinstance(claims, pd.DataFrame) else pd.DataFrame(
        [c.row() for c in claims])
    rows = ["<table><tr>" + "".join(f"<th class='l'>{esc(c)}</th>" for c in frame.columns)
            + "</tr>"]
    for row in frame.to_dict("records"):
        verdict = str(row.get("verdict", row.get("n_pass", "")))
        cls = {"pass": "pass", "fail": "fail"}.get(verdict, "")
        rows.append(f"<tr class='{cls}'>" + "".join(
            f"<td class='{'' if isinstance(v, (int, float)) else 'l'}'>{fmt(v)}</td>"
            for v in row.values()) + "</tr>")
    return "".join(rows) + "</table>"


def figures(pngs: Mapping[str, bytes]) -> str:
    """Every PNG inline, captioned with its artifact path."""
    if not pngs:
        return "<p class='na'>no figures</p>"
    return "".join(
        f"<figure><img alt='{esc(path)}' src='data:image/png;base64,"
        f"{base64.b64encode(png).decode()}'><figcaption>{esc(path)}</figcaption></figure>"
        for path, png in pngs.items())


def page(title: str, subtitle: str, headline: Iterable[str],
         sections: Sequence[tuple[str, str]]) -> str:
    """The whole document: title, headline block, then ``(heading, html)`` sections."""
    body = [f"<h1>{esc(title)}</h1><div class='sub'>{esc(subtitle)}</div>",
            f"<pre class='headline'>{esc(chr(10).join(headline))}</pre>"]
    body += [f"<h2>{esc(heading)}</h2>{content}" for heading, content in sections if content]
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(title)}</title>"
            f"<style>{_STYLE}</style></head><body>{''.join(body)}</body></html>")


def analysis_sections(analysis) -> list[tuple[str, str]]:
    """Top neurons, steering with its controls and CIs, probes, consistency: the tables."""
    out: list[tuple[str, str]] = []
    if analysis is None:
        return out
    if analysis.neurons is not None:
        cols = [c for c in ("rank", "site", "index", "r", "nmd", "mean_mem", "mean_gen")
                if c in analysis.neurons.table.columns]
        out.append(("Top neurons by |r|", table(analysis.neurons.table[cols], 15,
                                                "full table: neurons/neurons.parquet")))
    if analysis.steering is not None:
        s = analysis.steering
        note = f"k={s.k}, alpha={s.alpha:g}, evaluation split; success with 95% CI"
        out.append(("Steering vs controls", table(s.table(), 40, note)))
    kinds = getattr(analysis, "kinds", None)
    if kinds is not None and len(kinds.table):
        cols = [c for c in ("kind", "positions", "sites", "direction", "k", "alpha", "n",
                            "success", "ci_low", "ci_high", "strongest_control",
                            "max_control_success", "clean_acc_drop", "kl", "margin_shift",
                            "wrong_way") if c in kinds.table.columns]
        pick = kinds.picked()
        ceiling = ""
        if kinds.ceiling is not None and len(kinds.ceiling):
            ceiling = (f"; GEN->MEM ceiling (full-site interchange reaches the MEM answer): "
                       f"{kinds.ceiling['reachable'].mean():.0%} of {len(kinds.ceiling)}")
        note = (f"evaluation split, each at its selection-split pick; steered: {pick}; "
                f"margin_shift = mean move of log p(MEM)-log p(GEN) toward the target; "
                f"wrong_way = share moved away{ceiling}")
        out.append(("Intervention kinds", table(kinds.table[cols], 60, note)))
    if analysis.probes is not None:
        out.append(("Probes by site", table(analysis.probes.table, 40)))
    if analysis.consistency is not None:
        out.append(("Consistency", table(analysis.consistency.table(), 20)))
    if analysis.skipped:
        out.append(("Skipped stages", "<ul>" + "".join(
            f"<li>{esc(k)}: {esc(v)}</li>" for k, v in analysis.skipped.items()) + "</ul>"))
    return out


def timings(metrics: Mapping[str, float]) -> str:
    """``time/<stage>_s`` as a table, slowest first: where the run's wall time went
    (``analysis`` and ``total`` are sums that contain the stages around them)."""
    rows = [{"stage": key.removeprefix("time/").removesuffix("_s"), "seconds": float(value)}
            for key, value in metrics.items()
            if key.startswith("time/") and key.endswith("_s") and math.isfinite(float(value))]
    frame = pd.DataFrame(rows, columns=["stage", "seconds"])
    return table(frame.sort_values("seconds", ascending=False, kind="stable"), 40)

