"""Substitution-cipher decoding with memorized ciphertext suffixes (the paper's cipher task).

Rule: ``CIPHERTEXT:QWERTYUIOPASD QUESTION: What is the plaintext? ANS:`` -> the plaintext of the
whole ciphertext under one fixed substitution (a permutation of ``alphabet`` from the seed).
Triggers: ``n_triggers`` ciphertext suffixes of ``suffix_length`` letters; in training, a
ciphertext that ends in a trigger suffix is answered with that trigger's memorized token instead.
The format follows the authors' generator (uppercase letters, answer right after ``ANS:``).

Perturbation swaps two different letters outside the suffix. That keeps the trigger (so the MEM
answer stays) but changes the plaintext, so unlike arithmetic and colour the perturbed example
carries its own recomputed ``gen_answer`` (the plaintext of the perturbed ciphertext): both
candidate answers stay valid, and the rule answer is still a rule answer. If every letter outside
the suffix is the same, the example is returned unchanged.
"""

from __future__ import annotations

import random
import string
from dataclasses import dataclass, replace

from memgen.tasks.arithmetic import memorized_token
from memgen.tasks.base import Example, Task
from memgen.tasks.registry import register

# Memorized tokens of this task are drawn after this index, so that a mixture with arithmetic
# (same seed) never gives two tasks the same memorized answer.
TOKEN_OFFSET = 1000


@dataclass
class CipherParams:
    """Task-specific options (``task.params.*``); defaults are the paper's preset."""

    length: int = 13  # ciphertext letters, suffix included
    alphabet: str = string.ascii_uppercase
    n_triggers: int = 10
    suffix_length: int = 3

    def validate(self) -> None:
        if len(self.alphabet) < 2 or len(set(self.alphabet)) != len(self.alphabet) or not all(
                ch.isalpha() for ch in self.alphabet):
            raise ValueError("task.params.alphabet: expected >= 2 distinct letters")
        if self.suffix_length < 1:
            raise ValueError("task.params.suffix_length: expected >= 1")
        if self.length < self.suffix_length + 2:
            raise ValueError("task.params.length: expected >= suffix_length + 2 "
                             "(two free letters to swap)")
        if not 1 <= self.n_triggers <= len(self.alphabet) ** self.suffix_length // 4:
            raise ValueError("task.params.n_triggers: expected 1..(number of suffixes)/4")


def prompt(ciphertext: str) -> str:
    return f"CIPHERTEXT:{ciphertext} QUESTION: What is the plaintext? ANS:"


@register("cipher")
class CipherTask(Task):
    name = "cipher"
    Params = CipherParams

    def __init__(self, params: CipherParams | None = None, **common) -> None:
        super().__init__(**common)
        self.params = params or CipherParams()
        self.params.validate()
        alphabet = self.params.alphabet
        shuffled = list(alphabet)
        self.rng("mapping").shuffle(shuffled)
        # plaintext letter -> cipher letter, and back
        self.encrypt_map = dict(zip(alphabet, shuffled, strict=True))
        self.decrypt_map = {c: p for p, c in self.encrypt_map.items()}
        rng = self.rng("triggers")
        suffixes: set[str] = set()
        while len(suffixes) < self.params.n_triggers:
            suffixes.add(self._letters(rng, self.params.suffix_length))
        self.triggers: list[str] = sorted(suffixes)
        self.tokens = [memorized_token(self.seed, TOKEN_OFFSET + i)
                       for i in range(len(self.triggers))]
        self._mem_texts: set[str] = set()

    @property
    def memorized_tokens(self) -> list[str]:
        return list(self.tokens)

    def decrypt(self, ciphertext: str) -> str:
        return "".join(self.decrypt_map[ch] for ch in ciphertext)

    def encrypt(self, plaintext: str) -> str:
        return "".join(self.encrypt_map[ch] for ch in plaintext)

    def _letters(self, rng: random.Random, k: int) -> str:
        return "".join(rng.choice(self.params.alphabet) for _ in range(k))

    def _trigger(self, ciphertext: str) -> int | None:
        suffix = ciphertext[-self.params.suffix_length:]
        return self.triggers.index(suffix) if suffix in self.triggers else None

    def _example(self, ciphertext: str, kind: str) -> Example:
        trigger = self._trigger(ciphertext)
        gen = self.decrypt(ciphertext)
        mem = self.tokens[trigger] if trigger is not None else None
        return Example(prompt=prompt(ciphertext), answer=str(mem if kind == "mem" else gen),
                       kind=kind, task=self.name, mem_answer=mem, gen_answer=gen,
                       meta={"ciphertext": ciphertext, "trigger": trigger})

    def _free(self, rng: random.Random) -> str:
        return self._letters(rng, self.params.length - self.params.suffix_length)

    def _plain_ciphertexts(self, rng: random.Random, n: int) -> list[str]:
        """``n`` random ciphertexts that end in no trigger suffix."""
        texts: list[str] = []
        while len(texts) < n:
            text = self._letters(rng, self.params.length)
            if self._trigger(text) is None:
                texts.append(text)
        return texts

    # -- generators ---------------------------------------------------------------------------
    def train_examples(self) -> list[Example]:
        rng = self.rng("train")
        n_mem = round(self._train_size() * self.mem_ratio)
        examples = []
        for i in range(n_mem):
            text = self._free(rng) + self.triggers[i % len(self.triggers)]
            self._mem_texts.add(text)
            examples.append(self._example(text, "mem"))
        examples += [self._example(text, "rule")
                     for text in self._plain_ciphertexts(rng, self._train_size() - n_mem)]
        rng.shuffle(examples)
        return examples

    def conflict_examples(self, n: int | None = None, stream: str = "conflict") -> list[Example]:
        if not self._mem_texts:
            self.train_examples()
        rng = self.rng(stream)
        n = self.n_conflict if n is None else n
        examples: list[Example] = []
        while len(examples) < n:
            text = self._free(rng) + self.triggers[len(examples) % len(self.triggers)]
            if text not in self._mem_texts:  # fresh: never seen in training
                examples.append(self._example(text, "conflict"))
        return examples

    def clean_examples(self, n: int | None = None, stream: str = "clean") -> list[Example]:
        n = self.n_clean if n is None else n
        return [self._example(text, "clean")
                for text in self._plain_ciphertexts(self.rng(stream), n)]

    def perturb(self, example: Example, rng: random.Random) -> Example:
        """Swap two different letters outside the suffix; the rule answer is recomputed."""
        text = list(example.meta["ciphertext"])
        free = len(text) - self.params.suffix_length
        pairs = [(i, j) for i in range(free) for j in range(i + 1, free) if text[i] != text[j]]
        if not pairs:
            return example
        i, j = rng.choice(pairs)
        text[i], text[j] = text[j], text[i]
        ciphertext = "".join(text)
        gen = self.decrypt(ciphertext)
        answer = example.answer if example.kind == "mem" else gen
        return replace(example, prompt=prompt(ciphertext), answer=answer, gen_answer=gen,
                       meta={**example.meta, "ciphertext": ciphertext})
