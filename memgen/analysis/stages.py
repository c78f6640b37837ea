"""The analysis stages of ``memgen run``, on any Hugging Face causal LM.

behavior labels -> pairs -> selection / evaluation split -> activations at every site (captured
once) -> NMD and r -> ranking and selection -> probes -> steering with controls and side
effects -> intra-task consistency. Each stage takes the :class:`Subject` (model, tokenizer,
task) and the :class:`AnalysisSettings` and returns a typed result (``analysis/results.py``),
so a notebook, the Lightning callbacks and the sweeps run the very same code.
"""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Any

import pandas as pd
import torch

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
    inter_task_consistency,
    intra_task_consistency,
    overlap_matrix,
    site_widths,
)
from memgen.analysis.input_baseline import input_only_accuracy
from memgen.analysis.kinds_stage import is_legacy, run_kinds, steer_kind
from memgen.analysis.lens import answer_lens
from memgen.analysis.neurons import NeuronSelection, SiteStats
from memgen.analysis.probes import ProbeReport, check_disjoint, probe_sites
from memgen.analysis.results import (
    Analysis,
    Behaviors,
    Features,
    InterTask,
    Item,
    Neurons,
    Split,
    SteeringTuning,
)
from memgen.analysis.settings import AnalysisSettings, SteeringSettings, Subject
from memgen.analysis.sites import resolve_sites
from memgen.analysis.stats import (
    rank_neurons,
    select_neurons,
    shuffle_control,
    stream_stats,
)
from memgen.analysis.steering.attribution import attribution_scores, ranked_by
from memgen.analysis.steering.controls import build_controls
from memgen.analysis.steering.evaluation import (
    CleanBaseline,
    SteeringResult,
    clean_baseline,
    evaluate_steering,
    merge_directions,
    summary_metrics,
)
from memgen.analysis.steering.forced_labels import counting
from memgen.analysis.steering.intervene import positions_of
from memgen.analysis.steering.tuning import (
    best_cell,
    best_cells,
    direction_scores,
    grid_scores,
    steering_grid,
)
from memgen.analysis.timing import StageTimer
from memgen.tasks import Behavior, Example

__all__ = ["Analysis", "Behaviors", "Features", "InterTask", "Neurons", "NoPairsError", "Split",
           "SteeringTuning", "analyse_model", "contrast"]


# -- stage 1: behaviors, pairs, splits ----------------------------------------------------------

def _items_of_pairs(pairs: list[Pair]) -> list[Item]:
    return list(dict.fromkeys((p.group, k) for p in pairs for k in (p.i, p.j)))


def _split(labelled: LabelledGroups, items: list[Item]) -> Split:
    labels = torch.tensor([int(labelled.labels[g][k] == Behavior.MEM) for g, k in items])
    return Split(items, [labelled.groups[g][k] for g, k in items], labels)


def _group_items(labelled: LabelledGroups, groups: list[int]) -> list[Item]:
    """All MEM/GEN variants of the given groups (``use_pairs=False``)."""
    return [(g, k) for g in groups for k, lab in enumerate(labelled.labels[g])
            if lab in (Behavior.MEM, Behavior.GEN)]


class NoPairsError(ValueError):
    """The model never showed both behaviors on one example: nothing to contrast."""


def label_conflict_set(subject: Subject, settings: AnalysisSettings,
                       stream: str = "perturb") -> LabelledGroups:
    """Generate on every perturbation (drawn from ``stream``) of the conflict set and label."""
    task, d = subject.task, settings.decoding
    conflict = task.conflict_examples(settings.n_conflict)
    groups = task.perturbation_set(conflict, settings.n_perturbations, stream=stream)
    return label_perturbation_groups(subject.model, subject.tokenizer, task, groups,
                                     d.max_new_tokens, d.batch_size, d.num_beams)


def label_behaviors(subject: Subject, settings: AnalysisSettings,
                    allow_no_pairs: bool = False) -> Behaviors:
    """Generate on every perturbation of the conflict set, label, pair and split by example."""
    labelled = label_conflict_set(subject, settings)
    groups = labelled.groups
    pairs = find_pairs(labelled)
    fraction, seed = settings.selection_fraction, settings.seed
    if allow_no_pairs and len({p.group for p in pairs}) < 2 and settings.use_pairs:
        empty = _split(labelled, [])
        return Behaviors(labelled, pairs, empty, empty, [], [])
    if settings.use_pairs:
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


def capture_split(subject: Subject, settings: AnalysisSettings, split: Split) -> Features:
    """One forward pass per item of ``split`` at every analysed site."""
    sites = resolve_sites(subject.model, list(settings.sites))
    values = collect_features(subject.model, subject.tokenizer,
                              [ex.prompt for ex in split.examples], sites,
                              settings.decoding.batch_size)
    return Features({it: row for row, it in enumerate(split.items)}, values, split.labels)


def capture(subject: Subject, settings: AnalysisSettings, behaviors: Behaviors) -> Features:
    """The selection and evaluation items' activations, captured once."""
    sel, ev = behaviors.selection, behaviors.evaluation
    both = Split(sel.items + ev.items, sel.examples + ev.examples,
                 torch.cat([sel.labels, ev.labels]))
    return capture_split(subject, settings, both)


# -- stage 2: neurons -------------------------------------------------------------------------

def find_neurons(settings: AnalysisSettings, features: Features, split: Split) -> Neurons:
    """NMD, r, global ranking and the top-k selection on the selection split only."""
    x, y = features.take(split.items)
    stats = stream_stats([(x, y)])
    table = rank_neurons(stats)
    selection = select_neurons(stats, top_k=settings.top_k, top_fraction=settings.top_fraction)
    chance = shuffle_control(x, y, max(1, settings.n_shuffles), seed=settings.seed)
    return Neurons(stats, table, selection, chance)


def _no_pairs_reason(behaviors: Behaviors) -> str:
    return (f"{len({p.group for p in behaviors.pairs})} conflict examples got MEM on one "
            f"perturbation and GEN on another (need >= 2): train longer, change the seed, "
            f"or set analysis.use_pairs=false")


def contrast(subject: Subject, settings: AnalysisSettings, allow_no_pairs: bool = False,
             timer: StageTimer | None = None
             ) -> tuple[Behaviors, Features | None, Neurons | None]:
    """Stages 1-2, the part every later stage builds on: behaviors, the items' activations
    and the neurons. Without pairs, ``allow_no_pairs`` returns the behaviors alone (features
    and neurons None); otherwise :class:`NoPairsError`. ``timer`` gets a lap per stage."""
    timer = timer or StageTimer()
    subject.model.eval()
    behaviors = label_behaviors(subject, settings, allow_no_pairs)
    timer.lap("labelling")
    if not behaviors.selection.items or not behaviors.evaluation.items:
        if allow_no_pairs:
            return behaviors, None, None
        raise NoPairsError(f"no pairs: {_no_pairs_reason(behaviors)}")
    features = capture(subject, settings, behaviors)
    timer.lap("capture")
    neurons = find_neurons(settings, features, behaviors.selection)
    timer.lap("neurons")
    return behaviors, features, neurons


# -- stage 3: probes --------------------------------------------------------------------------

def run_probes(settings: AnalysisSettings, features: Features, behaviors: Behaviors,
               selection: NeuronSelection | None, tokenizer=None, model=None) -> ProbeReport:
    """A probe per site trained on the selection split, scored on the evaluation split; with
    the tokenizer, the input-only baseline is a probe on the whole prompt's tokens; with the
    model too, the answer lens (``lens``) beside each resid site."""
    x_train, y_train = features.take(behaviors.selection.items)
    x_eval, y_eval = features.take(behaviors.evaluation.items)
    p = settings.probe
    kw: dict[str, Any] = {"max_iter": p.max_iter, "initial_step": p.initial_step,
                          "weight_decay": p.weight_decay, "seed": settings.seed}
    report = probe_sites(x_train, y_train, x_eval, y_eval, selection, **kw)
    if tokenizer is not None:
        sel, ev = behaviors.selection, behaviors.evaluation
        report.input_only_acc = input_only_accuracy(
            tokenizer, [ex.prompt for ex in sel.examples], sel.labels,
            [ex.prompt for ex in ev.examples], ev.labels, **kw)
        if model is not None:
            report.add_lens(answer_lens(model, tokenizer, (x_train, y_train, sel.examples),
                                        (x_eval, y_eval, ev.examples), **kw))
    return report


# -- stage 4: steering ------------------------------------------------------------------------

def _band(name: str, analysed: list[str]) -> list[str] | None:
    """``mlp.1-2``: the analysed sites of that kind with a layer in the band (None: no band)."""
    kind, _, layers = name.partition(".")
    low, dash, high = layers.partition("-")
    if not dash or not low.isdigit() or not high.isdigit():
        return None
    return [site for site in analysed if site.partition(".")[0] == kind
            and int(low) <= int(site.partition(".")[2]) <= int(high)]


def steering_sites(spec: str, analysed: list[str]) -> list[str]:
    """``analysis.steering.sites`` ("all", "resid", "mlp", "resid.3,mlp.4" or layer bands like
    "mlp.1-2") among the analysed sites, in their order; a name that was not analysed fails by
    name."""
    if spec == "all":
        return list(analysed)
    out: list[str] = []
    for name in (part.strip() for part in spec.split(",")):
        band = _band(name, analysed)
        if band:
            out += band
        elif name in ("resid", "mlp"):
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


def steering_stats(steering: SteeringSettings, stats: dict[str, SiteStats]
                   ) -> dict[str, SiteStats]:
    """The statistics of the steerable sites: the pool for the selection and the controls."""
    keep = steering_sites(steering.sites, list(stats))
    return {site: stats[site] for site in keep}


def select_for_steering(settings: AnalysisSettings, stats: dict[str, SiteStats]
                        ) -> NeuronSelection:
    """``steering.top_k/top_fraction`` (else the analysis selection's) among the steerable
    sites."""
    s = settings.steering
    if s.top_k is None and s.top_fraction is None:
        top_k, top_fraction = settings.top_k, settings.top_fraction
    else:
        top_k, top_fraction = s.top_k, s.top_fraction
    return select_neurons(steering_stats(s, stats), top_k=top_k, top_fraction=top_fraction)


def steering_selection(settings: AnalysisSettings, neurons: Neurons) -> NeuronSelection:
    """The neurons steered (the analysis selection itself when nothing narrows or re-ranks
    it)."""
    s = settings.steering
    if s.sites == "all" and s.top_k is None and s.top_fraction is None and s.rank == "abs_r":
        return neurons.selection
    return select_for_steering(settings, neurons.stats)


def attributed(subject: Subject, settings: AnalysisSettings, stats: dict[str, SiteStats],
               split: Split) -> dict[str, SiteStats]:
    """``stats`` ranked for steering by attribution: each neuron's NMD times the margin's
    gradient at the steered positions, on ``split``'s items (never those later steered)."""
    s = settings.steering
    return ranked_by(stats, attribution_scores(
        subject, split.examples, split.labels, stats,
        positions_of(s.positions, s.last_prompt_only),
        batch_size=max(1, settings.decoding.batch_size // 2)))


def rank_by_attribution(subject: Subject, settings: AnalysisSettings, neurons: Neurons,
                        split: Split) -> Neurons:
    """``neurons`` whose statistics rank steering's picks by attribution on ``split`` (the
    selection split)."""
    return replace(neurons, stats=attributed(subject, settings, neurons.stats, split))


def rank_overlap(settings: AnalysisSettings, neurons: Neurons, ranked: Neurons
                 ) -> dict[str, float]:
    """``steer/rank_overlap``: the share of the steering pool's top neurons (the analysis's
    top_k / top_fraction) that abs(r) and attribution both pick."""
    s = settings.steering
    by_r, by_attr = (select_neurons(steering_stats(s, n.stats), top_k=settings.top_k,
                                    top_fraction=settings.top_fraction).keys()
                     for n in (neurons, ranked))
    return {"steer/rank_overlap": len(set(by_r) & set(by_attr)) / max(1, len(by_r))}


def unsteered_clean(subject: Subject, settings: AnalysisSettings,
                    clean: list[Example]) -> CleanBaseline | None:
    """The clean inputs' unsteered accuracy and log-probs: computed once per model, shared by
    tuning, the held-out steering and the grid (None without clean inputs)."""
    return clean_baseline(subject, clean, settings.steering_decoding) if clean else None


def tune_steering(subject: Subject, settings: AnalysisSettings, neurons: Neurons, split: Split,
                  clean: list[Example], baseline: CleanBaseline | None = None
                  ) -> SteeringTuning:
    """Score ``tune_top_fraction`` x ``tune_alpha`` on the selection split (``grid_scores``)
    and pick the best cell within the control / clean-drop budget (``best_cell``), so the
    evaluation split is steered once, at a setting it did not choose."""
    s = settings.steering
    grid = run_grid(subject, settings, neurons, split, clean, s.tune_top_fraction, s.tune_alpha,
                    baseline=baseline)
    scores = grid_scores(grid)
    by_direction = (best_cells(direction_scores(grid), s.tune_max_control,
                               s.tune_max_clean_drop) if per_direction(settings) else {})
    return SteeringTuning(best_cell(scores, s.tune_max_control, s.tune_max_clean_drop), scores,
                          grid, by_direction)


def per_direction(settings: AnalysisSettings) -> bool:
    """Whether tuning picks a cell per direction: ``tune_per_direction`` for the add
    intervention at the last prompt token or every pass (the others tune through kinds)."""
    s = settings.steering
    return (s.tune_per_direction and s.kind == "add"
            and positions_of(s.positions, s.last_prompt_only) in ("last_prompt", "every_pass"))


def run_steering(subject: Subject, settings: AnalysisSettings, neurons: Neurons, split: Split,
                 clean: list[Example], baseline: CleanBaseline | None = None,
                 directions: tuple[str, ...] = ("to_gen", "to_mem")) -> SteeringResult:
    """Steer ``split`` at the set (k, alpha), next to every control; a ``kind`` other than add
    or ``positions`` prompt/all steer through ``steering.compare`` (add_scaled and interchange
    need the activations and pairs: ``analyse_model``)."""
    s = settings.steering
    selection = steering_selection(settings, neurons)
    positions = positions_of(s.positions, s.last_prompt_only)
    if s.kind != "add" or positions not in ("last_prompt", "every_pass"):
        return steer_kind(subject, settings, steering_stats(s, neurons.stats), selection, split,
                          clean, baseline)
    controls = build_controls(steering_stats(s, neurons.stats), selection, settings.seed,
                              s.controls)
    return evaluate_steering(subject, split.examples, split.behaviors, selection, s.alpha,
                             controls, decoding=settings.steering_decoding,
                             clean_examples=clean,
                             baseline=baseline, last_prompt_only=s.last_prompt_only,
                             directions=directions)


def settings_by_direction(settings: AnalysisSettings, cells: dict[str, pd.Series]
                          ) -> dict[str, AnalysisSettings]:
    """The settings each direction is steered with: its tuned (top_fraction, alpha)."""
    return {d: settings.with_steering(settings.steering.at(cell["top"], cell["alpha"]))
            for d, cell in cells.items()}


def run_steering_by_direction(subject: Subject, settings: AnalysisSettings, neurons: Neurons,
                              split: Split, clean: list[Example],
                              cells: dict[str, pd.Series],
                              baseline: CleanBaseline | None = None) -> SteeringResult:
    """Each direction steered once at its own tuned cell (``tune_per_direction``), merged."""
    return merge_directions({
        d: run_steering(subject, at, neurons, split, clean, baseline, directions=(d,))
        for d, at in settings_by_direction(settings, cells).items()})


def run_grid(subject: Subject, settings: AnalysisSettings, neurons: Neurons, split: Split,
             clean: list[Example], top_fractions: tuple[float, ...] | None = None,
             alphas: tuple[float, ...] | None = None,
             baseline: CleanBaseline | None = None) -> pd.DataFrame:
    """Success and side effects over ``grid_top_fraction`` x ``grid_alpha`` (or the given
    fractions and alphas) on ``split``, among the steerable sites."""
    s = settings.steering
    split = capped(split, s.tune_max_items, settings.seed)
    return steering_grid(subject, split.examples, split.behaviors,
                         steering_stats(s, neurons.stats),
                         list(top_fractions if top_fractions is not None
                              else s.grid_top_fraction),
                         list(alphas if alphas is not None else s.grid_alpha),
                         control_names=s.controls, clean_examples=clean, baseline=baseline,
                         decoding=settings.steering_decoding, seed=settings.seed,
                         last_prompt_only=s.last_prompt_only)


def capped(split: Split, max_items: int | None, seed: int) -> Split:
    """At most ``max_items`` items per behaviour of ``split``, a seeded subsample in the split's
    order (all where a behaviour has fewer): tuning and the grid compare many cells, each on
    every item, while their pick needs only a few points of precision."""
    if max_items is None:
        return split
    rng = random.Random(f"steering-subsample:{seed}")
    keep: list[int] = []
    for label in (1, 0):
        rows = [i for i, y in enumerate(split.labels.tolist()) if y == label]
        keep += rows if len(rows) <= max_items else rng.sample(rows, max_items)
    keep.sort()
    if len(keep) == len(split.items):
        return split
    return Split(items=[split.items[i] for i in keep], examples=[split.examples[i] for i in keep],
                 labels=split.labels[keep])


def _pool(neurons: Neurons, spec: str) -> dict[str, SiteStats]:
    """The statistics of the sites ``spec`` names (a candidate of ``tune_sites``)."""
    keep = steering_sites(spec, list(neurons.stats))
    return {site: neurons.stats[site] for site in keep}


# -- stage 5: consistency ---------------------------------------------------------------------

def _stats_fn(features: Features):
    def stats_of(pairs: list[Pair]) -> dict[str, SiteStats]:
        return stream_stats([features.take(_items_of_pairs(pairs))])

    return stats_of


def seed_pair_sets(subject: Subject, settings: AnalysisSettings
                   ) -> tuple[dict[str, PairSet], dict[str, str]]:
    """Pairs from the conflict set perturbed with each of ``consistency_seeds``.

    Each seed draws new variants of the same conflict examples, so its pairs are a different
    data sample of the task on the same model. Returns the sets, and why any seed was skipped.
    """
    sets, skipped = {}, {}
    task = subject.task
    conflict = task.conflict_examples(settings.n_conflict)

    def variants(stream: str) -> list[list[str]]:
        groups = task.perturbation_set(conflict, settings.n_perturbations, stream=stream)
        return [[ex.prompt for ex in group] for group in groups]

    base = variants("perturb")
    for seed in settings.consistency_seeds:
        name = f"perturb_seed{seed}"
        if variants(f"perturb:{seed}") == base:  # never compare a set with itself
            skipped[name] = "the same variants as the base pairs (the data gives every variant)"
            continue
        labelled = label_conflict_set(subject, settings, stream=f"perturb:{seed}")
        pairs = find_pairs(labelled)
        if len({p.group for p in pairs}) < 2:
            skipped[name] = f"{len(pairs)} pairs: too few to select neurons on"
            continue
        features = capture_split(subject, settings, _split(labelled, _items_of_pairs(pairs)))
        sets[name] = PairSet(pairs, _stats_fn(features))
    return sets, skipped


def run_consistency(settings: AnalysisSettings, features: Features, behaviors: Behaviors,
                    extra_pair_sets: dict[str, PairSet] | None = None) -> IntraResult:
    """Neurons selected independently on disjoint halves of all pairs (and on the pairs of
    other perturbation seeds), against chance."""
    pairs = behaviors.selection_pairs + behaviors.evaluation_pairs
    return intra_task_consistency(_stats_fn(features), pairs, top_k=settings.top_k,
                                  top_fraction=settings.top_fraction, seed=settings.seed,
                                  extra_pair_sets=extra_pair_sets)


def transfer_metrics(result: SteeringResult) -> dict[str, float]:
    """``consistency/intra/transfer/<dir>/[control_<name>/]success`` (and CIs, n)."""
    return {f"consistency/intra/transfer/{key.removeprefix('steer/')}": value
            for key, value in summary_metrics(result).items() if key.startswith("steer/")}


def run_transfer(subject: Subject, settings: AnalysisSettings, features: Features,
                 behaviors: Behaviors, intra: IntraResult) -> SteeringResult:
    """The steered neurons (steering sites and k, ranked as ``steering.rank`` says), selected on
    half B of the pairs, steer half A's items next to the controls (built from half B's
    statistics): the selection generalizes beyond its own sample.

    B -> A on purpose: with ``selection_fraction`` 0.5 the halves are the selection and
    evaluation splits, so A -> B is the held-out steering result itself.
    """
    half_a, half_b = intra.halves
    stats_b = _stats_fn(features)(half_b)
    s = settings.steering
    if s.rank == "attribution":  # ranked by half B's own items' gradients, as steering ranks
        stats_b = attributed(subject, settings, stats_b,
                             _split(behaviors.labelled, _items_of_pairs(half_b)))
    selection = select_for_steering(settings, stats_b)  # the steered neurons, chosen on half B
    controls = build_controls(steering_stats(s, stats_b), selection, settings.seed, s.controls)
    target = _split(behaviors.labelled, _items_of_pairs(half_a))
    return evaluate_steering(subject, target.examples, target.behaviors, selection, s.alpha,
                             controls, decoding=settings.steering_decoding,
                             last_prompt_only=s.last_prompt_only)


def run_inter_task(subject: Subject, settings: AnalysisSettings, features: Features,
                   behaviors: Behaviors) -> tuple[InterTask, dict[str, float]]:
    """Per sub-task selections on the shared model, their overlap against chance, and
    cross-task steering: neurons selected on task A (by the steering rule: sites, k, alpha)
    steer task B's evaluation items."""
    task = subject.task
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
    selections = {name: select_neurons(st, top_k=settings.top_k,
                                       top_fraction=settings.top_fraction)
                  for name, st in stats_by_task.items()}
    jaccard, overlaps = inter_task_consistency(
        selections, universes={n: site_widths(st) for n, st in stats_by_task.items()})
    expected = overlap_matrix(list(selections), overlaps, "expected_jaccard")
    s = settings.steering
    rows = []
    for source, stats in stats_by_task.items():
        selection = select_for_steering(settings, stats)  # the steering rule: sites, k, alpha
        for target, split in evaluation.items():
            if not split.items:
                continue
            result = evaluate_steering(subject, split.examples, split.behaviors, selection,
                                       s.alpha, decoding=settings.steering_decoding,
                                       last_prompt_only=s.last_prompt_only)
            for direction, t in result.selected.items():
                rows.append({"source": source, "target": target, "direction": direction,
                             "success": t.success, "n": t.n})
    inter = InterTask(selections, jaccard, expected, pd.DataFrame(rows))
    return inter, inter.metrics(overlaps)


# -- all stages -------------------------------------------------------------------------------

STAGES = ("neurons", "probes", "steering", "grid", "consistency")


def analyse_model(subject: Subject, settings: AnalysisSettings,
                  stages: tuple[str, ...] = STAGES, allow_no_pairs: bool = False) -> Analysis:
    """Run the requested stages on one model; no tracking (the caller logs).

    Without pairs there is nothing to contrast: ``allow_no_pairs`` (used during training, when
    the model may not show both behaviors yet) returns the behavior counts alone. The metrics
    include each stage's wall time, ``time/<stage>_s`` (``analysis/timing.py``), and with
    ``steering.forced_labels`` how many items were labelled by teacher-forced passes and the
    share decoded instead (``steering/tf_*``, ``steering/forced_labels.py``).
    """
    with counting() as tally:
        result = _analyse_model(subject, settings, stages, allow_no_pairs)
    result.metrics |= tally.metrics()
    return result


def _analyse_model(subject: Subject, settings: AnalysisSettings, stages: tuple[str, ...],
                   allow_no_pairs: bool) -> Analysis:
    timer = StageTimer()
    behaviors, features, neurons = contrast(subject, settings, allow_no_pairs, timer)
    result = Analysis(behaviors=behaviors, metrics=behaviors.metrics())
    if features is None or neurons is None:
        result.skipped = {stage: _no_pairs_reason(behaviors) for stage in stages}
        result.metrics |= timer.metrics()
        return result
    result.neurons = neurons
    result.metrics |= neurons.metrics()
    if "probes" in stages:
        try:
            result.probes = run_probes(settings, features, behaviors, neurons.selection,
                                       subject.tokenizer, subject.model)
            result.metrics |= result.probes.metrics()
        except ValueError as exc:  # a split too small to fit a probe: the rest still stands
            result.skipped["probes"] = str(exc)
        timer.lap("probes")
    clean = subject.task.clean_examples()
    baseline = (unsteered_clean(subject, settings, clean)
                if "steering" in stages or "grid" in stages else None)
    if baseline is not None:
        timer.lap("clean_baseline")
    ranked = neurons  # the statistics steering selects from: ranked by attribution if asked
    if settings.steering.rank == "attribution" and ("steering" in stages or "grid" in stages):
        ranked = rank_by_attribution(subject, settings, neurons, behaviors.selection)
        result.metrics |= rank_overlap(settings, neurons, ranked)
        timer.lap("attribution")
    steered = settings  # the tuned (top_fraction, alpha) also steer the transfer below
    if "steering" in stages and not is_legacy(settings):
        result.kinds = run_kinds(subject, settings, ranked, features, behaviors, clean,
                                 baseline, lambda spec: _pool(ranked, spec))
        result.steering = result.kinds.result
        result.metrics |= summary_metrics(result.steering) | result.kinds.metrics
        kind, positions, sites = result.kinds.pick
        if kind == "add" and positions in ("last_prompt", "every_pass"):
            best = result.kinds.tuning.best
            steered = settings.with_steering(replace(
                settings.steering.at(best["top"], best["alpha"]), sites=sites,
                positions=positions))
        timer.lap("steering_kinds")  # tuning over the candidates and their held-out scores
    elif "steering" in stages:
        if settings.steering.tune:
            result.tuning = tune_steering(subject, settings, ranked, behaviors.selection, clean,
                                          baseline)
            result.metrics |= result.tuning.metrics()
            steered = settings.with_steering(
                settings.steering.at(result.tuning.top_fraction, result.tuning.alpha))
            timer.lap("steering_tuning")
        cells = result.tuning.by_direction if result.tuning is not None else {}
        if cells:
            result.steering = run_steering_by_direction(
                subject, settings, ranked, behaviors.evaluation, clean, cells, baseline)
            selections: NeuronSelection | dict[str, NeuronSelection] = {
                d: steering_selection(at, ranked)
                for d, at in settings_by_direction(settings, cells).items()}
        else:
            result.steering = run_steering(subject, steered, ranked, behaviors.evaluation,
                                           clean, baseline)
            selections = steering_selection(steered, ranked)
        result.metrics |= summary_metrics(result.steering)
        result.kinds = run_kinds(subject, steered, ranked, features, behaviors, clean,
                                 baseline, lambda spec: _pool(ranked, spec), result.steering,
                                 selections)
        result.metrics |= result.kinds.metrics
        timer.lap("steering_evaluation")
    if "grid" in stages:
        result.grid = run_grid(subject, settings, ranked, behaviors.evaluation, clean,
                               baseline=baseline)
        timer.lap("grid")
    if "consistency" in stages and settings.consistency and settings.use_pairs:
        extra, skipped_seeds = seed_pair_sets(subject, settings)
        result.skipped |= {f"consistency/{name}": why for name, why in skipped_seeds.items()}
        try:
            result.consistency = run_consistency(settings, features, behaviors, extra)
            result.metrics |= result.consistency.to_metrics()
        except ValueError as exc:  # too few pairs to halve: the other stages still stand
            result.skipped["consistency"] = str(exc)
        timer.lap("consistency")
        if result.consistency is not None and settings.consistency_transfer:
            result.transfer = run_transfer(subject, steered, features, behaviors,
                                           result.consistency)
            result.metrics |= transfer_metrics(result.transfer)
            timer.lap("transfer")
    if "consistency" in stages and settings.consistency and hasattr(subject.task, "subtasks"):
        try:
            result.inter, inter_metrics_ = run_inter_task(subject, steered, features, behaviors)
            result.metrics |= inter_metrics_
        except ValueError as exc:
            result.skipped["inter_task"] = str(exc)
        timer.lap("inter_task")
    result.metrics |= timer.metrics()
    return result
