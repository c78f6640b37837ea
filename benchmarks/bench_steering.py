"""Steered generation: batched against batch 1, and steered against unsteered.

A random GPT-2 (4 layers, width 128, a ~44-token character vocabulary) continues 128 arithmetic
prompts by 8 tokens (``min_new_tokens`` = 8, so every run does the same work whatever the
steering does to EOS); batch 1 runs the first 32 of them (throughput is per token, and 128
single-prompt calls would dominate the benchmark's time). The selection is 5% of the
residual-stream neurons at every ``resid`` site. Timings interleave the sides and keep each
side's best of ``REPEATS`` to damp the noise of a shared machine. Targets: batch 64 at least 10x
the throughput of batch 1; steering costs at most 5% of the unsteered throughput at the same
batch.

Threads: ``THREADS`` (2, torch's default on the 2-core CPU the default configs target, and what
the pipeline runs with), pinned and printed whether run by ``make bench`` or directly
(``--threads`` changes it).
"""

from __future__ import annotations

import argparse
import random
import time

import torch
from transformers import GPT2Config, GPT2LMHeadModel

from memgen.analysis.generation import generate
from memgen.analysis.neurons import NeuronSelection
from memgen.analysis.sites import list_sites
from memgen.analysis.steering.hooks import steer

N_PROMPTS, N_SINGLE, NEW_TOKENS, BATCH, REPEATS, FRACTION = 128, 32, 8, 64, 3, 0.05
THREADS = 2


def _setup(device: str):
    from memgen.training.tokenizer import build_char_tokenizer

    tokenizer = build_char_tokenizer(["0123456789+:\n abcdefghijklmnopqrstuvwxyzIT"])
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=128, n_embd=128, n_layer=4,
                        n_head=4, pad_token_id=0, eos_token_id=1, bos_token_id=1)
    model = GPT2LMHeadModel(config).eval().to(device)
    model.generation_config.min_new_tokens = NEW_TOKENS
    rng = random.Random(0)
    prompts = ["Input:\n" + "+".join(str(rng.randint(1, 999)) for _ in range(rng.randint(2, 6)))
               + "\nTarget:\n" for _ in range(N_PROMPTS)]
    sites = list_sites(model, ("resid",))
    width = config.n_embd
    gen = torch.Generator().manual_seed(0)
    flat = torch.randperm(len(sites) * width, generator=gen)[:round(FRACTION * len(sites) * width)]
    selection = NeuronSelection(sites=[sites[i] for i in (flat // width).tolist()],
                                indices=flat % width, nmd=torch.randn(flat.numel(), generator=gen),
                                r=torch.zeros(flat.numel()))
    return model, tokenizer, prompts, selection


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start


def run(device: str | None = None, threads: int = THREADS) -> list[dict]:
    from _common import load, pinned_threads

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    with pinned_threads(threads):
        rate, n_neurons = _measure(device)
    row = {"benchmark": "steering", "unit": "new tokens/s", "target": ""}
    where = (f"{device}, {threads} thread(s), {n_neurons} neurons, {N_PROMPTS} prompts x "
             f"{NEW_TOKENS} tokens, {load()}")
    return [
        {**row, "measure": f"steered_generation_throughput batch {BATCH} ({where})",
         "value": round(rate["steered_b64"], 1)},
        {**row, "measure": f"plain_generation_throughput batch {BATCH}",
         "value": round(rate["plain_b64"], 1)},
        {**row, "measure": f"steered_generation_throughput batch 1 ({N_SINGLE} prompts)",
         "value": round(rate["steered_b1"], 1)},
        {"benchmark": "steering", "measure": f"throughput_ratio (steered batch {BATCH} / "
         "steered batch 1)", "value": round(rate["steered_b64"] / rate["steered_b1"], 2),
         "unit": "ratio", "target": ">= 10"},
        {"benchmark": "steering", "measure": f"throughput_ratio (steered / plain, batch {BATCH})",
         "value": round(rate["steered_b64"] / rate["plain_b64"], 3), "unit": "ratio",
         "target": ">= 0.95"},
    ]


def _measure(device: str) -> tuple[dict[str, float], int]:
    model, tokenizer, prompts, selection = _setup(device)

    def sides(batch: int, steered: bool, n: int = N_PROMPTS):
        def fn():
            if not steered:
                return generate(model, tokenizer, prompts[:n], NEW_TOKENS, batch)
            with steer(model, selection, 3.0, "to_gen"):
                return generate(model, tokenizer, prompts[:n], NEW_TOKENS, batch)
        return fn

    runs = {"steered_b64": sides(BATCH, True), "plain_b64": sides(BATCH, False),
            "steered_b1": sides(1, True, N_SINGLE)}
    tokens = {"steered_b64": N_PROMPTS, "plain_b64": N_PROMPTS, "steered_b1": N_SINGLE}
    for fn in runs.values():  # warm-up
        fn()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(REPEATS):
        for name, fn in runs.items():
            times[name].append(_timed(fn))
    return ({name: tokens[name] * NEW_TOKENS / min(t) for name, t in times.items()},
            len(selection))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=THREADS)
    parser.add_argument("--device", default=None)
    args = parser.parse_args()
    for r in run(args.device, args.threads):
        print(r)
