"""What the MLflow UI shows a researcher: the experiment opens on its runs, runs have readable
names, descriptions and a report page, numbers are rounded, figures keep their legends out of
the curves; a slow test looks at it all in headless Chromium."""

from __future__ import annotations

import base64
import io
import logging
import os
import re
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from memgen.config import compose
from memgen.numbers import clean, rounded
from memgen.replicates.claims import ClaimResult
from memgen.reporting import html_report
from memgen.reporting.headline import description, headline
from memgen.reporting.plots.steering import success_vs_alpha
from memgen.reporting.report import kept_epoch, log_summary
from memgen.runtime.quiet import quiet_library_noise
from memgen.tracking.links import MODE, run_url, ui_base
from memgen.tracking.run import (
    EXPERIMENT_KIND,
    EXPERIMENT_KIND_TAG,
    applicable,
    default_run_name,
    flatten,
    get_experiment_id,
    tracked_run,
)
from tests.conftest import tiny_overrides
from tests.helpers_ui import memgen_ui

ROOT = Path(__file__).resolve().parents[1]

METRICS = {
    "kept/mem_rate": 0.35, "kept/gen_rate": 0.55, "kept/other_rate": 0.1, "kept/epoch": 7.0,
    "val/best_behavior_balance": 0.7, "behavior/n_variants": 900.0, "behavior/mem_rate": 0.3,
    "behavior/gen_rate": 0.6, "behavior/other_rate": 0.1, "pairs/n": 113.0,
    "pairs/n_examples_with_pairs": 60.0, "pairs/n_selection_items": 80.0,
    "pairs/n_evaluation_items": 70.0, "probe/best_acc": 0.91,
    "probe/baseline/input_only_acc": 0.62, "probe/baseline/shuffled_acc": 0.5,
    "probe/baseline/majority_acc": 0.55, "probe/topk_acc": 0.88, "steer/tuned/k": 30.0,
    "steer/tuned/alpha": 9.0, "steer/to_gen/success": 0.8, "steer/to_gen/ci_low": 0.7,
    "steer/to_gen/ci_high": 0.88, "steer/to_gen/control_random/success": 0.05,
    "steer/to_mem/success": 0.6, "steer/to_mem/ci_low": 0.5, "steer/to_mem/ci_high": 0.7,
    "steer/to_mem/control_random/success": 0.02, "side/clean_acc": 0.95,
    "side/clean_acc_steered": 0.94, "side/clean_acc_drop": 0.01, "side/kl": 0.004,
    "consistency/intra/jaccard": 0.4, "consistency/intra/expected_jaccard": 0.06,
    "consistency/intra/p_value": 1e-9, "consistency/intra/r_corr": 0.7,
}
CLAIMS = [ClaimResult("steering", "success - control", 0.55, ">=", 0.2, "to_gen 0.8"),
          ClaimResult("probe", "acc - input only", 0.01, ">=", 0.05, "0.91 vs 0.62"),
          ClaimResult("inter_task", "jaccard", float("nan"), ">=", 0.1, "")]


def _png() -> bytes:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(2, 1))
    fig.subplots().plot([0, 1], [1, 0])
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


# -- numbers, names, params ------------------------------------------------------------------

def test_float32_noise_is_removed_losslessly_and_summaries_keep_four_digits():
    assert clean(float(np.float32(0.86))) == 0.86  # 0.8600000143051147 as a torch metric
    assert clean(7 / 9) == 7 / 9  # float64 arithmetic is left as computed
    assert rounded(7 / 9) == 0.7778
    assert rounded(1.234567e-9) == 1.235e-9
    assert rounded(123457.0) == 123457.0  # counts and parameter totals stay whole
    assert np.isnan(rounded(float("nan")))


def test_run_names_say_what_the_run_is_and_differ_per_run(tmp_path):
    cfg = compose(tiny_overrides(tmp_path, seed=3))
    names = {default_run_name(cfg, "run") for _ in range(20)}
    assert len(names) >= 19  # a 4-hex suffix: same task, model and seed still differ
    assert all(re.fullmatch(r"arithmetic-gpt2-2x32-s3-[0-9a-f]{4}", n) for n in names)
    assert default_run_name(cfg, "replicate").startswith("replicate-arithmetic-")


def test_params_apply_to_the_model_kind(tmp_path):
    scratch = compose(tiny_overrides(tmp_path))
    params = applicable(flatten(scratch), scratch)
    assert "model.n_layer" in params and "trainer.lr" in params
    assert not [k for k in params if k.startswith(("model.lora.", "model.name_or_path"))]
    assert "model.intermediate_size" not in params  # llama only
    lora = compose(tiny_overrides(tmp_path, **{"model.kind": "lora",
                                               "model.name_or_path": "some/base"}))
    params = applicable(flatten(lora), lora)
    assert "model.lora.r" in params and "model.name_or_path" in params
    assert "model.n_layer" not in params


def test_experiment_opens_on_its_runs_and_a_chosen_kind_is_kept(tmp_path):
    cfg = compose(tiny_overrides(tmp_path))
    client = MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    experiment_id = get_experiment_id(client, cfg)
    assert client.get_experiment(experiment_id).tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND
    other = compose(tiny_overrides(tmp_path, **{"tracking.experiment": "older"}))
    old_id = client.create_experiment("older")  # made before memgen set the kind
    assert get_experiment_id(client, other) == old_id
    assert client.get_experiment(old_id).tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND
    client.set_experiment_tag(old_id, EXPERIMENT_KIND_TAG, "genai_development")  # user's pick
    get_experiment_id(client, other)
    assert client.get_experiment(old_id).tags[EXPERIMENT_KIND_TAG] == "genai_development"


def test_a_run_gets_context_tags_previews_of_parquet_and_summaries_without_a_fake_step(
        tmp_path):
    cfg = compose(tiny_overrides(tmp_path))
    with tracked_run(cfg, "run") as run:
        run.log_metrics({"steer/to_gen/success": 0.5}, step=5)  # a callback's curve
        log_summary(run, {"steer/to_gen/success": 7 / 9, "claims/x/value": 1 / 3}, step=20)
        run.log_frame(pd.DataFrame({"rank": range(500), "r": np.linspace(0, 1, 500)}),
                      "neurons/neurons.parquet")
    client = run.client
    info = client.get_run(run.run_id)
    assert info.data.tags["mlflow.source.git.commit"] == info.data.tags["git.commit"]
    assert {"mlflow.user", "mlflow.source.name", "mlflow.source.type"} <= set(info.data.tags)
    assert info.info.run_name.startswith("arithmetic-gpt2-2x32-s0-")
    curve = [(m.step, m.value) for m in client.get_metric_history(run.run_id,
                                                                  "steer/to_gen/success")]
    assert curve == [(5, 0.5), (20, 0.7778)]  # continues its curve, rounded
    once = client.get_metric_history(run.run_id, "claims/x/value")
    assert [(m.step, m.value) for m in once] == [(0, 0.3333)]
    files = {a.path for a in client.list_artifacts(run.run_id, "neurons")}
    assert {"neurons/neurons.parquet", "neurons/neurons_top200.csv"} <= files
    preview = pd.read_csv(client.download_artifacts(run.run_id, "neurons/neurons_top200.csv",
                                                    str(tmp_path)))
    assert list(preview["rank"]) == list(range(200))


# -- headline, description, report page -------------------------------------------------------

def test_headline_is_short_and_names_each_result_against_its_baseline():
    lines = headline(METRICS, CLAIMS)
    assert len(lines) <= 12
    text = "\n".join(lines)
    assert "kept checkpoint (epoch 7, best behavior_balance 0.70): MEM 35%  GEN 55%" in text
    assert "MEM->GEN 80% [70%, 88%]  controls: random 5%" in text
    assert "probe: best acc 0.91 vs input-only 0.62" in text
    assert "drop 1.0 points" in text and "jaccard 0.40 vs chance 0.060" in text
    assert "claims: 1/3 pass; fail: probe; n/a: inter_task" in text
    note = description(METRICS, CLAIMS)
    assert note.startswith("- kept checkpoint") and "`kept/*` are the kept checkpoint's" in note
    # tuned per direction: each direction's own k and alpha on its line
    per_direction = METRICS | {"steer/tuned/to_gen/alpha": 5.0, "steer/tuned/to_mem/alpha": 1.0,
                               "steer/to_gen/k": 102.0, "steer/to_gen/alpha": 5.0,
                               "steer/to_mem/k": 410.0, "steer/to_mem/alpha": 1.0}
    text = "\n".join(headline(per_direction, CLAIMS))
    assert "each direction at its own k and alpha" in text and "k=30" not in text
    assert "MEM->GEN (k=102, alpha 5) 80% [70%, 88%]" in text
    assert "GEN->MEM (k=410, alpha 1) 60% [50%, 70%]" in text


def test_report_page_inlines_figures_scores_claims_and_escapes_text():
    png = _png()
    page = html_report.page("run <1>", "task arithmetic", headline(METRICS, CLAIMS), [
        ("Claims scorecard", html_report.scorecard(CLAIMS)),
        ("Figures", html_report.figures({"steering/success_vs_alpha.png": png})),
        ("Top neurons", html_report.table(pd.DataFrame({"rank": range(30), "r": 0.123456}),
                                          10))])
    assert "<h1>run &lt;1&gt;</h1>" in page
    inline = re.findall(r"src='data:image/png;base64,([^']+)'", page)
    assert [base64.b64decode(x) for x in inline] == [png]
    assert page.count("<tr class='pass'>") == 1 and page.count("<tr class='fail'>") == 1
    assert "first 10 of 30 rows" in page and "<td class=''>0.123</td>" in page


def test_kept_epoch_is_read_from_the_checkpoint_name():
    assert kept_epoch("/x/checkpoints/abc/best-007.ckpt") == 7.0
    assert kept_epoch(None) is None


# -- figures ---------------------------------------------------------------------------------

def test_steering_figure_marks_the_tuned_point_and_keeps_legends_below_the_curves():
    rows = [{"k": k, "alpha": a, "direction": d, "method": m, "success": 0.1 * a / (1 + k),
             "ci_low": 0.0, "ci_high": 0.5, "clean_acc_drop": 0.01 * a}
            for k in (4, 16) for a in (1.0, 3.0, 9.0) for d in ("to_gen", "to_mem")
            for m in ("selected", "control_random", "control_low_r")]
    fig = success_vs_alpha(pd.DataFrame(rows), tuned=(16, 3.0))
    fig.canvas.draw()
    assert len(fig.axes) == 3
    for ax in fig.axes:
        stars = [c for c in ax.collections if c.get_label().startswith("tuned k=16")]
        assert len(stars) == 1 and stars[0].get_offsets()[0][0] == 3.0
        assert ax.get_legend() is None  # no legend over the curves
    (legend,) = fig.legends
    labels = [t.get_text() for t in legend.get_texts()]
    assert labels[:2] == ["k=4 selected neurons", "k=16 selected neurons"]
    assert {"control: random", "control: low_r", "tuned: k=16, alpha 3"} <= set(labels)
    box, side = legend.get_window_extent(), fig.axes[2].get_window_extent()
    assert box.x0 > side.x1 and box.y1 < fig.axes[1].get_window_extent().y0  # 4th quadrant


# -- terminal --------------------------------------------------------------------------------

def test_library_noise_is_filtered_and_memgen_warnings_stay(recwarn):
    quiet_library_noise()
    warnings.warn("`isinstance(treespec, LeafSpec)` is deprecated", FutureWarning, stacklevel=1)
    warnings.warn("memgen: top_k is larger than the selection", UserWarning, stacklevel=1)
    assert [str(w.message) for w in recwarn] == ["memgen: top_k is larger than the selection"]
    record = logging.LogRecord("transformers.modeling_utils", logging.WARNING, "", 0,
                               "`loss_type=None` was set in the config but it is unrecognized.",
                               None, None)
    assert not logging.getLogger("transformers.modeling_utils").filter(record)
    sampler = "mlflow.system_metrics.system_metrics_monitor"
    for message, shown in (("Started monitoring system metrics.", False),
                           ("Skip logging GPU metrics. Set logger level to DEBUG", False),
                           ("Failed to start monitoring system metrics: boom", True)):
        record = logging.LogRecord(sampler, logging.INFO, "", 0, message, None, None)
        assert bool(logging.getLogger(sampler).filter(record)) is shown, message


SAVE_A_MODEL = """
import os, sys, tempfile
if sys.argv[1] == "quiet":
    from memgen.runtime.quiet import quiet_library_noise
    quiet_library_noise()
from transformers import GPT2Config, GPT2LMHeadModel
config = GPT2Config(n_layer=1, n_embd=8, n_head=2, vocab_size=16, n_positions=8)
GPT2LMHeadModel(config).save_pretrained(tempfile.mkdtemp())
print(os.environ.get("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"))
"""


@pytest.mark.parametrize("mode", ["quiet", "plain"])
def test_library_progress_bars_stay_out_of_the_terminal(mode):
    """``save_pretrained``'s "Writing model shards" bar (and MLflow's artifact bars) are off in
    a memgen command; the same save without the filters shows the bar, so the check can fail."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("HF_HUB_DISABLE_PROGRESS_BARS", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR")}
    done = subprocess.run([sys.executable, "-c", SAVE_A_MODEL, mode], capture_output=True,
                          text=True, timeout=300, env=env | {"PYTHONPATH": str(ROOT)}, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    quiet = mode == "quiet"
    assert ("Writing model shards" in done.stderr) is not quiet
    assert done.stdout.strip() == ("false" if quiet else "None")


def test_terminal_summary_is_short_with_the_run_link(tmp_path, capsys):
    from memgen.commands.summary import print_summary

    cfg = compose(tiny_overrides(tmp_path))
    many = METRICS | {f"neurons/max_abs_r/resid.{i}": 0.5 for i in range(100)}
    print_summary("run", many, {"run_id": "abc", "experiment_id": "1", "claims": CLAIMS}, cfg)
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) <= 22
    assert ("run page: http://127.0.0.1:5000/#/experiments/1/runs/abc"
            "?workflowType=machine_learning") in out
    assert not [line for line in out if "neurons/max_abs_r" in line]
    full = compose(tiny_overrides(tmp_path, **{"tracking.full_summary": True}))
    print_summary("run", many, {"run_id": "abc", "experiment_id": "1", "summary": "S"}, full)
    assert len(capsys.readouterr().out.splitlines()) > 100


# -- a real run, then a real browser ---------------------------------------------------------

@pytest.mark.slow
def test_a_finished_run_shows_its_name_description_report_and_lineage(trained_run):
    objects = trained_run["objects"]
    client = MlflowClient(f"sqlite:///{trained_run['root']}/mlruns/mlflow.db")
    run = client.get_run(objects["run_id"])
    assert re.fullmatch(r"arithmetic-gpt2-2x64-s0-[0-9a-f]{4}", run.info.run_name)
    note = run.data.tags["mlflow.note.content"]
    assert "kept checkpoint (epoch" in note and "MEM->GEN" in note and "claims:" in note
    m = run.data.metrics
    assert m["val/best_pair_yield_with_both"] == rounded(objects["trained"].metrics[
        "val/best_pair_yield_with_both"])  # printed in the terminal, now logged too (rounded)
    assert "kept/epoch" in m and any(k.startswith("system/cpu") for k in m)
    assert any(k.startswith("lr-") for k in m)
    for key in ("kept/mem_rate", "val/best_pair_yield_with_both", "claims/pairs/value"):
        assert [h.step for h in client.get_metric_history(run.info.run_id, key)] == [0]
    assert not [k for k in run.data.params if k.startswith("model.lora")]
    (dataset,) = run.inputs.dataset_inputs
    assert dataset.dataset.name == "arithmetic-train-seed0" and len(dataset.dataset.digest) >= 8
    files = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert "report.html" in files
    report = Path(client.download_artifacts(run.info.run_id, "report.html",
                                            str(trained_run["root"]))).read_text()
    assert report.count("data:image/png;base64,") >= 3
    for section in ("Claims scorecard", "Top neurons by |r|", "Steering vs controls",
                    "Consistency"):
        assert f"<h2>{section}</h2>" in report
    assert objects["report_s"] < 10


def _chromium_and_playwright():
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    if not os.path.exists(chromium):
        pytest.skip("chromium is not installed (apt-get install chromium; .ci/run does)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (pip install -e .[dev])")
    return chromium, sync_playwright


def _pss_kb(pid: int) -> int:
    """PSS of a process and its children (the MLflow server may fork its worker)."""
    total = 0
    pids = [pid]
    children = Path(f"/proc/{pid}/task/{pid}/children")
    if children.exists():
        pids += [int(p) for p in children.read_text().split()]
    for p in pids:
        rollup = Path(f"/proc/{p}/smaps_rollup")
        if rollup.exists():
            found = re.search(r"^Pss:\s+(\d+) kB", rollup.read_text(), re.M)
            total += int(found.group(1)) if found else 0
    return total


@pytest.fixture
def ui_server(trained_run):
    uri = f"sqlite:///{trained_run['root']}/mlruns/mlflow.db"
    with memgen_ui(f"tracking.uri={uri}") as (url, process):
        yield url, process


@pytest.mark.slow
def test_browser_lands_on_the_runs_and_renders_the_report(trained_run, ui_server, tmp_path):
    chromium, sync_playwright = _chromium_and_playwright()
    url, process = ui_server
    client = MlflowClient(f"sqlite:///{trained_run['root']}/mlruns/mlflow.db")
    run = client.get_run(trained_run["objects"]["run_id"])
    experiment_id, name = run.info.experiment_id, run.info.run_name
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run"]
    cfg = compose([f"tracking.ui_url={url}"])
    with sync_playwright() as p:
        browser = p.chromium.launch_persistent_context(  # a fresh --user-data-dir
            str(tmp_path / "chromium-profile"), executable_path=chromium, args=flags,
            headless=True, viewport={"width": 1400, "height": 900})
        try:
            page = browser.new_page()
            runs = f"{ui_base(cfg)}/#/experiments/{experiment_id}/runs?{MODE}"  # the list
            page.goto(runs, wait_until="domcontentloaded")
            page.get_by_text(name, exact=True).first.wait_for(timeout=60_000)  # the runs list
            assert page.get_by_text("No data available").count() == 0  # not trace charts
            page.screenshot(path=str(tmp_path / "runs.png"))
            link = run_url(cfg, experiment_id, run.info.run_id)
            page.goto(link.replace("?", "/artifacts/report.html?"), wait_until="domcontentloaded")
            frame = _report_frame(page, tmp_path / "report-missing.png")
            images = frame.locator("img")
            images.first.wait_for(timeout=30_000)
            assert images.count() >= 3
            widths = images.evaluate_all("imgs => imgs.map(i => i.naturalWidth)")
            assert all(w > 100 for w in widths)  # decoded, not broken
            assert frame.get_by_text("Claims scorecard").count() == 1
            page.screenshot(path=str(tmp_path / "report.png"))
            images.nth(1).scroll_into_view_if_needed()  # the figures, as the viewer shows them
            page.screenshot(path=str(tmp_path / "report-figures.png"))
        finally:
            browser.close()
    pss_mb = _pss_kb(process.pid) / 1024
    print(f"\nmemgen ui PSS after browsing: {pss_mb:.0f} MB; screenshots in {tmp_path}")
    assert (tmp_path / "runs.png").stat().st_size > 10_000
    assert 0 < pss_mb < 2048


def _report_frame(page, shot: Path):
    """The artifact viewer's iframe holding report.html (a blob: document)."""
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        for frame in page.frames[1:]:
            if frame.url.startswith("blob:") and frame.locator("h2").count():
                return frame
        page.wait_for_timeout(500)
    page.screenshot(path=str(shot))
    raise AssertionError(f"report.html did not render in the artifact viewer: see {shot}; "
                         f"frames {[f.url[:80] for f in page.frames]}")
