"""MLflow tracking: run set-up and status, logging helpers, Lightning callbacks, plots."""
