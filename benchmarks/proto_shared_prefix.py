"""Prototype (not used by memgen): the speed-up forced labels miss, measured.

Teacher-forced labels recompute each prompt in every pass, and the prompt dominates the cost
(answers are 1-2 tokens), so they measured slower than decoding. With ``last_prompt`` and
``every_pass`` steering, every prompt position but the last is *unsteered*: its keys and
values are the same for every grid cell, method, direction and alpha. This prototype computes
them once per item group (``prefix_cache``), then labels each steered call by feeding only the
last prompt token plus the guessed answer on a copy of that cache, and verifies the guess as
forced labels do (``read_proof``: a read counts only with a top-2 gap above rounding; a wrong
guess's cache slots are masked out, later passes feed only new tokens). It relies on the model
forward's KV-cache arguments (``past_key_values``, being renamed ``cache`` in transformers 5.x)
and ``copy.deepcopy`` of the returned cache: the contracts memgen avoids elsewhere.

Trains one model as ``bench_forced_labels.py`` does (``--quick``: the small one), then on the
selection split's MEM / GEN items times the legacy steering's decoded outputs (hooks.steer +
generate) against the prototype at alphas 1, 3, 5, 9, both directions, last_prompt and
every_pass, and counts identical output strings.
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time

import torch

from memgen.analysis.generation import decode_new_tokens, encode_prompts, position_ids
from memgen.analysis.steering.forced_labels import (
    _token_ids,
    candidates,
    guess,
    legacy_steering,
    read_proof,
    stop_token,
    tie_tolerance,
)
from memgen.analysis.steering.intervene import forced_layout, intervene


@torch.no_grad()
def prefix_cache(model, tok, examples) -> dict:
    """The unsteered keys/values of every prompt but its last token (one left-padded batch)."""
    batch = encode_prompts(tok, [ex.prompt for ex in examples], "cpu")
    ids, mask = batch["input_ids"], batch["attention_mask"]
    out = model(input_ids=ids[:, :-1], attention_mask=mask[:, :-1],
                position_ids=position_ids(mask)[:, :-1], use_cache=True)
    return {"cache": out.past_key_values, "mask": mask[:, :-1], "last": ids[:, -1].tolist(),
            "plen": mask.sum(1)}


def _common(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


@torch.no_grad()
def shared_outputs(model, tok, examples, max_new_tokens: int, pre: dict, steering,
                   prefer: str = "mem") -> list[str | None]:
    """Greedy outputs under ``steering`` (last_prompt / every_pass), None where unproven."""
    stop, pad, m = stop_token(tok), tok.pad_token_id, max_new_tokens
    limit, tol, b = m - 1, tie_tolerance(torch.float32), len(examples)
    texts = [candidates(ex, prefer) for ex in examples]
    flat = iter(_token_ids(tok, [t for a in texts for t in a]))
    answers = [[next(flat) for _ in a] for a in texts]
    cache, full, plen = copy.deepcopy(pre["cache"]), pre["mask"].clone(), pre["plen"]
    proofs, cached, reads = [None] * b, [0] * b, [[] for _ in range(b)]
    with intervene(model, steering.intervention, steering.alpha, steering.direction,
                   steering.positions) as state:
        first = True
        while True:
            if first:
                news = [[pre["last"][i]] + guess([], answers[i], limit) for i in range(b)]
            else:
                news = [guess(p.known, answers[i], limit)[cached[i]:]
                        if not (p.done or p.unsure) else [] for i, p in enumerate(proofs)]
                if not any(news):
                    break
            w = max(map(len, news))
            ids = torch.tensor([n + [pad] * (w - len(n)) for n in news], dtype=torch.long)
            new = torch.tensor([[1] * len(n) + [0] * (w - len(n)) for n in news])
            pos = (torch.tensor(cached) + plen - int(first)).unsqueeze(1) + torch.arange(w)
            last = torch.zeros(b, w, dtype=torch.bool)
            last[:, 0] = first
            with forced_layout(state, last, last, new.bool() & ~last):
                out = model(input_ids=ids, attention_mask=torch.cat([full, new], 1),
                            position_ids=pos, past_key_values=cache, use_cache=True)
            cache = out.past_key_values
            top = torch.topk(out.logits.float(), 2, -1)
            values, tops = top.values.tolist(), top.indices.tolist()
            valid = torch.zeros(b, w, dtype=torch.long)
            for i, n in enumerate(news):
                if not n:
                    continue
                got = [(values[i][j], tops[i][j]) for j in range(len(n))]
                fed = n[1:] if first else proofs[i].known[:cached[i]] + n
                reads[i] = got if first else reads[i][:cached[i] + 1] + got
                proof = read_proof(fed, [r[0] for r in reads[i]], [r[1] for r in reads[i]], m,
                                   stop, tol)
                common = _common(proof.known, fed)
                start = int(first)  # the last prompt token's slot is always kept
                valid[i, :start] = 1
                valid[i, start:start + common - cached[i]] = 1
                cached[i], proofs[i] = common, proof
            full = torch.cat([full, valid], 1)
            first = False
    return [decode_new_tokens(tok, torch.tensor([p.known + [stop]]))[0] if p.done else None
            for p in proofs]


def main() -> None:
    import bench_forced_labels as bench

    from memgen.analysis.settings import Subject
    from memgen.analysis.stages import contrast, steering_stats
    from memgen.analysis.stats import select_neurons
    from memgen.analysis.steering.evaluation import _outputs
    from memgen.config.adapter import settings_from_config

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"before: {bench._uptime()}; torch threads {torch.get_num_threads()}")
    with tempfile.TemporaryDirectory() as store:
        cfg, trained = bench._train(bench.QUICK if args.quick else bench.DEFAULT, store,
                                    args.threads)
    torch.set_num_threads(args.threads)
    subject = Subject(trained.model, trained.tokenizer, trained.task)
    model, tok = subject.model, subject.tokenizer
    settings = settings_from_config(cfg)
    behaviors, _features, neurons = contrast(subject, settings)
    d = settings.decoding
    sel = select_neurons(steering_stats(settings.steering, neurons.stats), top_fraction=0.1)
    split = behaviors.selection
    groups = {"to_gen": [e for e, b in zip(split.examples, split.behaviors, strict=True)
                         if b.value == "MEM"],
              "to_mem": [e for e, b in zip(split.examples, split.behaviors, strict=True)
                         if b.value == "GEN"]}
    start = time.perf_counter()
    pres = {k: prefix_cache(model, tok, v) for k, v in groups.items()}
    took = {"decode": 0.0, "shared": time.perf_counter() - start}
    same = total = unproven = 0
    for last_prompt_only in (True, False):
        for alpha in (1.0, 3.0, 5.0, 9.0):
            for direction, items in groups.items():
                prefer = "mem" if direction == "to_gen" else "gen"
                start = time.perf_counter()
                want = _outputs(subject, items, d, (sel, alpha, direction, last_prompt_only))
                took["decode"] += time.perf_counter() - start
                start = time.perf_counter()
                got = shared_outputs(model, tok, items, d.max_new_tokens, pres[direction],
                                     legacy_steering(sel, alpha, direction, last_prompt_only),
                                     prefer)
                took["shared"] += time.perf_counter() - start
                same += sum(a == b for a, b in zip(want, got, strict=True))
                unproven += sum(g is None for g in got)
                total += len(want)
    print(f"decode {took['decode']:.2f} s, shared prefix (its one prefix pass included) "
          f"{took['shared']:.2f} s, speed-up {took['decode'] / took['shared']:.1f}x; "
          f"identical outputs {same}/{total}, unproven {unproven}")
    print(f"after: {bench._uptime()}; torch threads {torch.get_num_threads()}")


if __name__ == "__main__":
    main()
