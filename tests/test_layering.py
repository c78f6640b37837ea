"""The layering DESIGN.md promises: analysis/ and tasks/ run without any of the frameworks the
orchestration layers use, so a notebook can import them on any Hugging Face model."""

from __future__ import annotations

import json
import subprocess
import sys

FRAMEWORKS = ("pytorch_lightning", "lightning", "mlflow", "optuna", "hydra", "omegaconf")

# In a fresh interpreter: import every module of the packages (subpackages too) one by one and
# name the module after whose import a framework first shows up in sys.modules.
PROBE = """
import importlib, json, pkgutil, sys
frameworks, packages = set(json.loads(sys.argv[1])), json.loads(sys.argv[2])
found = {}
for package in packages:
    pkg = importlib.import_module(package)
    names = [package] + [m.name for m in pkgutil.walk_packages(getattr(pkg, "__path__", []),
                                                               package + ".")]
    for name in names:
        importlib.import_module(name)
        loaded = {m.split(".")[0] for m in sys.modules} & frameworks
        for framework in loaded - set(found):
            found[framework] = name
print(json.dumps(found))
"""


def frameworks_imported_by(*packages: str) -> dict[str, str]:
    """framework -> the first module of ``packages`` whose import loaded it."""
    out = subprocess.run([sys.executable, "-c", PROBE, json.dumps(FRAMEWORKS),
                          json.dumps(packages)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_analysis_and_tasks_import_no_framework():
    assert frameworks_imported_by("memgen.tasks", "memgen.analysis") == {}


def test_the_probe_names_a_module_that_imports_a_framework():
    """The config adapter reads omegaconf: the same probe names it, so the check can fail."""
    assert frameworks_imported_by("memgen.config.adapter") == {"omegaconf": "memgen.config.adapter"}
