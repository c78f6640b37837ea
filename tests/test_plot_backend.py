"""memgen's figures leave matplotlib as the user set it: importing any ``memgen.reporting`` or
``memgen.tracking`` module keeps a notebook's backend, and a figure is drawn without pyplot's
registry."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = """
import importlib, io, json, pkgutil
import matplotlib
matplotlib.use("svg")  # what a user chose before importing memgen
import pandas as pd
import memgen.reporting, memgen.tracking
names = sorted(m.name for package in (memgen.reporting, memgen.tracking)
               for m in pkgutil.walk_packages(package.__path__, package.__name__ + "."))
for name in names:
    importlib.import_module(name)
after_import = matplotlib.get_backend()
from memgen.reporting.plots.consistency import overlap_matrix_figure
matrix = pd.DataFrame([[1.0, 0.25], [0.25, 1.0]], index=["a", "b"], columns=["a", "b"])
buffer = io.BytesIO()
overlap_matrix_figure(matrix).savefig(buffer, format="png")
import optuna  # sweep figures are drawn by optuna through pyplot
optuna.logging.set_verbosity(optuna.logging.ERROR)
from memgen.reporting.plots.sweep import study_figures
study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
study.optimize(lambda t: t.suggest_float("a", 0, 1) + t.suggest_float("b", 0, 1), n_trials=3)
figures, _ = study_figures(study, ["m"], ["a", "b"])
import matplotlib.pyplot as plt
print(json.dumps({"names": names, "after_import": after_import,
                  "after_figure": matplotlib.get_backend(), "open": plt.get_fignums(),
                  "png": buffer.getvalue()[:8].hex(), "sweep": sorted(figures)}))
"""


def test_importing_reporting_modules_and_drawing_keep_the_users_backend():
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MPLBACKEND": ""}
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    plots = {n.rpartition(".")[2] for n in out["names"] if n.startswith("memgen.reporting.plots.")}
    assert {"neurons", "probes", "steering", "kinds", "consistency", "sweep"} <= plots
    assert {"memgen.reporting.replicate_report", "memgen.tracking.run"} <= set(out["names"])
    assert out["after_import"] == out["after_figure"] == "svg"
    assert out["open"] == []  # no figure stays in pyplot's registry (optuna's are closed)
    assert {"sweep/history_m.png", "sweep/contour_m.png"} <= set(out["sweep"])
    assert out["png"] == "89504e470d0a1a0a"  # a PNG was written through the figure's own canvas
