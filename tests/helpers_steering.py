"""Tiny models, a character tokenizer and a stub task for steering tests: no downloads."""

from __future__ import annotations

import random

import pytest
import torch
from transformers import GPT2LMHeadModel, LlamaForCausalLM, PreTrainedTokenizerBase

from memgen.analysis.neurons import NeuronSelection, SiteStats
from memgen.tasks.base import Behavior, Example, Task
from tests import helpers_analysis as analysis_helpers
from tests.helpers_analysis import PROMPTS as PROMPTS  # re-exported: the same padded prompts
from tests.helpers_analysis import hook_count as hook_count

CHARS = list("0123456789+:\n abcdefghijklmnopqrstuvwxyzIT")
N_LAYERS = 2
WIDTH = 32
INIT = 0.3  # larger than the default 0.02: peaked logits, so greedy decoding has no near-ties

def char_tokenizer() -> PreTrainedTokenizerBase:
    """One token per character (newlines included), ``<pad>`` = 0 and ``<eos>`` = 1."""
    return analysis_helpers.char_tokenizer(chars=CHARS)


def tiny_gpt2(vocab_size: int, seed: int = 0, width: int = WIDTH,
              layers: int = N_LAYERS) -> GPT2LMHeadModel:
    return analysis_helpers.tiny_gpt2(vocab_size, seed, width, layers, n_positions=128,
                                      init=INIT)


def tiny_llama(vocab_size: int, seed: int = 0) -> LlamaForCausalLM:
    return analysis_helpers.tiny_llama(vocab_size, seed, n_positions=128, init=INIT)


MODELS = {"gpt2": tiny_gpt2, "llama": tiny_llama}


def selection(sites: list[str], indices: list[int], nmd: list[float]) -> NeuronSelection:
    return NeuronSelection(sites=sites, indices=torch.tensor(indices),
                           nmd=torch.tensor(nmd, dtype=torch.float32),
                           r=torch.linspace(0.9, 0.5, len(indices)))


def fake_stats(widths: dict[str, int], seed: int = 0) -> dict[str, SiteStats]:
    """Random per-site statistics with distinct abs(r) values (a deterministic ranking)."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for site, width in widths.items():
        mem, gen_ = torch.randn(width, generator=gen), torch.randn(width, generator=gen)
        r = torch.rand(width, generator=gen) * 2 - 1
        out[site] = SiteStats(site=site, n_mem=10, n_gen=10, mean_mem=mem, mean_gen=gen_,
                              nmd=mem - gen_, r=r)
    return out


class FirstCharTask(Task):
    """A stub task: the answer is the first generated character (MEM and GEN are chars)."""

    name = "firstchar"

    def classify(self, example: Example, output: str) -> Behavior:
        first = output[:1]
        if first and first == example.mem_answer:
            return Behavior.MEM
        if first and first == example.gen_answer:
            return Behavior.GEN
        return Behavior.OTHER

    def train_examples(self) -> list[Example]:
        return []

    def conflict_examples(self, n=None, stream="conflict") -> list[Example]:
        return []

    def clean_examples(self, n=None, stream="clean") -> list[Example]:
        return []

    def perturb(self, example: Example, rng: random.Random) -> Example:
        return example

    @property
    def memorized_tokens(self) -> list[str]:
        return []


def labelled_examples(first_chars: list[str]) -> list[Example]:
    """Examples over PROMPTS whose unsteered first char is MEM for even items, GEN for odd."""
    out = []
    for i, (prompt, first) in enumerate(zip(PROMPTS, first_chars, strict=True)):
        mem, gen = (first, "#") if i % 2 == 0 else ("#", first)
        out.append(Example(prompt=prompt, answer=gen, kind="conflict", mem_answer=mem,
                           gen_answer=gen, task="firstchar"))
    return out


def clean_examples(first_chars: list[str]) -> list[Example]:
    """Clean examples whose rule answer is what the unsteered model says (accuracy 1)."""
    return [Example(prompt=p, answer=c, kind="clean", gen_answer=c, task="firstchar")
            for p, c in zip(PROMPTS, first_chars, strict=True)]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models: one thread is fastest, and spinning threads on a shared CPU are slow.
    Import it into a test module to apply it there."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
