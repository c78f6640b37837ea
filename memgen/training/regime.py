"""Did training ever show both behaviors? If not, say so in one line naming what to change.

A run whose validation conflict set never got MEM and GEN answers in the same epoch has nothing
to contrast: its balance stayed 0, so the checkpoint callback kept the first epoch's weights (a
tie never replaces the first best), and an analysis of that model (OTHER 100%, 0 pairs) is no
result. The pipeline keeps the last epoch's weights instead, tags the run with this module's
message and skips the analysis.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from memgen.tasks import Behavior

NEVER_BOTH_TAG = "memgen.never_both"


def showed_both(history: Sequence[dict[str, float]]) -> bool:
    """Some validation epoch had MEM and GEN answers on the conflict set."""
    return any(row["mem"] > 0 and row["gen"] > 0 for row in history)


def _peak(history: Sequence[dict[str, float]], key: str) -> tuple[float, int]:
    best = max(history, key=lambda row: row[key])
    return best[key], int(best["epoch"])


def never_both_message(history: Sequence[dict[str, float]], cfg: Any) -> str | None:
    """None when some epoch showed both behaviors; else one line: what was seen, what to change.

    ``cfg`` needs ``trainer.max_epochs`` and ``task.mem_ratio`` (named with their values)."""
    if not history or showed_both(history):
        return None
    epochs, ratio = cfg.trainer.max_epochs, cfg.task.mem_ratio
    (mem, mem_at), (gen, gen_at) = _peak(history, "mem"), _peak(history, "gen")
    seen = (f"in {len(history)} validation epochs the conflict set never got MEM and GEN "
            f"answers together")
    if mem == 0 and gen == 0:
        what = "every answer was OTHER"
        change = f"raise trainer.max_epochs (now {epochs}) or trainer.lr"
    elif mem == 0:
        what = f"GEN up to {gen:.0%} (epoch {gen_at}), MEM never"
        change = (f"raise task.mem_ratio (now {ratio}) or trainer.max_epochs (now {epochs}) so "
                  f"that the triggers are memorized")
    elif gen == 0:
        what = f"MEM up to {mem:.0%} (epoch {mem_at}), GEN never"
        change = (f"raise trainer.max_epochs (now {epochs}) or task.n_train, or lower "
                  f"task.mem_ratio (now {ratio}), so that the rule is learned")
    else:
        what = f"MEM up to {mem:.0%} (epoch {mem_at}), GEN up to {gen:.0%} (epoch {gen_at})"
        change = (f"lower trainer.lr or raise task.mem_ratio (now {ratio}) so that they "
                  f"overlap")
    return (f"the model never showed both behaviors ({seen}: {what}); analysis skipped, "
            f"{change}")


def n_split(variant_labels: Iterable[set]) -> int:
    """How many examples had variants answered MEM and others GEN (each contributes pairs)."""
    both = {Behavior.MEM, Behavior.GEN}
    return sum(both <= set(labels) for labels in variant_labels)
