"""Library messages a memgen user cannot act on, filtered from the terminal; memgen's own
warnings and every library error stay.

Each entry names a message seen on a default run and why it is noise to the user:
- Lightning's ``fit(ckpt_path=None)`` note: memgen chooses the checkpoint itself;
- ``isinstance(treespec, LeafSpec)`` is deprecated: Lightning's internals on newer torch;
- transformers' ``loss_type=None ... unrecognized``: a GPT-2 config without a loss type;
- Lightning's hardware banner, litlogger tips and "estimate stepping batches" notes;
- MLflow's "Creating initial MLflow database tables" on a new store;
- MLflow's system-metrics sampler starting and stopping (its metrics are in the run);
- Lightning's "use ``self.log('val/...', sync_dist=True)``" on several devices: the validation
  rates are computed from counts summed over ranks, identical on every rank already;
- progress bars of single library calls (transformers' "Writing model shards" in
  ``save_pretrained``, MLflow's "Downloading artifacts"): a second each on a terminal, and lines
  of carriage returns in a log file. An explicit setting of their environment variables wins.

Filters, not ``setLevel``: ``Logger.setLevel`` takes logging's module lock without a
``finally``, and a Ctrl-C inside it leaves the lock held for good (every other thread that
logs then blocks).
"""

from __future__ import annotations

import logging
import os
import re
import sys
import warnings

_WARNINGS = (r".*fit\(ckpt_path=None\)", r".*isinstance\(treespec, LeafSpec\)",
             r".*loss_type=None.*unrecognized", r".*self\.log\('val/.*sync_dist=True")
_LOG_LINES = re.compile(r"ckpt_path=None|LeafSpec|loss_type=None|Tip: For seamless|"
                        r"(GPU|TPU|HPU) available|estimate number of stepping batches|"
                        r"limit_(train|val)_batches=1.0\)` was configured|"
                        r"Creating initial MLflow database tables|Updating database tables|"
                        r"`Trainer.fit` stopped|Started monitoring system metrics|"
                        r"(Stopping|Successfully terminated) system metrics monitoring|"
                        r"Skip logging GPU metrics")
# Read by MLflow on every artifact call, and by huggingface_hub (hence transformers) at import;
# set for this process and the workers and ranks it starts.
_NO_BARS = {"MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
_LOGGERS = ("pytorch_lightning", "lightning.pytorch", "lightning.fabric",
            "pytorch_lightning.utilities.rank_zero", "lightning.pytorch.utilities.rank_zero",
            "transformers", "transformers.modeling_utils", "mlflow.store.db.utils",
            "mlflow.system_metrics.system_metrics_monitor")


class _DropNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not _LOG_LINES.search(record.getMessage())


_FILTER = _DropNoise()


def quiet_library_noise() -> None:
    """Install the filters (idempotent): warnings by message, log records by logger, and no
    per-call progress bars."""
    for name, value in _NO_BARS.items():
        os.environ.setdefault(name, value)
    hf_logging = sys.modules.get("transformers.utils.logging")
    if hf_logging is not None and os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "1":
        hf_logging.disable_progress_bar()  # imported before: its switch was read already
    for pattern in _WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    for name in _LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
        for handler in logger.handlers:
            if _FILTER not in handler.filters:
                handler.addFilter(_FILTER)
