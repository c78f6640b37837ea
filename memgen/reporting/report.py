"""Logging an :class:`~memgen.analysis.results.Analysis` to MLflow, and the text summary of a run.

Summaries go to metrics; per-neuron and per-item data go to table artifacts; figures as PNG.
With ``step`` (a training epoch, from a callback) only metrics are logged, so curves show how
the differentiation emerges without flooding the artifact store.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from memgen.analysis.results import Analysis
from memgen.numbers import rounded
from memgen.replicates.claims import ClaimResult
from memgen.reporting import html_report
from memgen.reporting.headline import description, headline
from memgen.reporting.plots.consistency import overlap_matrix_figure
from memgen.reporting.plots.kinds import kinds_figure
from memgen.reporting.plots.neurons import abs_r_heatmap
from memgen.reporting.plots.probes import probe_accuracy_by_layer
from memgen.reporting.plots.steering import success_vs_alpha
from memgen.tracking.run import TrackedRun


def finite(metrics: Mapping[str, float]) -> dict[str, float]:
    """MLflow rejects NaN in some stores (e.g. a direction with no item to steer): keep finite
    numbers only."""
    return {k: float(v) for k, v in metrics.items()
            if v is not None and math.isfinite(float(v))}


def log_summary(run: TrackedRun, metrics: Mapping[str, float], step: int | None) -> None:
    """End-of-run numbers: a metric that already has a curve (a callback logged it by epoch)
    continues it at ``step``, after every callback's, so the run table shows the final value;
    a metric logged only once goes without a step (MLflow's default, 0), so cross-run charts
    show one value per run instead of dots scattered at each run's last epoch."""
    if not metrics:
        return
    curves = set(run.client.get_run(run.run_id).data.metrics)
    shown = {k: rounded(v) for k, v in metrics.items()}  # 4 significant digits
    run.log_metrics({k: v for k, v in shown.items() if k in curves}, step=step)
    run.log_metrics({k: v for k, v in shown.items() if k not in curves})


def log_analysis(run: TrackedRun, analysis: Analysis, step: int | None = None,
                 artifacts: bool = True) -> dict[str, bytes]:
    """Metrics at ``step`` (a training epoch); with ``artifacts`` also tables and figures.

    With ``artifacts`` (the final analysis of the kept checkpoint) the metrics are logged by
    :func:`log_summary`. Returns the figures as PNG by artifact path, for ``report.html``.
    """
    if not artifacts:
        run.log_metrics(finite(analysis.metrics), step=step)
        return {}
    log_summary(run, finite(analysis.metrics), step)
    pngs: dict[str, bytes] = {}
    run.set_tags({f"skipped/{stage}": why[:5000] for stage, why in analysis.skipped.items()})
    b = analysis.behaviors
    rows = [{"group": g, "variant": k, "prompt": ex.prompt, "output": b.labelled.outputs[g][k],
             "behavior": b.labelled.labels[g][k].value, "mem_answer": ex.mem_answer,
             "gen_answer": ex.gen_answer}
            for g, group in enumerate(b.labelled.groups) for k, ex in enumerate(group)]
    import pandas as pd  # noqa: PLC0415

    run.log_frame(pd.DataFrame(rows), "behavior/outputs.parquet")
    run.log_frame(b.split_table(), "behavior/splits.parquet")
    run.log_frame(b.pair_table(), "behavior/pairs.parquet")
    if analysis.neurons is not None:
        run.log_frame(analysis.neurons.table, "neurons/neurons.parquet")
        pngs["neurons/abs_r_heatmap.png"] = run.log_figure(
            abs_r_heatmap(analysis.neurons.table), "neurons/abs_r_heatmap.png")
        run.log_dict(analysis.neurons.chance, "neurons/shuffle_control.json")
    if analysis.probes is not None:
        run.log_frame(analysis.probes.table, "probes/probes.csv")
        pngs["probes/accuracy_by_layer.png"] = run.log_figure(
            probe_accuracy_by_layer(analysis.probes), "probes/accuracy_by_layer.png")
        run.set_tags(analysis.probes.tags())
    if analysis.steering is not None:
        run.log_frame(analysis.steering.table(), "steering/transitions.csv")
        run.log_frame(analysis.steering.items, "steering/items.parquet")
    if analysis.tuning is not None:
        run.log_frame(analysis.tuning.scores, "steering/tuning.csv")
        if analysis.tuning.grid is not None:
            run.log_frame(analysis.tuning.grid, "steering/tuning_grid.csv")
    kinds = getattr(analysis, "kinds", None)
    if kinds is not None:
        run.log_frame(kinds.table, "steering/kinds.csv")
        if kinds.tuning is not None:
            run.log_frame(kinds.tuning.scores, "steering/kinds_tuning.csv")
        # what each direction steered with, as a column of the MLflow runs table
        run.set_tags({f"memgen.steered.{d}": "/".join(c) for d, c in kinds.picks.items()})
        if kinds.ceiling is not None:
            run.log_frame(kinds.ceiling, "steering/ceiling.csv")
        if len(kinds.table):
            pngs["steering/kinds.png"] = run.log_figure(kinds_figure(kinds.table),
                                                        "steering/kinds.png")
    if analysis.grid is not None and len(analysis.grid):
        run.log_frame(analysis.grid, "steering/grid.csv")
        tuned = ((analysis.steering.k, analysis.steering.alpha)
                 if analysis.steering is not None else None)
        pngs["steering/success_vs_alpha.png"] = run.log_figure(
            success_vs_alpha(analysis.grid, tuned), "steering/success_vs_alpha.png")
    if analysis.consistency is not None:
        run.log_frame(analysis.consistency.table(), "consistency/intra.csv")
    if analysis.transfer is not None:
        run.log_frame(analysis.transfer.table(), "consistency/transfer.csv")
    if analysis.inter is not None:
        pngs["consistency/inter_jaccard.png"] = log_overlap_matrix(
            run, analysis.inter.jaccard, analysis.inter.expected)
        run.log_frame(analysis.inter.cross_steering, "consistency/cross_steering.csv")
    return pngs


def log_overlap_matrix(run: TrackedRun, matrix, expected=None) -> bytes:
    """The task-by-task overlap table and heatmap (inter-task consistency)."""
    run.log_frame(matrix.reset_index(names="task"), "consistency/inter_jaccard.csv")
    return run.log_figure(overlap_matrix_figure(matrix, expected),
                          "consistency/inter_jaccard.png")


def kept_epoch(best_checkpoint: str | None) -> float | None:
    """The epoch of the kept checkpoint, from its file name (``best-007.ckpt``)."""
    found = re.search(r"(?:best-|epoch=)(\d+)", Path(best_checkpoint or "").name)
    return float(found.group(1)) if found else None


def finish_run(run: TrackedRun, metrics: dict[str, float], best_checkpoint: str | None = None,
               analysis: Analysis | None = None, claims: Sequence[ClaimResult] | None = None,
               figures: Mapping[str, bytes] | None = None) -> float:
    """What the UI shows first: ``val/best_*`` and ``kept/epoch`` as metrics, the headline as
    the run's description, and ``report.html``. Returns the seconds it took."""
    started = time.perf_counter()
    extra = {k: v for k, v in metrics.items() if k.startswith("val/best_")}
    epoch = kept_epoch(best_checkpoint)
    if epoch is not None:
        extra["kept/epoch"] = epoch
    run.log_metrics({k: rounded(v) for k, v in finite(extra).items()})
    metrics |= extra
    info = run.client.get_run(run.run_id)
    name, tags = info.info.run_name, info.data.tags
    run.describe(description(metrics, claims))
    subtitle = (f"task {tags.get('task', '?')} · model {tags.get('model.arch', '?')} "
                f"({tags.get('model.kind', '?')}) · seed {tags.get('seed', '?')} · run "
                f"{run.run_id}")
    sections = [("Claims scorecard", html_report.scorecard(claims) if claims else ""),
                ("Figures", html_report.figures(figures or {})),
                *html_report.analysis_sections(analysis),
                ("Stage timings (s)", html_report.timings(metrics))]
    run.log_text(html_report.page(name, subtitle, headline(metrics, claims), sections),
                 "report.html")
    return time.perf_counter() - started


def _steering_rows_inline(result) -> str:
    parts = []
    for direction, t in result.selected.items():
        controls = ", ".join(f"{name} {_pct(by[direction].success)}"
                             for name, by in result.controls.items())
        parts.append(f"{direction} {_pct(t.success)} of {t.n} ({controls})")
    return "; ".join(parts)


def _pct(x: float | None) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{100 * x:5.1f}%"


def summary(analysis: Analysis, top: int = 10) -> str:
    """A few lines a researcher reads first: pairs, top neurons, probes, steering, consistency."""
    m = analysis.metrics
    lines = ["", "== behavior on the conflict set ==",
             f"variants {int(m['behavior/n_variants'])}: MEM {_pct(m['behavior/mem_rate'])}  "
             f"GEN {_pct(m['behavior/gen_rate'])}  OTHER {_pct(m['behavior/other_rate'])}",
             f"pairs (MEM vs GEN on perturbations of one example): {int(m['pairs/n'])} "
             f"from {int(m['pairs/n_examples_with_pairs'])} examples; selection items "
             f"{int(m['pairs/n_selection_items'])}, evaluation items "
             f"{int(m['pairs/n_evaluation_items'])}"]
    if analysis.neurons is not None:
        n = analysis.neurons
        lines += ["", f"== top neurons by |r| (of {len(n.table)}; selected "
                      f"{len(n.selection)}; chance max |r| q95 = {n.chance['max_abs_r_q']:.3f}) =="]
        cols = ["rank", "site", "index", "r", "nmd", "mean_mem", "mean_gen"]
        lines.append(n.table[cols].head(top).to_string(index=False, float_format="%.3f"))
    if analysis.probes is not None:
        p = analysis.probes
        lines += ["", "== probes (trained on selection, scored on evaluation) ==",
                  f"best site {p.best_site}: acc {p.best_acc:.3f}   input-only (prompt tokens) "
                  f"{_fmt(p.input_only_acc)}   shuffled labels {p.shuffled_acc:.3f}   "
                  f"majority {p.majority_acc:.3f}   top-k neurons {_fmt(p.topk_acc)}"]
        if p.lens is not None and p.lens.acc:
            best = max(p.lens.acc, key=p.lens.acc.__getitem__)
            lines.append(f"answer lens (each item's own MEM - GEN answer, through the final "
                         f"norm): best {best} {p.lens.acc[best]:.3f}; first answer tokens "
                         f"differ on {p.lens.distinct_share:.0%} of evaluation items")
    if analysis.steering is not None:
        s = analysis.steering
        lines += ["", f"== steering (k={s.k}, alpha={s.alpha:g}) on the evaluation split =="]
        if analysis.tuning is not None:
            t = analysis.tuning
            lines.append(f"(top {100 * t.top_fraction:g}% and alpha {t.alpha:g} picked on the "
                         f"selection split out of {len(t.scores)} settings)")
        for direction in ("to_gen", "to_mem"):
            sel = s.selected.get(direction)
            if sel is None:
                continue
            low, high = sel.ci
            row = (f"{direction}: success {_pct(sel.success)} [{_pct(low)}, {_pct(high)}] "
                   f"of {sel.n}")
            for name, by_direction in s.controls.items():
                row += f" | {name} {_pct(by_direction[direction].success)}"
            lines.append(row)
        if "side/clean_acc_drop" in m:
            lines.append(f"clean inputs: accuracy {_pct(m['side/clean_acc'])} -> "
                         f"{_pct(m['side/clean_acc_steered'])} (worst direction), "
                         f"KL {m['side/kl']:.4f}")
    if analysis.consistency is not None:
        o = analysis.consistency.overlap
        lines += ["", "== intra-task consistency (disjoint halves of the pairs) ==",
                  f"jaccard {o.jaccard:.3f} vs chance {o.expected_jaccard:.3f} "
                  f"(enrichment {o.enrichment:.1f}x, p={o.p_value:.2g}); "
                  f"r correlation {analysis.consistency.r_corr:.3f}"]
        for key, c in analysis.consistency.comparisons.items():
            lines.append(f"{key}: jaccard {c.overlap.jaccard:.3f} vs chance "
                         f"{c.overlap.expected_jaccard:.3f} (p={c.overlap.p_value:.2g}; "
                         f"{c.n_pairs_a} vs {c.n_pairs_b} pairs); r correlation {c.r_corr:.3f}")
    if analysis.transfer is not None:
        lines.append("half B's neurons steering half A's items: "
                     + _steering_rows_inline(analysis.transfer))
    if analysis.inter is not None:
        lines += ["", "== inter-task consistency (one model, several tasks) ==",
                  "jaccard (chance in brackets):"]
        j, e = analysis.inter.jaccard, analysis.inter.expected
        for a in j.index:
            lines.append(f"  {a:>12}: " + "  ".join(
                f"{b} {j.loc[a, b]:.3f} [{e.loc[a, b]:.3f}]" for b in j.columns if b != a))
        cross = analysis.inter.cross_steering
        if len(cross):
            lines.append("cross-task steering success (source neurons -> target items):")
            lines.append(cross.pivot_table(index=["source", "direction"], columns="target",
                                           values="success").to_string(float_format="%.2f"))
    for stage, why in analysis.skipped.items():
        lines.append(f"(skipped {stage}: {why})")
    return "\n".join(lines)


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"
