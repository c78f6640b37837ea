"""The exact library versions a run ran with: two runs whose numbers differ can be told apart by
their environment (a transformers release once changed the default steering silently).

``python -m memgen.environment`` prints them; every tracked run logs them as ``env.*`` tags and
an ``environment.json`` artifact.
"""

from __future__ import annotations

import platform
import sys
from importlib import metadata

# The libraries whose behavior decides memgen's numbers.
TRACKED = ("torch", "transformers", "peft", "pytorch-lightning", "mlflow", "optuna",
           "torchmetrics", "numpy", "scipy")


def package_versions(names: tuple[str, ...] = TRACKED) -> dict[str, str]:
    """Installed version of each distribution, ``"not installed"`` when absent."""
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def environment() -> dict[str, str]:
    """Library versions plus the interpreter and the machine kind (CPUs differ in float order)."""
    import torch  # noqa: PLC0415 - loaded once the environment is recorded, not on import

    return package_versions() | {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor() or "unknown",
        "torch.num_threads": str(torch.get_num_threads()),
    }


def environment_tags() -> dict[str, str]:
    """The versions as MLflow tags ``env.<name>``: filterable in the run list."""
    return {f"env.{name}": value for name, value in package_versions().items()}


if __name__ == "__main__":
    for key, value in environment().items():
        print(f"{key:20s} {value}")
    sys.exit(0)
