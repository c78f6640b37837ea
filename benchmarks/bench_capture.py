"""Capture overhead: ``collect_features`` vs the same batched forward pass without hooks.

Both sides run in this process on the same random GPT-2 (4 layers, width 128), the same
left-padded batches and the same forward arguments (``capture.forward_inputs``), so the ratio
isolates what capture adds: hooks at every site and the copy of ``h[:, -1]``. A third row times
a default Hugging Face forward (all positions' logits) for reference.

Measured on a shared 2-core machine, so: one torch thread, the sides interleaved, CPU time of
this process (``time.process_time``, insensitive to other processes taking the cores) next to
wall time, many short rounds in alternating order, and the ratio as the median of the
per-round ratios.
"""

from __future__ import annotations

import random
import statistics
import time

import torch
from transformers import GPT2Config, GPT2LMHeadModel

from memgen.analysis import generation
from memgen.analysis.capture import collect_features, forward_inputs
from memgen.analysis.sites import list_sites

N_PROMPTS, BATCH, ROUNDS, THREADS = 128, 64, 21, 1


def _setup():
    from memgen.training.tokenizer import build_char_tokenizer

    tokenizer = build_char_tokenizer(["0123456789+:\n Inputarge"])
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=128, n_embd=128, n_layer=4,
                        n_head=4, bos_token_id=1, eos_token_id=1, pad_token_id=0)
    model = GPT2LMHeadModel(config).eval()
    rng = random.Random(0)
    prompts = ["Input:\n" + "+".join(str(rng.randint(1, 999)) for _ in range(rng.randint(2, 6)))
               + "\nTarget:\n" for _ in range(N_PROMPTS)]
    return model, tokenizer, prompts


@torch.no_grad()
def _plain(model, tokenizer, prompts, same_call: bool) -> None:
    for start in range(0, len(prompts), BATCH):
        batch = generation.encode_prompts(tokenizer, prompts[start:start + BATCH], "cpu")
        model(**(forward_inputs(model, batch) if same_call else batch))


def _timed(fn) -> tuple[float, float]:
    """(CPU seconds of this process, wall seconds) of one call."""
    cpu, wall = time.process_time(), time.perf_counter()
    fn()
    return time.process_time() - cpu, time.perf_counter() - wall


def run(threads: int = THREADS) -> list[dict]:
    from _common import load, pinned_threads

    with pinned_threads(threads):
        model, tokenizer, prompts = _setup()
        sites = list_sites(model)
        sides = {
            "capture": lambda: collect_features(model, tokenizer, prompts, sites, BATCH),
            "plain": lambda: _plain(model, tokenizer, prompts, same_call=True),
            "default": lambda: _plain(model, tokenizer, prompts, same_call=False),
        }
        for fn in sides.values():  # warm-up
            fn()
        cpu: dict[str, list[float]] = {name: [] for name in sides}
        wall: dict[str, list[float]] = {name: [] for name in sides}
        for round_ in range(ROUNDS):
            names = list(sides) if round_ % 2 else list(sides)[::-1]  # alternate the order
            for name in names:
                c, w = _timed(sides[name])
                cpu[name].append(c)
                wall[name].append(w)
    ratio = statistics.median(p / c for p, c in zip(cpu["plain"], cpu["capture"], strict=True))
    wall_ratio = statistics.median(p / c for p, c in zip(wall["plain"], wall["capture"],
                                                          strict=True))
    rows = []
    where = f"{threads} thread(s), {load()}"
    for name, label in (("plain", f"plain_forward ({len(sites)} sites' forward, no hooks, "
                                  f"{where})"),
                        ("default", "hf_default_forward (all logits)"),
                        ("capture", f"collect_features ({len(sites)} sites)")):
        rows.append({"benchmark": "capture", "measure": f"{label} throughput, CPU time",
                     "value": round(N_PROMPTS / statistics.median(cpu[name]), 1),
                     "unit": "prompts/s", "target": ""})
    rows.append({"benchmark": "capture", "measure": "throughput ratio capture/plain, CPU time",
                 "value": round(ratio, 3), "unit": "ratio", "target": ">= 0.95"})
    rows.append({"benchmark": "capture", "measure": "throughput ratio capture/plain, wall time",
                 "value": round(wall_ratio, 3), "unit": "ratio", "target": ">= 0.95"})
    return rows


if __name__ == "__main__":
    for r in run():
        print(r)
