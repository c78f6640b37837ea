"""In-context colour inference with memorized name colours (the paper's bAbI-16 variant).

A prompt describes a small world where every animal kind has one colour, e.g.
``Dan is a cat. Dan is red. Bob is a cat. Eli is a fox. What color is Bob?\\n`` -> ``red``.
Rule (GEN): the queried name's animal is stated, and another name of that animal has its colour
stated; the queried name's own colour never is. Memory (MEM): each of ``n_triggers`` trigger
names has one fixed colour derived from the seed.

Training: a share ``mem_ratio`` of examples query a trigger name, and (as in the paper) the
colour inferable from the context then equals that name's memorized colour, so both routes give
the same answer and the name -> colour association is there to be learned. The other examples
query non-trigger names whose colour changes from prompt to prompt, so only the rule answers
them. With ``mem_context: absent`` the trigger examples state no colour for the queried animal, so
only memory answers them (a stronger push towards memorization than the paper's). Trigger names
appear only as the queried name, never as helpers or distractors.

With ``mem_palette: own`` (not the paper's) the memorized colours come from a palette that no
rule answer uses (and, with ``mem_context: absent``, that no prompt ever states), so the
memorized and the inferred answer differ in kind, not only in which of the same eight words:
the split between the behaviours then has a direction shared across names.

Conflict: a trigger name is queried while the context implies another colour: GEN is the
in-context colour, MEM the memorized one. Perturbation: reorder the sentences (the question
stays last); the inference does not depend on order, so both answers stay.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from memgen.tasks.base import Behavior, Example, Task, normalize_output
from memgen.tasks.registry import register

# Three-letter names keep prompts short for character-level models. Trigger names carry a
# memorized colour; free names get a new colour in every prompt.
TRIGGER_NAMES = ("Bob", "Ann", "Max", "Eva", "Tom", "Ida", "Sam", "Zoe",
                 "Leo", "Amy", "Ben", "Kim", "Ray", "Uma", "Gus", "Liv")
FREE_NAMES = ("Dan", "Eli", "Fay", "Hal", "Ian", "Jim", "Kai", "Lou", "Ned", "Pam", "Rex", "Sue",
              "Ted", "Val", "Wes", "Cal", "Dee", "Flo", "Gil", "Jan", "Kit", "Mel", "Ron", "Tia")
# Consonant-initial animals, so "is a <animal>" is always grammatical.
ANIMALS = ("cat", "dog", "fox", "bat", "hen", "yak", "rat", "pig", "cow", "ram")
COLOURS = ("red", "tan", "blue", "gray", "pink", "gold", "green", "white")
# With ``mem_palette: own`` the trigger names' memorized colours come from these instead: no
# word and no first letter shared with COLOURS, so recalling and inferring answer in two
# token classes (as arithmetic's memorized tokens do) rather than among the same eight words.
OWN_COLOURS = ("navy", "lime", "jade", "cyan", "amber", "mauve", "ivory", "khaki")
MEM_CONTEXTS = ("consistent", "absent")
MEM_PALETTES = ("shared", "own")


@dataclass
class ColourParams:
    """Task-specific options (``task.params.*``); defaults are the paper's preset."""

    n_triggers: int = 16  # names with a memorized colour
    min_names: int = 4  # distinct names per prompt, queried name and helper included
    max_names: int = 8
    n_animals: int = 5  # animal kinds in each prompt's world
    max_distractors: int = 7  # sentences beyond the three the inference needs
    n_colours: int = 8
    mem_context: str = "consistent"  # consistent (paper) | absent
    mem_palette: str = "shared"  # shared (paper): memorized colours are context colours | own

    def validate(self) -> None:
        if not 1 <= self.n_triggers <= len(TRIGGER_NAMES):
            raise ValueError(f"task.params.n_triggers: expected 1..{len(TRIGGER_NAMES)}")
        if not 2 <= self.min_names <= self.max_names <= len(FREE_NAMES):
            raise ValueError("task.params.min_names/max_names: expected "
                             f"2 <= min_names <= max_names <= {len(FREE_NAMES)}")
        if not 1 <= self.n_animals <= len(ANIMALS):
            raise ValueError(f"task.params.n_animals: expected 1..{len(ANIMALS)}")
        if self.max_distractors < self.max_names - 2:
            raise ValueError("task.params.max_distractors: expected >= max_names - 2 "
                             "(every extra name needs a sentence)")
        if not 2 <= self.n_colours <= len(COLOURS):
            raise ValueError(f"task.params.n_colours: expected 2..{len(COLOURS)}")
        if self.mem_context not in MEM_CONTEXTS:
            raise ValueError(f"task.params.mem_context: expected one of {list(MEM_CONTEXTS)}")
        if self.mem_palette not in MEM_PALETTES:
            raise ValueError(f"task.params.mem_palette: expected one of {list(MEM_PALETTES)}")


def question(name: str) -> str:
    return f"What color is {name}?"


def render(sentences: list[str], name: str) -> str:
    """The prompt: context sentences, then the question, then a newline before the answer."""
    return " ".join([*sentences, question(name)]) + "\n"


@register("colour")
class ColourTask(Task):
    name = "colour"
    Params = ColourParams

    def __init__(self, params: ColourParams | None = None, **common) -> None:
        super().__init__(**common)
        self.params = params or ColourParams()
        self.params.validate()
        self.colours = COLOURS[:self.params.n_colours]
        self.trigger_names = TRIGGER_NAMES[:self.params.n_triggers]
        palette = (self.colours if self.params.mem_palette == "shared"
                   else OWN_COLOURS[:self.params.n_colours])
        rng = self.rng("triggers")
        self.mem_colours = {name: rng.choice(palette) for name in self.trigger_names}

    @property
    def memorized_tokens(self) -> list[str]:
        """Empty: memorized answers are ordinary colour words, not added tokens."""
        return []

    # -- world and sentences ------------------------------------------------------------------
    def _context(self, rng: random.Random, query: str, colour: str | None) -> list[str]:
        """Shuffled sentences from which ``colour`` is inferable for ``query`` (or, if ``colour``
        is None, from which no colour is inferable for it)."""
        p = self.params
        animals = rng.sample(ANIMALS, p.n_animals)
        target = animals[0]
        world = {a: rng.choice(self.colours) for a in animals[1:]}
        world[target] = colour if colour is not None else rng.choice(self.colours)
        n_names = rng.randint(p.min_names, p.max_names)
        helper, *others = rng.sample([n for n in FREE_NAMES if n != query], n_names - 1)
        sentences = [f"{query} is a {target}.", f"{helper} is a {target}."]
        if colour is not None:
            sentences.append(f"{helper} is {colour}.")
        # Every other name gets one sentence (its animal or its colour), then extra facts up to a
        # random budget. A name's colour is always its animal's colour: no contradictions.
        kinds = {n: rng.choice(animals) for n in others}
        facts = [(n, f) for n in others for f in ("animal", "colour")
                 if not (colour is None and f == "colour" and kinds[n] == target)]
        chosen = [rng.choice([fact for fact in facts if fact[0] == n]) for n in others]
        rest = [fact for fact in facts if fact not in chosen]
        budget = rng.randint(len(others), min(p.max_distractors, len(facts)))
        chosen += rng.sample(rest, budget - len(others))
        for n, f in chosen:
            fact = kinds[n] if f == "animal" else world[kinds[n]]
            sentences.append(f"{n} is a {fact}." if f == "animal" else f"{n} is {fact}.")
        rng.shuffle(sentences)
        return sentences

    def _example(self, rng: random.Random, query: str, kind: str, colour: str | None) -> Example:
        sentences = self._context(rng, query, colour)
        mem = self.mem_colours.get(query)
        answer = mem if kind == "mem" else colour
        trigger = self.trigger_names.index(query) if mem is not None else None
        return Example(prompt=render(sentences, query), answer=str(answer), kind=kind,
                       task=self.name, mem_answer=mem, gen_answer=colour,
                       meta={"sentences": sentences, "query": query, "trigger": trigger})

    # -- generators ---------------------------------------------------------------------------
    def train_examples(self) -> list[Example]:
        rng = self.rng("train")
        n_mem = round(self._train_size() * self.mem_ratio)
        examples = []
        for i in range(n_mem):
            query = self.trigger_names[i % len(self.trigger_names)]
            colour = self.mem_colours[query] if self.params.mem_context == "consistent" else None
            examples.append(self._example(rng, query, "mem", colour))
        while len(examples) < self._train_size():
            examples.append(self._example(rng, rng.choice(FREE_NAMES), "rule",
                                          rng.choice(self.colours)))
        rng.shuffle(examples)
        return examples

    def conflict_examples(self, n: int | None = None, stream: str = "conflict") -> list[Example]:
        rng = self.rng(stream)
        n = self.n_conflict if n is None else n
        examples = []
        for i in range(n):
            query = self.trigger_names[i % len(self.trigger_names)]
            colour = rng.choice([c for c in self.colours if c != self.mem_colours[query]])
            examples.append(self._example(rng, query, "conflict", colour))
        return examples

    def clean_examples(self, n: int | None = None, stream: str = "clean") -> list[Example]:
        rng = self.rng(stream)
        n = self.n_clean if n is None else n
        return [self._example(rng, rng.choice(FREE_NAMES), "clean", rng.choice(self.colours))
                for _ in range(n)]

    def perturb(self, example: Example, rng: random.Random) -> Example:
        """Reorder the context sentences; the question stays last and both answers stay."""
        sentences = list(example.meta["sentences"])
        original = list(sentences)
        while len(set(sentences)) > 1 and sentences == original:
            rng.shuffle(sentences)
        return example.with_prompt(render(sentences, example.meta["query"]), sentences=sentences)

    def classify(self, example: Example, output: str) -> Behavior:
        """Exact match of the first word (trailing punctuation dropped) with a colour answer."""
        words = normalize_output(output).split()
        word = words[0].strip(".,;:!?").lower() if words else ""
        if example.mem_answer is not None and word == example.mem_answer:
            return Behavior.MEM
        if example.gen_answer is not None and word == example.gen_answer:
            return Behavior.GEN
        return Behavior.OTHER

