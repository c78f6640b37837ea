"""Server mode: `memgen ui` serves the store; a run logged over HTTP is readable over REST.
PostgreSQL: the same run with a PostgreSQL backend (started by .ci/run)."""

from __future__ import annotations

import json
import os
import urllib.request
import uuid

import pytest
from mlflow.tracking import MlflowClient

from memgen.commands.run import train
from memgen.commands.ui import ui_command
from memgen.config import compose
from tests.conftest import tiny_overrides
from tests.helpers_ui import memgen_ui

pytestmark = pytest.mark.slow


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def test_ui_command_is_lean_and_local():
    cmd = ui_command(compose(), 5000)
    assert cmd[cmd.index("--host") + 1] == "127.0.0.1"
    assert cmd[cmd.index("--workers") + 1] == "1"
    assert cmd[cmd.index("--backend-store-uri") + 1].startswith("sqlite:///")
    assert cmd[cmd.index("--backend-store-uri") + 1].endswith("mlruns/mlflow.db")


@pytest.fixture
def server(tmp_path):
    with memgen_ui(f"tracking.uri=sqlite:///{tmp_path}/server/mlflow.db",
                   f"tracking.artifact_root={tmp_path}/server/artifacts") as (url, _process):
        yield url


def test_run_against_a_real_server_is_readable_over_rest(server, tmp_path):
    cfg = compose(tiny_overrides(tmp_path, **{"tracking.uri": server, "trainer.max_epochs": 1}))
    _, objects = train(cfg)
    run_id = objects["run_id"]
    run = _get(f"{server}/api/2.0/mlflow/runs/get?run_id={run_id}")["run"]
    assert run["info"]["status"] == "FINISHED"
    metrics = {m["key"] for m in run["data"]["metrics"]}
    assert {"val/mem_rate", "val/behavior_balance", "train/loss_epoch"} <= metrics
    params = {p["key"]: p["value"] for p in run["data"]["params"]}
    assert params["trainer.max_epochs"] == "1"
    files = {f["path"] for f in _get(f"{server}/api/2.0/mlflow/artifacts/list?run_id={run_id}")
             .get("files", [])}
    assert {"config.yaml", "model"} <= files
    history = _get(f"{server}/api/2.0/mlflow/metrics/get-history?run_id={run_id}"
                   f"&metric_key=train/loss_step")["metrics"]
    assert len(history) >= 7


POSTGRES = os.environ.get("MEMGEN_TEST_POSTGRES_URL")


@pytest.mark.skipif(not POSTGRES, reason="MEMGEN_TEST_POSTGRES_URL not set (.ci/run sets it)")
def test_postgresql_backend_records_the_run(tmp_path):
    cfg = compose(tiny_overrides(tmp_path, **{"tracking.uri": POSTGRES,
                                              "tracking.experiment": f"pg-{uuid.uuid4().hex}",
                                              "tracking.artifact_root": tmp_path / "artifacts",
                                              "trainer.max_epochs": 1}))
    _, objects = train(cfg)
    run = MlflowClient(POSTGRES).get_run(objects["run_id"])
    assert run.info.status == "FINISHED"
    assert "val/mem_rate" in run.data.metrics
    assert "model" in {a.path for a in MlflowClient(POSTGRES).list_artifacts(run.info.run_id)}


@pytest.mark.skipif(not POSTGRES, reason="MEMGEN_TEST_POSTGRES_URL not set (.ci/run sets it)")
def test_two_sweep_workers_share_a_postgresql_study_and_store(tmp_path):
    from memgen.commands.sweep import sweep
    from tests.helpers_sweep import make_steering_run

    unique = uuid.uuid4().hex[:8]  # the database outlives this test: fresh names each time
    experiment = f"pg-sweep-{unique}"
    pg = {"tracking.uri": POSTGRES, "tracking.artifact_root": tmp_path / "artifacts"}
    _, run_id = make_steering_run(tmp_path, experiment, **pg)
    cfg = compose([f"{k}={v}" for k, v in {
        **pg, "tracking.experiment": experiment, "output_dir": tmp_path / "outputs",
        "sweep": "steering", "sweep.run_id": run_id, "sweep.n_trials": 4, "sweep.workers": 2,
        # MLflow and Optuna both keep an alembic_version table: separate databases
        "sweep.storage": POSTGRES.rsplit("/", 1)[0] + "/memgen_optuna",
        "sweep.study_name": f"pg-{unique}",
        "trainer.num_threads": 1}.items()])
    metrics, objects = sweep(cfg)
    assert [t.state.name for t in objects["study"].trials] == ["COMPLETE"] * 4
    client = MlflowClient(POSTGRES)
    exp = client.get_experiment_by_name(experiment)
    children = client.search_runs(
        [exp.experiment_id], f"tags.`mlflow.parentRunId` = '{objects['run_id']}'")
    assert len(children) == 4
    assert sorted(int(r.data.tags["optuna.trial_number"]) for r in children) == [0, 1, 2, 3]
    assert {r.data.tags["memgen.sweep.worker"] for r in children} == {"0", "1"}
    assert metrics["sweep/n_complete"] == 4
