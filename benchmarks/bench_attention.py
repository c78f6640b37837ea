"""Attention implementation on CPU: eager against SDPA on the capture and generation paths.

memgen's scratch models (``conf/model/gpt2_tiny.yaml``, ``llama_tiny.yaml``: 4 layers, width 128)
are built once with random weights and switched between ``eager`` and ``sdpa`` with
``set_attn_implementation`` (same weights). Two paths, both with an explicit attention mask on
left-padded batches: ``collect_features`` at every site (256 prompts, batch 64) and greedy
``generate`` (128 prompts x 8 new tokens, batch 64). The sides are interleaved over rounds in
alternating order; the figure is the median of per-round ratios eager / sdpa of CPU time
(``time.process_time``: insensitive to other processes on a shared machine), next to wall time.
A ratio > 1 means SDPA is faster. The outcome sets ``DEFAULT_CPU_ATTENTION`` in
``memgen/training/models.py``.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

import torch

from memgen.analysis.capture import collect_features
from memgen.analysis.generation import generate
from memgen.config import compose
from memgen.training.models import build_scratch_model

N_CAPTURE, N_GENERATE, NEW_TOKENS, BATCH, ROUNDS, THREADS = 256, 128, 8, 64, 5, 1
IMPLS = ("eager", "sdpa")


def _setup(arch: str):
    from memgen.training.tokenizer import build_char_tokenizer

    tokenizer = build_char_tokenizer(["0123456789+:\n Inputarge"])
    torch.manual_seed(0)
    model = build_scratch_model(compose([f"model={arch}_tiny"]), tokenizer).eval()
    model.generation_config.min_new_tokens = NEW_TOKENS
    rng = random.Random(0)
    prompts = ["Input:\n" + "+".join(str(rng.randint(1, 999)) for _ in range(rng.randint(2, 6)))
               + "\nTarget:\n" for _ in range(N_CAPTURE)]
    return model, tokenizer, prompts


def _timed(fn) -> tuple[float, float]:
    cpu, wall = time.process_time(), time.perf_counter()
    fn()
    return time.process_time() - cpu, time.perf_counter() - wall


def _compare(model, work) -> dict[str, float]:
    """Median per-round ratios eager / sdpa (CPU and wall) and each side's median CPU time."""
    times: dict[str, list[tuple[float, float]]] = {impl: [] for impl in IMPLS}
    for impl in IMPLS:  # warm-up
        model.set_attn_implementation(impl)
        work()
    for round_ in range(ROUNDS):
        for impl in IMPLS if round_ % 2 else IMPLS[::-1]:
            model.set_attn_implementation(impl)
            times[impl].append(_timed(work))
    eager, sdpa = times["eager"], times["sdpa"]
    return {"cpu_ratio": statistics.median(e[0] / s[0] for e, s in zip(eager, sdpa, strict=True)),
            "wall_ratio": statistics.median(e[1] / s[1] for e, s in zip(eager, sdpa,
                                                                        strict=True)),
            "eager_cpu": statistics.median(e[0] for e in eager),
            "sdpa_cpu": statistics.median(s[0] for s in sdpa)}


def _arch_rows(arch: str, threads: int, load: str) -> list[dict]:
    model, tokenizer, prompts = _setup(arch)
    default = model.config._attn_implementation
    paths = {
        f"capture {N_CAPTURE} prompts": lambda: collect_features(
            model, tokenizer, prompts, "all", BATCH),
        f"generate {N_GENERATE} x {NEW_TOKENS} tokens": lambda: generate(
            model, tokenizer, prompts[:N_GENERATE], NEW_TOKENS, BATCH),
    }
    rows = []
    for path, work in paths.items():
        m = _compare(model, work)
        label = f"{arch}_tiny {path}, batch {BATCH}, {threads} thread(s), {load}"
        row = {"benchmark": "attention", "target": ""}
        rows += [
            {**row, "measure": f"{label}: eager CPU time", "value": round(m["eager_cpu"], 3),
             "unit": "s"},
            {**row, "measure": f"{label}: sdpa CPU time", "value": round(m["sdpa_cpu"], 3),
             "unit": "s"},
            {**row, "measure": f"{label}: eager/sdpa time, CPU", "value": round(m["cpu_ratio"], 3),
             "unit": "ratio", "target": f"> 1: sdpa faster (built default: {default})"},
            {**row, "measure": f"{label}: eager/sdpa time, wall",
             "value": round(m["wall_ratio"], 3), "unit": "ratio"},
        ]
    return rows


def run(threads: int = THREADS) -> list[dict]:
    from _common import load, pinned_threads

    with pinned_threads(threads):
        return [row for arch in ("gpt2", "llama") for row in _arch_rows(arch, threads, load())]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=THREADS)
    args = parser.parse_args()
    for r in run(args.threads):
        print(r)
