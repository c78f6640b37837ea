"""The layering docs/design.md promises: analysis/ and tasks/ run without any of the frameworks
the orchestration layers use, so a notebook can import them on any Hugging Face model; and no
package imports a layer above it (the import-linter contract in pyproject.toml)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

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


def test_no_package_imports_a_higher_layer():
    """The same check as `make lint`: lazy imports inside functions count too."""
    out = subprocess.run([str(Path(sys.executable).parent / "lint-imports"), "--no-cache"],
                         capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert "1 kept, 0 broken" in out.stdout
