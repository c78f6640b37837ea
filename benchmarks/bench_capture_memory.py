"""Peak memory of ``collect_features`` against the size of what it returns.

The workload is the realistic shape of issue 22: a random 6-layer, width-512 GPT-2, 12 sites
(``resid.1..6`` and ``mlp.1..6``: 15,360 neurons), 2048 prompts of exactly 32 tokens, batch 64.
Results: 2048 x 15,360 float32 = 126 MB.

How it is measured: in a fresh Python subprocess under the default allocator (no ``MALLOC_*``
variable is set; one inherited from the caller's environment is removed), so neither an earlier
benchmark's heap nor the caller's tuning counts. The child builds the model and prompts, runs
one warm-up run of a single batch (torch's one-time lazy initialisation), then takes the
current RSS as the baseline, resets the kernel's peak-RSS mark (``/proc/self/clear_refs``) and
captures. Reported: peak RSS above the baseline, the RSS still held after the results are
deleted, the results' bytes, and the bound of the issue: 3 x results + one batch's activations
at the captured sites (64 x 32 positions x 15,360 neurons x 4 bytes = 126 MB). A second child
measures the streaming path downstream (``neuron_stats``: capture per batch into per-class
moments, nothing kept per sample); reported, no target yet.

``python benchmarks/bench_capture_memory.py --prompts 512`` runs a smaller shape.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
N_LAYER, WIDTH, N_PROMPTS, TOKENS, BATCH, THREADS = 6, 512, 2048, 32, 64, 2


def _status_bytes(key: str) -> int | None:
    """``VmRSS`` / ``VmHWM`` of this process from /proc (Linux), in bytes."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _reset_peak() -> bool:
    """Reset the peak-RSS mark so that VmHWM measures from now (Linux >= 4.0)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _child(n_prompts: int, threads: int, stream: bool = False) -> dict:
    import random

    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from memgen.analysis.capture import collect_features
    from memgen.analysis.sites import site_width
    from memgen.analysis.stats import neuron_stats
    from memgen.training.tokenizer import build_char_tokenizer

    torch.set_num_threads(threads)
    alphabet = "0123456789+-*=:abcdefghij"
    tokenizer = build_char_tokenizer([alphabet])
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=64, n_embd=WIDTH,
                        n_layer=N_LAYER, n_head=8, bos_token_id=1, eos_token_id=1,
                        pad_token_id=0)
    model = GPT2LMHeadModel(config).eval()
    rng = random.Random(0)
    prompts = ["".join(rng.choice(alphabet) for _ in range(TOKENS)) for _ in range(n_prompts)]
    sites = [f"resid.{i}" for i in range(1, N_LAYER + 1)] + [f"mlp.{i}"
                                                              for i in range(1, N_LAYER + 1)]
    if stream:  # warm-up on one batch of the same path
        neuron_stats(model, tokenizer, prompts[:BATCH], torch.arange(BATCH) % 2, sites, BATCH)
    else:
        collect_features(model, tokenizer, prompts[:BATCH], sites, BATCH)
    gc.collect()
    baseline = _status_bytes("VmRSS")
    exact = baseline is not None and _reset_peak()
    if not exact:
        baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    start = time.perf_counter()
    if stream:
        labels = torch.arange(n_prompts) % 2
        features = neuron_stats(model, tokenizer, prompts, labels, sites, BATCH)
        results = sum(4 * 4 * s.width for s in features.values())  # four float32 [D] vectors
    else:
        features = collect_features(model, tokenizer, prompts, sites, BATCH)
        results = sum(x.numel() * x.element_size() for x in features.values())
    seconds = time.perf_counter() - start
    peak = _status_bytes("VmHWM") if exact else (
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    neurons = sum(site_width(model, site) for site in sites)
    del features
    gc.collect()
    after = _status_bytes("VmRSS")
    return {"peak_delta": peak - baseline, "results": results,
            "retained": None if after is None else after - baseline,
            "batch_activations": BATCH * TOKENS * neurons * 4, "seconds": seconds,
            "exact_peak": exact, "threads": torch.get_num_threads()}


def measure(n_prompts: int = N_PROMPTS, threads: int = THREADS, stream: bool = False) -> dict:
    """Run the child under the default allocator and return its measurements."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE.parent),
                                                      env.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, __file__, "--child", "--prompts", str(n_prompts),
                          "--threads", str(threads), *(["--stream"] if stream else [])],
                         check=True, capture_output=True,
                         text=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(n_prompts: int = N_PROMPTS, threads: int = THREADS) -> list[dict]:
    from _common import load

    m = measure(n_prompts, threads)
    s = measure(n_prompts, threads, stream=True)
    mb = 1e6
    bound = 3 * m["results"] + m["batch_activations"]
    where = (f"{N_LAYER}x{WIDTH} GPT-2, 12 sites, {n_prompts} prompts x {TOKENS} tokens, "
             f"batch {BATCH}, {m['threads']} threads, default allocator, {load()}")
    row = {"benchmark": "capture_memory", "target": ""}
    return [
        {**row, "measure": f"results size ({where})", "value": round(m["results"] / mb, 1),
         "unit": "MB"},
        {**row, "measure": "peak RSS above baseline" + ("" if m["exact_peak"] else
                                                        " (ru_maxrss: upper bound)"),
         "value": round(m["peak_delta"] / mb, 1), "unit": "MB",
         "target": f"<= {bound / mb:.0f} (3 x results + one batch's activations)"},
        {**row, "measure": "peak RSS above baseline / results",
         "value": round(m["peak_delta"] / m["results"], 2), "unit": "ratio", "target": ""},
        {**row, "measure": "RSS held after the results are deleted",
         "value": round((m["retained"] or 0) / mb, 1), "unit": "MB", "target": ""},
        {**row, "measure": "capture wall time", "value": round(m["seconds"], 2), "unit": "s",
         "target": ""},
        {**row, "measure": "neuron_stats (streaming) peak RSS above baseline",
         "value": round(s["peak_delta"] / mb, 1), "unit": "MB",
         "target": ""},
    ]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--prompts", type=int, default=N_PROMPTS)
    parser.add_argument("--threads", type=int, default=THREADS)
    parser.add_argument("--stream", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_child(args.prompts, args.threads, args.stream)))
    else:
        for r in run(args.prompts, args.threads):
            print(r)
