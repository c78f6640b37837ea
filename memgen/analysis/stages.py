"""The analysis stages of ``memgen run``, on any trained Hugging Face causal LM.

behavior labels -> pairs -> selection / evaluation split -> activations at every site (captured
once) -> NMD and r -> ranking and selection -> probes -> steering with controls and side
effects -> intra-task consistency. Each stage is a function of plain objects, so the Lightning
callbacks (``memgen.tracking.callbacks``) run the very same code during training.
"""

from __future__ import annotations

import copy
import random
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import torch
from omegaconf import DictConfig

from memgen.analysis.behavior import (
    LabelledGroups,
    Pair,
    find_pairs,
    label_perturbation_groups,
    split_pairs,
)
from memgen.analysis.capture import collect_features
from memgen.analysis.consistency import (
    IntraResult,
    PairSet,
    inter_metrics,
    inter_task_consistency,
    intra_task_consistency,
    overlap_matrix,
    site_widths,
)
from memgen.analysis.controls import build_controls
from memgen.analysis.input_baseline import input_only_accuracy
from memgen.analysis.intervention import (
    SteeringResult,
    best_cell,
    evaluate_steering,
    grid_scores,
    steering_grid,
    summary_metrics,
)
from memgen.analysis.neurons import NeuronSelection, SiteStats
from memgen.analysis.probes import ProbeReport, check_disjoint, probe_sites
from memgen.analysis.sites import resolve_sites
from memgen.analysis.stats import (
    rank_neurons,
    select_neurons,
    shuffle_control,
    site_summary,
    stream_stats,
)
from memgen.tasks import Behavior, Example, Task

Item = tuple[int, int]  # (group, variant)


@dataclass
class Split:
    """Labelled variants of one split: examples, labels (MEM=1, GEN=0) and their row ids."""

    items: list[Item]
    examples: list[Example]
    labels: torch.Tensor

    @property
    def behaviors(self) -> list[Behavior]:
        return [Behavior.MEM if y else Behavior.GEN for y in self.labels.tolist()]


@dataclass
class Behaviors:
    """Stage 1: every perturbation labelled, the differing pairs, and the two splits."""

    labelled: LabelledGroups
    pairs: list[Pair]
    selection: Split
    evaluation: Split
    selection_pairs: list[Pair]
    evaluation_pairs: list[Pair]

    def metrics(self) -> dict[str, float]:
        counts = self.labelled.counts()
        n = max(1, counts["n_variants"])
        return {
            "behavior/n_examples": counts["n_examples"],
            "behavior/n_variants": counts["n_variants"],
            "behavior/mem_rate": counts["n_mem"] / n,
            "behavior/gen_rate": counts["n_gen"] / n,
            "behavior/other_rate": counts["n_other"] / n,
            "pairs/n": len(self.pairs),
            "pairs/n_examples_with_pairs": len({p.group for p in self.pairs}),
            "pairs/n_selection_items": len(self.selection.items),
            "pairs/n_evaluation_items": len(self.evaluation.items),
        }


@dataclass
class Neurons:
    """Stage 2: per-site statistics on the selection split, the ranking and the selection."""

    stats: dict[str, SiteStats]
    table: pd.DataFrame
    selection: NeuronSelection
    chance: dict[str, Any]

    def metrics(self) -> dict[str, float]:
        out = site_summary(self.stats)
        out["neurons/n_total"] = float(len(self.table))
        out["neurons/n_selected"] = float(len(self.selection))
        out["neurons/max_abs_r"] = float(self.table["abs_r"].max())
        out["neurons/selected_min_abs_r"] = float(self.selection.r.abs().min())
        out["neurons/chance_max_abs_r_q95"] = self.chance["max_abs_r_q"]
        out["neurons/chance_abs_r_q95"] = self.chance["abs_r_q"]
        return out


@dataclass
class Features:
    """Last-prompt-token activations of every labelled item, captured once per checkpoint."""

    by_item: dict[Item, int]
    values: dict[str, torch.Tensor]  # site -> [N, D]
    labels: torch.Tensor  # [N]

    def take(self, items: list[Item]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        rows = torch.tensor([self.by_item[it] for it in items], dtype=torch.long)
        return {s: v[rows] for s, v in self.values.items()}, self.labels[rows]


@dataclass
class InterTask:
    """Stage 6 (mixtures): each sub-task's neurons on one shared model, compared."""

    selections: dict[str, NeuronSelection]
    jaccard: pd.DataFrame  # task x task
    expected: pd.DataFrame  # chance jaccard, same shape
    cross_steering: pd.DataFrame  # rows: source task, target task, direction, success, n

    def metrics(self, overlaps) -> dict[str, float]:
        out = inter_metrics(overlaps)
        for row in self.cross_steering.itertuples(index=False):
            out[f"steer/cross/{row.source}_to_{row.target}/{row.direction}/success"] = row.success
        return out


@dataclass
class SteeringTuning:
    """The (top_fraction, alpha) picked on the selection split, and every cell's score."""

    best: pd.Series  # the picked row of ``scores``
    scores: pd.DataFrame  # top, k, alpha, min_success, max_control_success, clean_acc_drop

    @property
    def top_fraction(self) -> float:
        return float(self.best["top"])

    @property
    def alpha(self) -> float:
        return float(self.best["alpha"])

    def metrics(self) -> dict[str, float]:
        return {"steer/tuned/top_fraction": self.top_fraction, "steer/tuned/alpha": self.alpha,
                "steer/tuned/k": float(self.best["k"]),
                "steer/tuned/score": float(self.best["score"])}


@dataclass
class Analysis:
    """Everything the stages produced; ``summary()`` is what ``memgen run`` prints."""

    behaviors: Behaviors
    neurons: Neurons | None = None
    probes: ProbeReport | None = None
    steering: SteeringResult | None = None
    grid: pd.DataFrame | None = None
    tuning: SteeringTuning | None = None
    consistency: IntraResult | None = None
    transfer: SteeringResult | None = None  # half B's neurons steering half A's items
    inter: InterTask | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # stage -> why


# -- stage 1: behaviors, pairs, splits ----------------------------------------------------------

def _items_of_pairs(pairs: list[Pair]) -> list[Item]:
    return list(dict.fromkeys((p.group, k) for p in pairs for k in (p.i, p.j)))


def _split(labelled: LabelledGroups, items: list[Item]) -> Split:
    labels = torch.tensor([int(labelled.labels[g][k] == Behavior.MEM) for g, k in items])
    return Split(items, [labelled.groups[g][k] for g, k in items], labels)


def _group_items(labelled: LabelledGroups, groups: list[int]) -> list[Item]:
    """All MEM/GEN variants of the given groups (``analysis.use_pairs=false``)."""
    return [(g, k) for g in groups for k, lab in enumerate(labelled.labels[g])
            if lab in (Behavior.MEM, Behavior.GEN)]


class NoPairsError(ValueError):
    """The model never showed both behaviors on one example: nothing to contrast."""


def label_conflict_set(cfg: DictConfig, model, tokenizer, task: Task,
                       stream: str = "perturb") -> LabelledGroups:
    """Generate on every perturbation (drawn from ``stream``) of the conflict set and label."""
    conflict = task.conflict_examples(cfg.task.n_conflict)
    groups = task.perturbation_set(conflict, cfg.task.n_perturbations, stream=stream)
    return label_perturbation_groups(model, tokenizer, task, groups, cfg.task.max_new_tokens,
                                     cfg.analysis.batch_size, cfg.trainer.num_beams)


def label_behaviors(cfg: DictConfig, model, tokenizer, task: Task,
                    allow_no_pairs: bool = False) -> Behaviors:
    """Generate on every perturbation of the conflict set, label, pair and split by example."""
    labelled = label_conflict_set(cfg, model, tokenizer, task)
    groups = labelled.groups
    pairs = find_pairs(labelled)
    fraction, seed = cfg.analysis.selection_fraction, cfg.seed
    if allow_no_pairs and len({p.group for p in pairs}) < 2 and cfg.analysis.use_pairs:
        empty = _split(labelled, [])
        return Behaviors(labelled, pairs, empty, empty, [], [])
    if cfg.analysis.use_pairs:
        sel_pairs, eval_pairs = split_pairs(pairs, fraction, seed)
        sel_items, eval_items = _items_of_pairs(sel_pairs), _items_of_pairs(eval_pairs)
    else:
        sel_pairs, eval_pairs = [], []
        usable = [g for g in range(len(groups)) if _group_items(labelled, [g])]
        random.Random(seed).shuffle(usable)
        n_sel = min(max(round(fraction * len(usable)), 1), len(usable) - 1)
        sel_items = _group_items(labelled, usable[:n_sel])
        eval_items = _group_items(labelled, usable[n_sel:])
    check_disjoint({g for g, _ in sel_items}, {g for g, _ in eval_items})
    return Behaviors(labelled, pairs, _split(labelled, sel_items), _split(labelled, eval_items),
                     sel_pairs, eval_pairs)


def capture_split(cfg: DictConfig, model, tokenizer, split: Split) -> Features:
    """One forward pass per item of ``split`` at every analysed site."""
    sites = resolve_sites(model, list(cfg.analysis.sites))
    values = collect_features(model, tokenizer, [ex.prompt for ex in split.examples], sites,
                              cfg.analysis.batch_size)
    return Features({it: row for row, it in enumerate(split.items)}, values, split.labels)


def capture(cfg: DictConfig, model, tokenizer, behaviors: Behaviors) -> Features:
    """The selection and evaluation items' activations, captured once."""
    sel, ev = behaviors.selection, behaviors.evaluation
    both = Split(sel.items + ev.items, sel.examples + ev.examples,
                 torch.cat([sel.labels, ev.labels]))
    return capture_split(cfg, model, tokenizer, both)


# -- stage 2: neurons -------------------------------------------------------------------------

def find_neurons(cfg: DictConfig, features: Features, split: Split) -> Neurons:
    """NMD, r, global ranking and the top-k selection on the selection split only."""
    x, y = features.take(split.items)
    stats = stream_stats([(x, y)])
    table = rank_neurons(stats)
    selection = select_neurons(stats, top_k=cfg.analysis.top_k,
                               top_fraction=cfg.analysis.top_fraction)
    chance = shuffle_control(x, y, max(1, cfg.analysis.n_shuffles), seed=cfg.seed)
    return Neurons(stats, table, selection, chance)


# -- stage 3: probes --------------------------------------------------------------------------

def run_probes(cfg: DictConfig, features: Features, behaviors: Behaviors,
               selection: NeuronSelection | None, tokenizer=None) -> ProbeReport:
    """A probe per site trained on the selection split, scored on the evaluation split; with
    the tokenizer, the input-only baseline is a probe on the whole prompt's tokens."""
    x_train, y_train = features.take(behaviors.selection.items)
    x_eval, y_eval = features.take(behaviors.evaluation.items)
    p = cfg.analysis.probe
    kw = {"epochs": p.epochs, "lr": p.lr, "weight_decay": p.weight_decay, "seed": cfg.seed}
    report = probe_sites(x_train, y_train, x_eval, y_eval, selection, **kw)
    if tokenizer is not None:
        sel, ev = behaviors.selection, behaviors.evaluation
        report.input_only_acc = input_only_accuracy(
            tokenizer, [ex.prompt for ex in sel.examples], sel.labels,
            [ex.prompt for ex in ev.examples], ev.labels, **kw)
    return report


# -- stage 4: steering ------------------------------------------------------------------------

def steering_sites(spec: str, analysed: list[str]) -> list[str]:
    """``analysis.steering.sites`` ("all", "resid", "mlp" or "resid.3,mlp.4") among the
    analysed sites, in their order; a name that was not analysed fails by name."""
    if spec == "all":
        return list(analysed)
    out: list[str] = []
    for name in (part.strip() for part in spec.split(",")):
        if name in ("resid", "mlp"):
            out += [site for site in analysed if site.startswith(name + ".")]
        elif name in analysed:
            out.append(name)
        else:
            raise ValueError(f"analysis.steering.sites: '{name}' is not an analysed site "
                             f"(analysed: {', '.join(analysed)})")
    if not out:
        raise ValueError(f"analysis.steering.sites: '{spec}' matches no analysed site "
                         f"(analysed: {', '.join(analysed)}; 'all' steers any of them)")
    return list(dict.fromkeys(out))


def steering_stats(cfg: DictConfig, stats: dict[str, SiteStats]) -> dict[str, SiteStats]:
    """The statistics of the steerable sites: the pool for the selection and the controls."""
    keep = steering_sites(cfg.analysis.steering.sites, list(stats))
    return {site: stats[site] for site in keep}


def select_for_steering(cfg: DictConfig, stats: dict[str, SiteStats]) -> NeuronSelection:
    """``analysis.steering.top_k/top_fraction`` (else the analysis selection's) among the
    steerable sites."""
    s = cfg.analysis.steering
    if s.top_k is None and s.top_fraction is None:
        top_k, top_fraction = cfg.analysis.top_k, cfg.analysis.top_fraction
    else:
        top_k, top_fraction = s.top_k, s.top_fraction
    return select_neurons(steering_stats(cfg, stats), top_k=top_k, top_fraction=top_fraction)


def steering_selection(cfg: DictConfig, neurons: Neurons) -> NeuronSelection:
    """The neurons steered (the analysis selection itself when nothing narrows it)."""
    s = cfg.analysis.steering
    if s.sites == "all" and s.top_k is None and s.top_fraction is None:
        return neurons.selection
    return select_for_steering(cfg, neurons.stats)


def tune_steering(cfg: DictConfig, model, tokenizer, task: Task, neurons: Neurons,
                  split: Split, clean: list[Example]) -> SteeringTuning:
    """Score ``tune_top_fraction`` x ``tune_alpha`` on the selection split (``grid_scores``)
    and pick the best cell within the control / clean-drop budget (``best_cell``), so the
    evaluation split is steered once, at a setting it did not choose."""
    s = cfg.analysis.steering
    scores = grid_scores(run_grid(cfg, model, tokenizer, task, neurons, split, clean,
                                  s.tune_top_fraction, s.tune_alpha))
    return SteeringTuning(best_cell(scores, s.tune_max_control, s.tune_max_clean_drop), scores)


def with_tuning(cfg: DictConfig, tuning: SteeringTuning) -> DictConfig:
    """A copy of ``cfg`` that steers at the tuned (top_fraction, alpha)."""
    out = copy.deepcopy(cfg)
    out.analysis.steering.top_k = None
    out.analysis.steering.top_fraction = tuning.top_fraction
    out.analysis.steering.alpha = tuning.alpha
    return out


def run_steering(cfg: DictConfig, model, tokenizer, task: Task, neurons: Neurons,
                 split: Split, clean: list[Example]) -> SteeringResult:
    """Steer the evaluation split at the configured (k, alpha), next to every control."""
    s = cfg.analysis.steering
    selection = steering_selection(cfg, neurons)
    controls = build_controls(steering_stats(cfg, neurons.stats), selection, cfg.seed,
                              tuple(s.controls))
    return evaluate_steering(model, tokenizer, task, split.examples, split.behaviors, selection,
                             s.alpha, cfg.task.max_new_tokens, cfg.analysis.batch_size, controls,
                             clean_examples=clean, num_beams=cfg.trainer.num_beams,
                             last_prompt_only=s.last_prompt_only)


def run_grid(cfg: DictConfig, model, tokenizer, task: Task, neurons: Neurons, split: Split,
             clean: list[Example], top_fractions: list[float] | None = None,
             alphas: list[float] | None = None) -> pd.DataFrame:
    """Success and side effects over ``grid_top_fraction`` x ``grid_alpha`` (or the given
    fractions and alphas) on ``split``, among the steerable sites."""
    s = cfg.analysis.steering
    return steering_grid(model, tokenizer, task, split.examples, split.behaviors,
                         steering_stats(cfg, neurons.stats),
                         list(top_fractions if top_fractions is not None
                              else s.grid_top_fraction),
                         list(alphas if alphas is not None else s.grid_alpha),
                         control_names=tuple(s.controls), clean_examples=clean,
                         max_new_tokens=cfg.task.max_new_tokens,
                         batch_size=cfg.analysis.batch_size, seed=cfg.seed,
                         num_beams=cfg.trainer.num_beams, last_prompt_only=s.last_prompt_only)


# -- stage 5: consistency ---------------------------------------------------------------------

def _stats_fn(features: Features):
    def stats_of(pairs: list[Pair]) -> dict[str, SiteStats]:
        return stream_stats([features.take(_items_of_pairs(pairs))])

    return stats_of


def seed_pair_sets(cfg: DictConfig, model, tokenizer, task: Task
                   ) -> tuple[dict[str, PairSet], dict[str, str]]:
    """Pairs from the conflict set perturbed with each of ``analysis.consistency_seeds``.

    Each seed draws new variants of the same conflict examples, so its pairs are a different
    data sample of the task on the same model. Returns the sets, and why any seed was skipped.
    """
    sets, skipped = {}, {}
    for seed in cfg.analysis.consistency_seeds:
        name = f"perturb_seed{seed}"
        labelled = label_conflict_set(cfg, model, tokenizer, task, stream=f"perturb:{seed}")
        pairs = find_pairs(labelled)
        if len({p.group for p in pairs}) < 2:
            skipped[name] = f"{len(pairs)} pairs: too few to select neurons on"
            continue
        features = capture_split(cfg, model, tokenizer,
                                 _split(labelled, _items_of_pairs(pairs)))
        sets[name] = PairSet(pairs, _stats_fn(features))
    return sets, skipped


def run_consistency(cfg: DictConfig, features: Features, behaviors: Behaviors,
                    extra_pair_sets: dict[str, PairSet] | None = None) -> IntraResult:
    """Neurons selected independently on disjoint halves of all pairs (and on the pairs of
    other perturbation seeds), against chance."""
    pairs = behaviors.selection_pairs + behaviors.evaluation_pairs
    return intra_task_consistency(_stats_fn(features), pairs, top_k=cfg.analysis.top_k,
                                  top_fraction=cfg.analysis.top_fraction, seed=cfg.seed,
                                  extra_pair_sets=extra_pair_sets)


def transfer_metrics(result: SteeringResult) -> dict[str, float]:
    """``consistency/intra/transfer/<dir>/[control_<name>/]success`` (and CIs, n)."""
    return {f"consistency/intra/transfer/{key.removeprefix('steer/')}": value
            for key, value in summary_metrics(result).items() if key.startswith("steer/")}


def run_transfer(cfg: DictConfig, model, tokenizer, task: Task, features: Features,
                 behaviors: Behaviors, intra: IntraResult) -> SteeringResult:
    """The steered neurons (steering sites and k), selected on half B of the pairs, steer half
    A's items next to the controls (built from half B's statistics): the selection generalizes
    beyond its own sample.

    B -> A on purpose: with ``selection_fraction`` 0.5 the halves are the selection and
    evaluation splits, so A -> B is the held-out steering result itself.
    """
    half_a, half_b = intra.halves
    stats_b = _stats_fn(features)(half_b)
    selection = select_for_steering(cfg, stats_b)  # the steered neurons, chosen on half B
    s = cfg.analysis.steering
    controls = build_controls(steering_stats(cfg, stats_b), selection, cfg.seed,
                              tuple(s.controls))
    target = _split(behaviors.labelled, _items_of_pairs(half_a))
    return evaluate_steering(model, tokenizer, task, target.examples, target.behaviors,
                             selection, s.alpha, cfg.task.max_new_tokens,
                             cfg.analysis.batch_size, controls, num_beams=cfg.trainer.num_beams,
                             last_prompt_only=s.last_prompt_only)


def run_inter_task(cfg: DictConfig, model, tokenizer, task: Task, features: Features,
                   behaviors: Behaviors) -> tuple[InterTask, dict[str, float]]:
    """Per sub-task selections on the shared model, their overlap against chance, and
    cross-task steering: neurons selected on task A (by the steering rule: sites, k, alpha)
    steer task B's evaluation items."""
    names = list(getattr(task, "subtasks", {}))
    if len(names) < 2:
        raise ValueError(f"inter-task consistency needs a task=mixture of >= 2 tasks that share "
                         f"one model; got task '{task.name}'")
    labelled = behaviors.labelled
    stats_by_task, evaluation = {}, {}
    for name in names:
        sel_items = [it for it in behaviors.selection.items
                     if labelled.groups[it[0]][it[1]].task == name]
        eval_items = [it for it in behaviors.evaluation.items
                      if labelled.groups[it[0]][it[1]].task == name]
        x, y = features.take(sel_items) if sel_items else ({}, torch.tensor([]))
        if not sel_items or y.min() == y.max():
            continue  # this sub-task showed only one behavior: it has no neurons to compare
        stats_by_task[name] = stream_stats([(x, y)])
        evaluation[name] = _split(labelled, eval_items)
    if len(stats_by_task) < 2:
        raise ValueError(f"inter-task consistency: only {sorted(stats_by_task)} showed both "
                         f"behaviors; need >= 2 sub-tasks with pairs")
    a = cfg.analysis
    selections = {name: select_neurons(st, top_k=a.top_k, top_fraction=a.top_fraction)
                  for name, st in stats_by_task.items()}
    jaccard, overlaps = inter_task_consistency(
        selections, universes={n: site_widths(st) for n, st in stats_by_task.items()})
    expected = overlap_matrix(list(selections), overlaps, "expected_jaccard")
    rows = []
    for source, stats in stats_by_task.items():
        selection = select_for_steering(cfg, stats)  # the steering rule: sites, k, alpha
        for target, split in evaluation.items():
            if not split.items:
                continue
            result = evaluate_steering(model, tokenizer, task, split.examples, split.behaviors,
                                       selection, a.steering.alpha, cfg.task.max_new_tokens,
                                       a.batch_size, num_beams=cfg.trainer.num_beams,
                                       last_prompt_only=a.steering.last_prompt_only)
            for direction, t in result.selected.items():
                rows.append({"source": source, "target": target, "direction": direction,
                             "success": t.success, "n": t.n})
    inter = InterTask(selections, jaccard, expected, pd.DataFrame(rows))
    return inter, inter.metrics(overlaps)


def analyse_model(cfg: DictConfig, model, tokenizer, task: Task,
                  stages: tuple[str, ...] = ("neurons", "probes", "steering", "grid",
                                             "consistency"),
                  allow_no_pairs: bool = False) -> Analysis:
    """Run the requested stages on one model; no tracking (the caller logs).

    Without pairs there is nothing to contrast: ``allow_no_pairs`` (used during training, when
    the model may not show both behaviors yet) returns the behavior counts alone.
    """
    model.eval()
    behaviors = label_behaviors(cfg, model, tokenizer, task, allow_no_pairs)
    result = Analysis(behaviors=behaviors, metrics=behaviors.metrics())
    if not behaviors.selection.items or not behaviors.evaluation.items:
        reason = (f"{len({p.group for p in behaviors.pairs})} conflict examples got MEM on one "
                  f"perturbation and GEN on another (need >= 2): train longer, change the seed, "
                  f"or set analysis.use_pairs=false")
        if allow_no_pairs:
            result.skipped = {stage: reason for stage in stages}
            return result
        raise NoPairsError(f"no pairs: {reason}")
    features = capture(cfg, model, tokenizer, behaviors)
    neurons = find_neurons(cfg, features, behaviors.selection)
    result.neurons = neurons
    result.metrics |= neurons.metrics()
    if "probes" in stages:
        try:
            result.probes = run_probes(cfg, features, behaviors, neurons.selection, tokenizer)
            result.metrics |= result.probes.metrics()
        except ValueError as exc:  # a split too small to fit a probe: the rest still stands
            result.skipped["probes"] = str(exc)
    clean = task.clean_examples()
    steer_cfg = cfg  # the tuned (top_fraction, alpha) also steer the transfer below
    if "steering" in stages:
        if cfg.analysis.steering.tune:
            result.tuning = tune_steering(cfg, model, tokenizer, task, neurons,
                                          behaviors.selection, clean)
            result.metrics |= result.tuning.metrics()
            steer_cfg = with_tuning(cfg, result.tuning)
        result.steering = run_steering(steer_cfg, model, tokenizer, task, neurons,
                                       behaviors.evaluation, clean)
        result.metrics |= summary_metrics(result.steering)
    if "grid" in stages:
        result.grid = run_grid(cfg, model, tokenizer, task, neurons, behaviors.evaluation, clean)
    if "consistency" in stages and cfg.analysis.consistency and cfg.analysis.use_pairs:
        extra, skipped_seeds = seed_pair_sets(cfg, model, tokenizer, task)
        result.skipped |= {f"consistency/{name}": why for name, why in skipped_seeds.items()}
        try:
            result.consistency = run_consistency(cfg, features, behaviors, extra)
            result.metrics |= result.consistency.to_metrics()
        except ValueError as exc:  # too few pairs to halve: the other stages still stand
            result.skipped["consistency"] = str(exc)
        if result.consistency is not None and cfg.analysis.consistency_transfer:
            result.transfer = run_transfer(steer_cfg, model, tokenizer, task, features,
                                           behaviors, result.consistency)
            result.metrics |= transfer_metrics(result.transfer)
    if "consistency" in stages and cfg.analysis.consistency and hasattr(task, "subtasks"):
        try:
            result.inter, inter_metrics_ = run_inter_task(steer_cfg, model, tokenizer, task,
                                                          features, behaviors)
            result.metrics |= inter_metrics_
        except ValueError as exc:
            result.skipped["inter_task"] = str(exc)
    return result
