"""Does steering flip behaviour, more than controls do, and at what cost on clean inputs?

- ``evaluate_steering``: items the unsteered model answered MEM are steered toward GEN, items it
  answered GEN toward MEM. Per direction: a transition table (to_target / unchanged / other),
  success = to_target / n with a 95% Wilson interval; the same for every control selection.
- ``side_effects``: rule accuracy on clean (no-trigger) inputs with and without steering, and
  the mean KL(unsteered || steered) of the next-token distribution at the last prompt token,
  against a ``clean_baseline`` computed once per model.
- ``summary_metrics``: flat ``stage/name`` metrics for MLflow.

Grids over (k, alpha) and the pick of one cell are in ``steering/tuning.py``.

All rates and accuracies are fractions in [0, 1]; ``clean_acc_drop`` = clean_acc -
clean_acc_steered, also a fraction (0.05 = five percentage points lost).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from statistics import NormalDist

import pandas as pd
import torch
from torch import nn

from memgen.analysis.generation import encode_prompts, generate, position_ids
from memgen.analysis.neurons import NeuronSelection
from memgen.analysis.settings import Decoding, Subject
from memgen.analysis.steering.forced_labels import legacy_steering, steered_outputs
from memgen.analysis.steering.hooks import DIRECTIONS, plan_shifts, steer
from memgen.tasks.base import Behavior, Example, Task

DECODING = Decoding()  # the settings' defaults
SOURCE = {"to_gen": Behavior.MEM, "to_mem": Behavior.GEN}  # who is steered in each direction
TARGET = {"to_gen": Behavior.GEN, "to_mem": Behavior.MEM}


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion; (nan, nan) when n == 0."""
    if n == 0:
        return math.nan, math.nan
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    p = successes / n
    denom = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, center - half), min(1.0, center + half)


@dataclass(frozen=True)
class Transitions:
    """What became of the n items of one source behaviour steered in one direction."""

    direction: str
    n: int
    to_target: int
    unchanged: int
    other: int

    @property
    def success(self) -> float:
        return self.to_target / self.n if self.n else math.nan

    @property
    def ci(self) -> tuple[float, float]:
        return wilson_interval(self.to_target, self.n)


@dataclass(frozen=True)
class SideEffects:
    """Clean-input rule accuracy with and without steering, and the next-token KL."""

    direction: str
    n: int
    clean_acc: float
    clean_acc_steered: float
    kl: float

    @property
    def clean_acc_drop(self) -> float:
        return self.clean_acc - self.clean_acc_steered


@dataclass
class CleanBaseline:
    """Unsteered clean-input results, computed once and reused across alphas and k."""

    acc: float
    logprobs: torch.Tensor  # [N, V] float32 log-softmax at the last prompt token, on CPU


@dataclass
class SteeringResult:
    """Transitions of the selected neurons and of each control, plus optional side effects."""

    alpha: float
    k: int
    selected: dict[str, Transitions]
    controls: dict[str, dict[str, Transitions]] = field(default_factory=dict)
    side: dict[str, SideEffects] = field(default_factory=dict)
    items: pd.DataFrame | None = None  # one row per steered item: method, direction, before, after
    # direction -> (k, alpha) where the directions were steered at different cells
    cells: dict[str, tuple[int, float]] = field(default_factory=dict)

    def cell(self, direction: str) -> tuple[int, float]:
        """The (k, alpha) ``direction`` was steered at."""
        return self.cells.get(direction, (self.k, self.alpha))

    def table(self) -> pd.DataFrame:
        """One row per (method, direction) with counts, success and its CI."""
        rows = []
        methods = {"selected": self.selected}
        methods.update({f"control_{name}": t for name, t in self.controls.items()})
        for method, by_direction in methods.items():
            for direction, t in by_direction.items():
                low, high = t.ci
                rows.append({"method": method, "direction": direction, "n": t.n,
                             "to_target": t.to_target, "unchanged": t.unchanged,
                             "other": t.other, "success": t.success,
                             "ci_low": low, "ci_high": high})
        return pd.DataFrame(rows)


def merge_directions(results: Mapping[str, SteeringResult]) -> SteeringResult:
    """One result from one per direction (each steered at its own cell, keyed by direction):
    ``cells`` records each direction's (k, alpha); ``k`` and ``alpha`` are the first
    direction's."""
    first = next(iter(results.values()))
    names = {name for r in results.values() for name in r.controls}
    frames = [r.items for r in results.values() if r.items is not None]
    return SteeringResult(
        alpha=first.alpha, k=first.k,
        selected={d: r.selected[d] for d, r in results.items()},
        controls={name: {d: r.controls[name][d] for d, r in results.items()
                         if d in r.controls.get(name, {})} for name in sorted(names)},
        side={d: r.side[d] for d, r in results.items() if d in r.side},
        items=pd.concat(frames, ignore_index=True) if frames else None,
        cells={d: (r.k, r.alpha) for d, r in results.items()})


def _behaviors(task: Task, examples: Sequence[Example], outputs: Sequence[str]) -> list[Behavior]:
    return [task.classify(ex, out) for ex, out in zip(examples, outputs, strict=True)]


def _generate(subject: Subject, prompts: Sequence[str], decoding: Decoding) -> list[str]:
    return generate(subject.model, subject.tokenizer, prompts, decoding.max_new_tokens,
                    decoding.batch_size, decoding.num_beams)


def _outputs(subject: Subject, examples: Sequence[Example], decoding: Decoding,
             steered: tuple[NeuronSelection, float, str, bool] | None = None,
             prefer: str = "mem") -> list[str]:
    """Greedy outputs, unsteered or under ``steer(model, *steered)`` (selection, alpha,
    direction, last_prompt_only); proven by teacher-forced passes with
    ``decoding.forced_labels`` (the same outputs: ``forced_labels``; ``prefer``: the answer
    guessed first)."""

    def decode(items: list[Example]) -> list[str]:
        prompts = [ex.prompt for ex in items]
        if steered is None:
            return _generate(subject, prompts, decoding)
        with steer(subject.model, *steered):
            return _generate(subject, prompts, decoding)

    forced = None if steered is None else legacy_steering(*steered)
    return steered_outputs(subject, examples, decoding, forced, decode, prefer)


def baseline_labels(subject: Subject, examples: Sequence[Example],
                    decoding: Decoding = DECODING) -> list[Behavior]:
    """Unsteered behaviours, decoded exactly as the steered runs are."""
    return _behaviors(subject.task, examples, _outputs(subject, examples, decoding))


def _steered_behaviors(subject: Subject, examples: Sequence[Example],
                       selection: NeuronSelection, alpha: float, direction: str,
                       decoding: Decoding, last_prompt_only: bool):
    if not examples:
        return [], []
    outputs = _outputs(subject, examples, decoding,
                       (selection, alpha, direction, last_prompt_only),
                       prefer=SOURCE[direction].value.lower())  # most items keep their answer
    return _behaviors(subject.task, examples, outputs), outputs


def _transitions(direction: str, after: Sequence[Behavior]) -> Transitions:
    return Transitions(direction=direction, n=len(after),
                       to_target=sum(b == TARGET[direction] for b in after),
                       unchanged=sum(b == SOURCE[direction] for b in after),
                       other=sum(b == Behavior.OTHER for b in after))


def evaluate_steering(subject: Subject, examples: Sequence[Example],
                      labels: Sequence[Behavior | str] | None, selection: NeuronSelection,
                      alpha: float, controls: Mapping[str, NeuronSelection] | None = None, *,
                      decoding: Decoding = DECODING,
                      clean_examples: Sequence[Example] | None = None,
                      baseline: CleanBaseline | None = None,
                      last_prompt_only: bool = False,
                      directions: Sequence[str] = tuple(DIRECTIONS)) -> SteeringResult:
    """Steer MEM items toward GEN and GEN items toward MEM, with the selection and each control.

    ``labels`` are the unsteered behaviours (None: generate them here). With ``clean_examples``
    the side effects of the selection are measured in each of ``directions``.
    """
    unknown = [d for d in directions if d not in DIRECTIONS]
    if unknown or not directions:
        raise ValueError(f"directions: expected some of {list(DIRECTIONS)}, got {directions!r}")
    for sel in (selection, *(controls or {}).values()):  # fail before any generation
        plan_shifts(subject.model, sel, alpha, "to_gen")
    if labels is None:
        labels = baseline_labels(subject, examples, decoding)
    if len(labels) != len(examples):
        raise ValueError(f"labels: {len(labels)} labels for {len(examples)} examples")
    labels = [Behavior(label) for label in labels]
    groups = {d: [ex for ex, lab in zip(examples, labels, strict=True) if lab == SOURCE[d]]
              for d in DIRECTIONS if d in directions}
    methods = {"selected": selection}
    methods.update({f"control_{name}": sel for name, sel in (controls or {}).items()})
    found: dict[str, dict[str, Transitions]] = {}
    rows = []
    for method, sel in methods.items():
        found[method] = {}
        for direction, items in groups.items():
            after, outputs = _steered_behaviors(subject, items, sel, alpha, direction, decoding,
                                                last_prompt_only)
            found[method][direction] = _transitions(direction, after)
            rows += [{"method": method, "direction": direction, "prompt": ex.prompt,
                      "before": SOURCE[direction].value, "after": b.value, "output": out}
                     for ex, b, out in zip(items, after, outputs, strict=True)]
    result = SteeringResult(alpha=float(alpha), k=len(selection), selected=found.pop("selected"),
                            controls={m.removeprefix("control_"): t for m, t in found.items()},
                            items=pd.DataFrame(rows))
    if clean_examples:
        if baseline is None:
            baseline = clean_baseline(subject, clean_examples, decoding)
        result.side = {d: side_effects(subject, clean_examples, selection, alpha, d,
                                       decoding=decoding, baseline=baseline,
                                       last_prompt_only=last_prompt_only)
                       for d in groups}
    return result


@torch.no_grad()
def last_token_logprobs(model: nn.Module, tokenizer, prompts: Sequence[str],
                        batch_size: int = 64) -> torch.Tensor:
    """Log-softmax of the next-token logits at each prompt's last token: [N, V], CPU float32.

    Prompts are left-padded, so position ids are passed explicitly (a plain GPT-2 forward does
    not derive them from the attention mask as ``generate`` does).
    """
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = []
    try:
        for start in range(0, len(prompts), batch_size):
            batch = encode_prompts(tokenizer, prompts[start:start + batch_size], device)
            logits = model(**batch, position_ids=position_ids(batch["attention_mask"]),
                           use_cache=False).logits[:, -1]
            out.append(torch.log_softmax(logits.float(), dim=-1).cpu())
    finally:
        model.train(was_training)
    return torch.cat(out) if out else torch.empty(0, 0)


def _accuracy(task: Task, examples: Sequence[Example], outputs: Sequence[str]) -> float:
    hits = sum(b == Behavior.GEN for b in _behaviors(task, examples, outputs))
    return hits / len(examples) if examples else math.nan


def clean_baseline(subject: Subject, clean_examples: Sequence[Example],
                   decoding: Decoding = DECODING) -> CleanBaseline:
    """Unsteered rule accuracy and next-token log-probs on clean inputs."""
    prompts = [ex.prompt for ex in clean_examples]
    outputs = _outputs(subject, clean_examples, decoding, prefer="gen")
    return CleanBaseline(acc=_accuracy(subject.task, clean_examples, outputs),
                         logprobs=last_token_logprobs(subject.model, subject.tokenizer, prompts,
                                                      decoding.batch_size))


def side_effects(subject: Subject, clean_examples: Sequence[Example],
                 selection: NeuronSelection, alpha: float, direction: str, *,
                 decoding: Decoding = DECODING, baseline: CleanBaseline | None = None,
                 last_prompt_only: bool = False) -> SideEffects:
    """Rule accuracy on clean inputs (classify == GEN is correct), steered and not, and the
    mean KL(unsteered || steered) of the next-token distribution at the last prompt token."""
    plan_shifts(subject.model, selection, alpha, direction)
    if not clean_examples:
        raise ValueError("clean_examples: empty, no clean inputs to measure side effects on")
    if baseline is None:
        baseline = clean_baseline(subject, clean_examples, decoding)
    prompts = [ex.prompt for ex in clean_examples]
    outputs = _outputs(subject, clean_examples, decoding,
                       (selection, alpha, direction, last_prompt_only), prefer="gen")
    with steer(subject.model, selection, alpha, direction, last_prompt_only=last_prompt_only):
        steered = last_token_logprobs(subject.model, subject.tokenizer, prompts,
                                      decoding.batch_size)
    p = baseline.logprobs.exp()  # terms with p = 0 are 0 (also where a logit is -inf)
    kl = torch.where(p > 0, p * (baseline.logprobs - steered), torch.zeros_like(p)).sum(-1)
    return SideEffects(direction=direction, n=len(clean_examples), clean_acc=baseline.acc,
                       clean_acc_steered=_accuracy(subject.task, clean_examples, outputs),
                       kl=float(kl.clamp(min=0).mean()))


def summary_metrics(result: SteeringResult) -> dict[str, float]:
    """Flat metrics: ``steer/<dir>/[control_<name>/]{success,ci_low,ci_high,n,other_rate}``,
    ``side/<dir>/{clean_acc_steered,clean_acc_drop,kl}`` and the worst case over directions as
    ``side/{clean_acc,clean_acc_steered,clean_acc_drop,kl}`` (fractions, not percentage points).
    """
    out: dict[str, float] = {}

    def put(prefix: str, t: Transitions) -> None:
        low, high = t.ci
        out[f"{prefix}/success"] = t.success
        out[f"{prefix}/ci_low"] = low
        out[f"{prefix}/ci_high"] = high
        out[f"{prefix}/n"] = float(t.n)
        out[f"{prefix}/other_rate"] = t.other / t.n if t.n else math.nan

    for direction, t in result.selected.items():
        put(f"steer/{direction}", t)
        k, alpha = result.cell(direction)
        out[f"steer/{direction}/k"] = float(k)
        out[f"steer/{direction}/alpha"] = float(alpha)
    for name, by_direction in result.controls.items():
        for direction, t in by_direction.items():
            put(f"steer/{direction}/control_{name}", t)
    # one number per question, for sweeps and run tables: do both directions work, and how
    # far does the best control get (the success must be read against it)
    successes = [t.success for t in result.selected.values() if t.n]
    if successes:
        out["steer/min_success"] = min(successes)
    controls = [t.success for by in result.controls.values() for t in by.values() if t.n]
    if controls:
        out["steer/max_control_success"] = max(controls)
    if result.side:
        sides = list(result.side.values())
        for s in sides:
            out[f"side/{s.direction}/clean_acc_steered"] = s.clean_acc_steered
            out[f"side/{s.direction}/clean_acc_drop"] = s.clean_acc_drop
            out[f"side/{s.direction}/kl"] = s.kl
        worst = max(sides, key=lambda s: s.clean_acc_drop)
        out["side/clean_acc"] = sides[0].clean_acc
        out["side/clean_acc_steered"] = worst.clean_acc_steered
        out["side/clean_acc_drop"] = worst.clean_acc_drop
        out["side/kl"] = max(s.kl for s in sides)
    return out
