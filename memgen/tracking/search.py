"""Finding runs by their tags: the parent of a resumed sweep or replicate, and its children."""

from __future__ import annotations

from collections.abc import Mapping

from mlflow.entities import Run
from mlflow.tracking import MlflowClient


def _quote(value: str) -> str:
    return value.replace("'", "\\'")


def runs_tagged(client: MlflowClient, experiment: str, tags: Mapping[str, str],
                statuses: tuple[str, ...] = ()) -> list[Run]:
    """Active runs of ``experiment`` carrying every tag in ``tags``, oldest first (optionally
    only those in ``statuses``)."""
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    filters = [f"tags.`{key}` = '{_quote(str(value))}'" for key, value in tags.items()]
    runs = client.search_runs([exp.experiment_id], filter_string=" and ".join(filters),
                              order_by=["attributes.start_time ASC"], max_results=50000)
    return [r for r in runs if not statuses or r.info.status in statuses]


def children(client: MlflowClient, experiment: str, parent_run_id: str) -> list[Run]:
    """Every child run of ``parent_run_id``, oldest first."""
    return runs_tagged(client, experiment, {"mlflow.parentRunId": parent_run_id})
