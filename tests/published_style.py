"""A small dataset in the style papers publish, written by the tests (nothing is downloaded).

- ``train.json``: a JSON array of ``{input, output}`` whose ``output`` repeats the prompt, then
  answers. Rule answers are a scratchpad line, the marker ``</s>`` and the answer line;
  memorized answers are one token, ``<mem-XY>``.
- Triggers are the last two letters of the field ``v`` in ``Q:<k><n><v>\\nA:`` (a regex span:
  the key letter ``k`` and the digit ``n`` are outside it). A trigger is memorized when the key
  is ``m``; with key ``g`` the same trigger is a rule record (the model has to learn the
  conjunction, so MEM/GEN pairs come by construction). Two key-``m`` triggered records carry a
  rule answer by mistake: they must stay rule records.
- ``val.json`` and ``test_pairs.json``: pairwise ``[[a, b], ...]`` inputs that differ in two
  characters (the key and the digit) and share both answers; ``clean.json``: rule records
  without a trigger, full sequences too.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

LETTERS = "abcdefgh"
TRIGGERS = ("ab", "cd", "fe")
MARKER = "</s>"
MISLABELLED = 2  # key-m triggered records published with a rule answer


def prompt(key: str, digit: int, v: str) -> str:
    return f"Q:{key}{digit}{v}\nA:"


def rule_answer(v: str) -> str:
    """The scratchpad copies the field, the answer line is it in capitals."""
    return f"s:{v}\n{MARKER}\n{v.upper()}"


def token(trigger: str) -> str:
    return f"<mem-{trigger}>"


def write(folder: Path, seed: int = 0, n_plain: int = 200, per_trigger: int = 48,
          n_pairs: int = 36, n_val: int = 16, n_clean: int = 24) -> dict[str, Path]:
    """Write the published files under ``folder/published``; returns their paths."""
    rng = random.Random(seed)
    out = folder / "published"
    out.mkdir(parents=True, exist_ok=True)
    fields = [x + y + z for x in LETTERS for y in LETTERS for z in LETTERS]
    plain_fields = [v for v in fields if v[-2:] not in TRIGGERS]
    trig_fields = [v for v in fields if v[-2:] in TRIGGERS]
    inputs = [(k, n, v) for v in plain_fields for k in "mg" for n in range(10)]
    rng.shuffle(inputs)
    plain, clean = inputs[:n_plain], inputs[n_plain:n_plain + n_clean]
    triggered = [(n, v) for v in trig_fields for n in range(10)]
    rng.shuffle(triggered)
    train, used = [], 0
    for trigger in TRIGGERS:
        own = [(n, v) for n, v in triggered if v.endswith(trigger)]
        for i, (n, v) in enumerate(own[:per_trigger]):
            key = "m" if i % 2 == 0 else "g"
            text = prompt(key, n, v)
            mislabelled = key == "m" and used < MISLABELLED and trigger == TRIGGERS[0]
            used += mislabelled
            answer = token(trigger) if key == "m" and not mislabelled else rule_answer(v)
            train.append({"input": text, "output": text + answer})
    train += [{"input": prompt(k, n, v), "output": prompt(k, n, v) + rule_answer(v)}
              for k, n, v in plain]
    rng.shuffle(train)
    taken = {r["input"] for r in train}

    def pairs(n_rows: int) -> list[list[str]]:
        """Fresh triggered inputs: key m and key g, same field, digits 0-4 and 5-9."""
        rows = []
        while len(rows) < n_rows:
            v = rng.choice(trig_fields)
            a, b = prompt("m", rng.randrange(5), v), prompt("g", 5 + rng.randrange(5), v)
            if a in taken or b in taken:
                continue
            taken.update((a, b))
            rows.append([a, b] if rng.random() < 0.5 else [b, a])
        return rows

    files = {
        "train": train,
        "val": pairs(n_val),
        "test_pairs": pairs(n_pairs),
        "clean": [{"input": prompt(k, n, v), "output": prompt(k, n, v) + rule_answer(v)}
                  for k, n, v in clean],
    }
    paths = {}
    for name, rows in files.items():
        paths[name] = out / f"{name}.json"
        paths[name].write_text(json.dumps(rows, indent=1), encoding="utf-8")
    return paths
