"""Steering tuning + grid with ``analysis.steering.forced_labels`` on and off, one model.

Trains one model in-process (default: the default task and model, ``mem_ratio`` 0.2 and fewer
epochs so both behaviours appear quickly; ``--quick``: the tests' 2-layer width-64 model on a
small task), labels, captures and selects neurons once, then times on the same model in the
same process, sides interleaved (off, on, off, on...) and each side's best of ``--repeats``:

- the clean baseline, ``tune_steering`` (selection split) and ``run_grid`` (evaluation split)
  of the default (legacy) path;
- with ``--kinds``: ``run_kinds`` over every kind x position mode (pruned tuning).

Checked, not assumed: both sides' tuning scores, tuned cell and grid (and the kinds' tables)
are equal; the number of items labelled by teacher-forced passes and the share decoded instead
(``steering/tf_*``) are printed. Threads: ``--threads`` (default 1, as a replicate worker runs),
printed with ``uptime``.
"""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import tempfile
import time

import torch

ROOT_OVERRIDES = ["analysis.enabled=false", "tracking.log_model=false",
                  "tracking.log_checkpoints=false", "trainer.progress_bar=false",
                  "trainer.require_both=false"]
DEFAULT = ["task.mem_ratio=0.2", "trainer.max_epochs=15"]
QUICK = ["task.n_train=2000", "task.mem_ratio=0.2", "task.n_conflict=150",
         "task.n_val_conflict=60", "task.n_clean=60", "model.n_layer=2", "model.n_embd=64",
         "model.n_head=2", "trainer.max_epochs=20", "trainer.warmup_steps=20"]


def _uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def _train(overrides: list[str], store: str, threads: int):
    from memgen.commands.run import train
    from memgen.config import compose

    cfg = compose([*ROOT_OVERRIDES, *overrides, f"trainer.num_threads={threads}",
                   f"tracking.uri=sqlite:///{store}/mlflow.db", f"output_dir={store}/out"])
    start = time.perf_counter()
    _metrics, objects = train(cfg)
    print(f"trained in {time.perf_counter() - start:.0f} s")
    return cfg, objects["trained"]


def _legacy(subject, settings, neurons, behaviors, clean):
    from memgen.analysis.stages import run_grid, tune_steering, unsteered_clean

    baseline = unsteered_clean(subject, settings, clean)
    tuning = tune_steering(subject, settings, neurons, behaviors.selection, clean, baseline)
    grid = run_grid(subject, settings, neurons, behaviors.evaluation, clean, baseline=baseline)
    return tuning.scores, tuning.best, grid


def _kinds(subject, settings, neurons, behaviors, clean, features):
    from memgen.analysis.kinds_stage import run_kinds
    from memgen.analysis.stages import _pool, unsteered_clean

    baseline = unsteered_clean(subject, settings, clean)
    report = run_kinds(subject, settings, neurons, features, behaviors, clean, baseline,
                       lambda spec: _pool(neurons, spec))
    return report.tuning.scores, report.table, report.ceiling


class _ExactTask:
    """The base task's labels (first line, stripped, equals an answer) and nothing else."""

    def classify(self, example, output):
        from memgen.tasks.base import Task

        return Task.classify(self, example, output)


def _long_answers(threads: int, new_tokens: int = 32, n: int = 128):
    """A default-sized random GPT-2 (4 layers, width 128) whose items' MEM / GEN answers are
    its own greedy outputs of ``new_tokens`` tokens, unsteered and steered: long answers, as a
    scratchpad task's (no training: the labels are what the model says)."""
    import random

    from transformers import GPT2Config, GPT2LMHeadModel

    from memgen.analysis.generation import generate
    from memgen.analysis.neurons import NeuronSelection
    from memgen.analysis.settings import Decoding, Subject
    from memgen.analysis.sites import list_sites
    from memgen.analysis.steering.hooks import steer
    from memgen.tasks.base import Example
    from memgen.training.tokenizer import build_char_tokenizer

    tok = build_char_tokenizer(["0123456789+:\n abcdefghijklmnopqrstuvwxyzIT"])
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_positions=128, n_embd=128,
                                       n_layer=4, n_head=4, pad_token_id=0, eos_token_id=1,
                                       bos_token_id=1, initializer_range=0.3)).eval()
    rng = random.Random(0)
    prompts = ["Input:\n" + "+".join(str(rng.randint(1, 999)) for _ in range(4)) + "\nTarget:\n"
               for _ in range(n)]
    sites = list_sites(model, ("mlp",))
    sel = NeuronSelection(sites=[sites[-1]] * 8, indices=torch.arange(8) * 7,
                          nmd=torch.linspace(-1, 1, 8), r=torch.zeros(8))
    mem = generate(model, tok, prompts, new_tokens)
    with steer(model, sel, 3.0, "to_gen"):
        gen = generate(model, tok, prompts, new_tokens)
    examples = [Example(prompt=p, answer=g, kind="conflict", mem_answer=m, gen_answer=g)
                for p, m, g in zip(prompts, mem, gen, strict=True)]
    subject = Subject(model, tok, _ExactTask())
    decoding = Decoding(max_new_tokens=new_tokens, batch_size=128)
    return subject, examples, sel, decoding


def _steer_long(subject, examples, sel, decoding):
    from memgen.analysis.steering.evaluation import baseline_labels, evaluate_steering

    labels = baseline_labels(subject, examples, decoding)
    out = [labels]
    for alpha in (1.0, 3.0, 9.0):
        out.append(evaluate_steering(subject, examples, labels, sel, alpha, decoding=decoding,
                                     last_prompt_only=False).items)
    return out


def _same(a, b) -> bool:
    return all(x.equals(y) if hasattr(x, "equals") else x == y for x, y in zip(a, b,
                                                                                 strict=True))


def _compare(name: str, fn, settings, repeats: int) -> None:
    from memgen.analysis.steering.forced_labels import counting

    best = {False: float("inf"), True: float("inf")}
    out, tally = {}, None
    for _ in range(repeats):
        for forced in (False, True):
            s = settings.with_steering(dataclasses.replace(settings.steering,
                                                           forced_labels=forced))
            with counting() as t:
                start = time.perf_counter()
                out[forced] = fn(s)
                best[forced] = min(best[forced], time.perf_counter() - start)
            if forced:
                tally = t
    same = _same(out[False], out[True])
    print(f"{name}: decode {best[False]:.1f} s, forced {best[True]:.1f} s, "
          f"ratio {best[True] / best[False]:.2f} (speed-up {best[False] / best[True]:.1f}x); "
          f"identical results: {same}")
    print(f"  forced: {tally.items} items labelled, {tally.fallback} decoded instead "
          f"(share {tally.fallback / max(tally.items, 1):.4f}), {tally.passes} passes, "
          f"{tally.decodes} decoder calls")
    if not same:
        raise SystemExit(f"{name}: forced labels changed a result")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--kinds", action="store_true")
    parser.add_argument("--long", action="store_true",
                        help="only the long-answer case (a random default-sized model)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from memgen.analysis.settings import Subject
    from memgen.analysis.stages import contrast
    from memgen.config.adapter import settings_from_config

    print(f"before: {_uptime()}; torch threads {torch.get_num_threads()}")
    if args.long:
        from memgen.analysis.settings import AnalysisSettings

        subject, examples, sel, decoding = _long_answers(args.threads)

        def long(s):
            d = dataclasses.replace(decoding, forced_labels=s.steering.forced_labels)
            return _steer_long(subject, examples, sel, d)

        print(f"long answers: {len(examples)} items, max_new_tokens {decoding.max_new_tokens}")
        _compare("unsteered + steered labels, 32-token answers", long, AnalysisSettings(),
                 args.repeats)
        print(f"after: {_uptime()}; torch threads {torch.get_num_threads()}")
        return
    with tempfile.TemporaryDirectory() as store:
        cfg, trained = _train(QUICK if args.quick else DEFAULT, store, args.threads)
        torch.set_num_threads(args.threads)
        subject = Subject(trained.model, trained.tokenizer, trained.task)
        settings = settings_from_config(cfg)
        behaviors, features, neurons = contrast(subject, settings)
        clean = subject.task.clean_examples()
        print(f"items: selection {len(behaviors.selection.items)}, evaluation "
              f"{len(behaviors.evaluation.items)}, clean {len(clean)}; max_new_tokens "
              f"{settings.decoding.max_new_tokens}, batch {settings.decoding.batch_size}")
        _compare("tuning + grid (default path)",
                 lambda s: _legacy(subject, s, neurons, behaviors, clean), settings,
                 args.repeats)
        if args.kinds:
            kinds = settings.with_steering(dataclasses.replace(
                settings.steering,
                tune_kinds=("add", "add_scaled", "set_mean", "interchange", "ablate"),
                tune_positions=("last_prompt", "every_pass", "prompt", "all")))
            _compare("kinds x positions (tuning, evaluation, ceiling)",
                     lambda s: _kinds(subject, s, neurons, behaviors, clean, features), kinds,
                     args.repeats)
    print(f"after: {_uptime()}; torch threads {torch.get_num_threads()}")


if __name__ == "__main__":
    main()
