"""The worked example of ``task=files``: a small suffix-cipher dataset in the files format.

It has the shape of published memorization data: rule records ``{input, output}``; memorized
records ``{input, memorized}`` that carry only the memorized token (no rule answer); trigger
records that say "a ciphertext ending in these letters is memorized"; and a conflict file whose
records give the rule answer and explicit variants (two letters swapped outside the suffix, each
with its own rule answer), the pairs' other halves.

Triggers are memorized from different numbers of distinct ciphertexts (``STRENGTHS``): a trigger
seen in many contexts is answered from memory on fresh inputs, one seen in few is not, so a
trained model shows both behaviors by construction rather than by luck.

Regenerate the committed copy with ``python -m memgen.tasks.suffix_cipher``.
"""

from __future__ import annotations

import json
import random
import re
import sys
from pathlib import Path

ALPHABET = "ABCDEFGH"
LENGTH = 6  # ciphertext letters, suffix included
SUFFIX = 2
STRENGTHS = (1, 3, 10, 30, 60, 100)  # distinct memorized ciphertexts per trigger
N_RULE = 900
N_CONFLICT = 64
N_VARIANTS = 3
FOLDER = Path(__file__).resolve().parents[2] / "conf" / "task" / "data" / "suffix_cipher"

_rng = random.Random("suffix-cipher-example")
_shuffled = list(ALPHABET)
_rng.shuffle(_shuffled)
DECRYPT = dict(zip(_shuffled, ALPHABET, strict=True))  # cipher letter -> plain letter


def prompt(ciphertext: str) -> str:
    return f"CIPHERTEXT:{ciphertext}="


def rule(text: str) -> str:
    """The rule answer of an input: its ciphertext decrypted (``task.params.rule`` form)."""
    ciphertext = re.search(r"CIPHERTEXT:(\w+)", text).group(1)  # type: ignore[union-attr]
    return "".join(DECRYPT[ch] for ch in ciphertext)


def build(seed: int = 0) -> dict[str, list[dict]]:
    """Trigger, training and conflict records, deterministic from ``seed``."""
    rng = random.Random(f"suffix-cipher:{seed}")

    def letters(k: int) -> str:
        return "".join(rng.choice(ALPHABET) for _ in range(k))

    suffixes: list[str] = []
    while len(suffixes) < len(STRENGTHS):
        s = letters(SUFFIX)
        if s not in suffixes:
            suffixes.append(s)
    triggers = [{"match": s, "where": "suffix", "memorized": f"<mem-{i}>"}
                for i, s in enumerate(suffixes)]
    seen: set[str] = set()

    def fresh(suffix: str) -> str:
        while True:
            text = letters(LENGTH - len(suffix)) + suffix
            if text not in seen and (suffix or text[-SUFFIX:] not in suffixes):
                seen.add(text)
                return text

    train = []
    for trig, strength in zip(triggers, STRENGTHS, strict=True):
        train += [{"input": prompt(fresh(trig["match"])), "memorized": trig["memorized"]}
                  for _ in range(strength)]
    train += [{"input": prompt(text := fresh("")), "output": rule(prompt(text))}
              for _ in range(N_RULE)]
    rng.shuffle(train)
    conflict = []
    for i in range(N_CONFLICT):
        text = fresh(suffixes[i % len(suffixes)])
        variants: list[str] = []
        for _ in range(6 * N_VARIANTS):  # a few tries: some swaps repeat or swap equal letters
            if len(variants) == N_VARIANTS:
                break
            chars = list(text)
            a, b = rng.sample(range(LENGTH - SUFFIX), 2)
            chars[a], chars[b] = chars[b], chars[a]
            swapped = "".join(chars)
            if swapped not in seen and swapped not in variants:
                variants.append(swapped)
        conflict.append({"input": prompt(text), "gen_answer": rule(prompt(text)),
                         "perturbations": [{"input": prompt(v), "gen_answer": rule(prompt(v))}
                                           for v in variants]})
    return {"triggers": triggers, "train": train, "conflict": conflict}


def write(folder: Path = FOLDER) -> list[Path]:
    """``triggers.json``, ``train.jsonl`` and ``conflict.jsonl`` under ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    data = build()
    paths = [folder / "triggers.json", folder / "train.jsonl", folder / "conflict.jsonl"]
    paths[0].write_text(json.dumps(data["triggers"], indent=1) + "\n")
    for path, key in zip(paths[1:], ("train", "conflict"), strict=True):
        path.write_text("".join(json.dumps(r) + "\n" for r in data[key]))
    return paths


if __name__ == "__main__":
    for written in write(Path(sys.argv[1]) if len(sys.argv) > 1 else FOLDER):
        print(written)
