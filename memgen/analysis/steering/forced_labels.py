"""Greedy outputs, steered or not, proven by teacher-forced passes instead of a decode loop.

Why: one forward pass over ``prompt + guess`` checks a whole guessed continuation at once,
where a decode loop runs one pass per token (issue 25 item 7). What it costs: every pass
recomputes the prompt (no KV cache), and an item whose output leaves both answers needs one
pass per further token. On CPU with the default's 1-2 token answers the prompt dominates and
it measured slower than decoding (``benchmarks/bench_forced_labels.py``), hence
``analysis.steering.forced_labels`` is off by default.

The invariant: greedy decoding's step-``p`` token is the argmax of the logits after
``prompt + s_0..s_{p-1}``; a causal model's logits at a position depend only on the tokens up
to it, and the intervention is applied at the positions decoding would steer (the prompt, its
last token, and every fed answer token: ``intervene.forced_layout``). So one pass over
``prompt + g`` reads ``s_0, s_1, ...`` for as long as the guess ``g`` agrees with them, plus the
first token where it does not. Round 0 guesses the likelier answer (``prefer``: the items'
own behaviour, as most steered items keep it); each later round feeds what is proven so far,
followed by the rest of an answer that starts with it (so the first token read decides which
answer is checked next), and reads at least one more token. An item is *done* when its
proof reaches the token ``decode_new_tokens`` cuts at (EOS) or ``max_new_tokens`` tokens: its
text is then decoded from the proven ids exactly as ``generate`` decodes its own, so the output
string (and any ``task.classify`` of it) is ``generate``'s whatever the task.

What is not proven falls back to the real decoder:
- a read whose top-2 logit gap is within rounding (:func:`tie_tolerance`): the cached decode
  and a teacher-forced pass differ by float rounding, so a near-tie may go either way. The
  fallback decodes the *whole* list as the decoder would (same batches), and takes only those
  rows: a near-tie's winner depends on the batch, so only the same batches give the same text;
- ``num_beams`` > 1, or a generation config whose logits processors change the argmax
  (:func:`plain_greedy`): every row goes to the decoder.

Counts go to every open :func:`counting` tally (``steering/tf_fallback_share``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from memgen.analysis.generation import decode_new_tokens, position_ids
from memgen.analysis.settings import Decoding, Subject
from memgen.analysis.steering.intervene import Intervention, forced_layout, intervene
from memgen.analysis.steering.runner import generate_with, sources_for
from memgen.tasks.base import Example

# generation-config fields whose only values that leave greedy's argmax alone are these
NEUTRAL = {"repetition_penalty": (None, 1.0), "encoder_repetition_penalty": (None, 1.0),
           "no_repeat_ngram_size": (None, 0), "encoder_no_repeat_ngram_size": (None, 0),
           "bad_words_ids": (None,), "min_length": (None, 0), "min_new_tokens": (None, 0),
           "forced_bos_token_id": (None,), "forced_eos_token_id": (None,),
           "exponential_decay_length_penalty": (None,), "suppress_tokens": (None,),
           "begin_suppress_tokens": (None,), "sequence_bias": (None,),
           "guidance_scale": (None, 1.0), "watermarking_config": (None,),
           "stop_strings": (None,), "max_time": (None,), "use_cache": (None, True),
           "token_healing": (None, False), "dola_layers": (None,),
           "prompt_lookup_num_tokens": (None,)}
# answers guessed in round 0, one row each: 2 settles MEM and GEN in one round but doubles its
# rows; 1 (with ``prefer``) measured faster on the default-like model
FIRST_GUESSES = 1
LOGIT_BUDGET = 1 << 26  # logits (floats) one pass may hold: rows are chunked under it


@dataclass
class Tally:
    """Items labelled, items whose output came from the real decoder, forced passes run."""

    items: int = 0
    fallback: int = 0
    passes: int = 0
    decodes: int = 0  # calls of the real decoder (each decodes a whole list)

    def metrics(self, prefix: str = "steering") -> dict[str, float]:
        if not self.items:
            return {}
        return {f"{prefix}/tf_items": float(self.items),
                f"{prefix}/tf_fallback_share": self.fallback / self.items,
                f"{prefix}/tf_passes": float(self.passes),
                f"{prefix}/tf_decodes": float(self.decodes)}


_TALLIES: list[Tally] = []


@contextmanager
def counting() -> Iterator[Tally]:
    """A tally of every forced labelling inside the block (nested blocks all count)."""
    tally = Tally()
    _TALLIES.append(tally)
    try:
        yield tally
    finally:
        _TALLIES.remove(tally)


def _count(items: int = 0, fallback: int = 0, passes: int = 0, decodes: int = 0) -> None:
    for tally in _TALLIES:
        tally.items += items
        tally.fallback += fallback
        tally.passes += passes
        tally.decodes += decodes


@dataclass(frozen=True)
class Steering:
    """One intervention at ``positions`` (``intervene``'s arguments)."""

    intervention: Intervention
    alpha: float
    direction: str
    positions: str


def plain_greedy(model: nn.Module) -> bool:
    """Greedy ``generate`` is the argmax of the raw logits: no processor changes it."""
    config = getattr(model, "generation_config", None)
    if config is None:
        return True
    return all(getattr(config, key, None) in ok for key, ok in NEUTRAL.items())


def tie_tolerance(dtype: torch.dtype) -> float:
    """Relative top-2 gap under which a read is not trusted: cached decoding and a full pass
    round differently (float32: ~1e-6 relative; 16-bit formats: ~1e-2)."""
    return 1e-4 if dtype in (torch.float32, torch.float64) else 2e-2


def stop_token(tokenizer) -> int:
    """The token ``decode_new_tokens`` cuts the text at (EOS, else PAD)."""
    eos = tokenizer.eos_token_id
    return eos if eos is not None else tokenizer.pad_token_id


def _token_ids(tokenizer, texts: list[str]) -> list[list[int]]:
    """Each text's ids as ``generate``'s encoder gives them (no special tokens), one call."""
    return [list(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]


def candidates(example: Example, prefer: str = "mem") -> list[str]:
    """The guessed answers, ``prefer``'s first: the MEM and the GEN (else the rule) answer."""
    mem, gen = example.mem_answer, example.gen_answer or example.answer
    ordered = (mem, gen) if prefer == "mem" else (gen, mem)
    return list(dict.fromkeys(t for t in ordered if t is not None))


def guess(known: list[int], answers: list[list[int]], limit: int) -> list[int]:
    """What to feed after ``known`` proven tokens: the rest of the first answer that starts
    with them (a speculative continuation, at most ``limit`` tokens in all), else nothing."""
    n = len(known)
    for answer in answers:
        if len(answer) > n and answer[:n] == known:
            return answer[:limit]
    return known[:limit]


@dataclass
class _Proof:
    """What one row proves: greedy tokens ``known`` (the stop token excluded), whether the
    text is complete (``done``), and whether the read after ``known`` was a near-tie."""

    known: list[int]
    done: bool = False
    unsure: bool = False

    def better_than(self, other: _Proof) -> bool:
        """More proven: done, else more tokens known, else a sure frontier."""
        if self.done != other.done:
            return self.done
        if len(self.known) != len(other.known):
            return len(self.known) > len(other.known)
        return other.unsure and not self.unsure


def read_proof(fed: list[int], top_values: Sequence[Sequence[float]],
               top_ids: Sequence[Sequence[int]], max_new_tokens: int, stop: int,
               tolerance: float) -> _Proof:
    """Walk one row: ``top_values``/``top_ids`` ([len(fed) + 1] x 2) are the top-2 logits
    after the prompt and after each fed token."""
    for p in range(len(fed) + 1):
        if p >= max_new_tokens:
            return _Proof(fed[:p], done=True)
        first, second = top_values[p][0], top_values[p][1]
        if not first - second > tolerance * max(1.0, abs(first)):
            return _Proof(fed[:p], unsure=True)
        token = top_ids[p][0]
        if token == stop:
            return _Proof(fed[:p], done=True)
        if p < len(fed) and token == fed[p]:
            continue
        known = fed[:p] + [token]
        return _Proof(known, done=len(known) >= max_new_tokens)
    raise AssertionError("unreachable: the last read always returns")


def _layout(prompts: list[list[int]], fed: list[list[int]], pad: int
            ) -> dict[str, torch.Tensor]:
    """Left-padded ``prompt + fed`` rows: ids, attention mask, prompt/last/answer masks."""
    t = max(len(p) + len(f) for p, f in zip(prompts, fed, strict=True))
    ids = torch.tensor([[pad] * (t - len(p) - len(f)) + p + f
                        for p, f in zip(prompts, fed, strict=True)], dtype=torch.long)
    n_fed = torch.tensor([len(f) for f in fed]).unsqueeze(1)
    start = t - n_fed - torch.tensor([len(p) for p in prompts]).unsqueeze(1)
    pos = torch.arange(t).unsqueeze(0)
    answer = pos >= t - n_fed
    return {"input_ids": ids, "attention_mask": pos >= start,
            "prompt": (pos >= start) & ~answer, "last": pos == t - n_fed - 1, "answer": answer}


def _top2(model: nn.Module, batch: dict[str, torch.Tensor], width: int
          ) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-2 logits [B, width, 2] (values, ids) at the last ``width`` positions."""
    device = next(model.parameters()).device
    mask = batch["attention_mask"].long().to(device)
    logits = model(input_ids=batch["input_ids"].to(device), attention_mask=mask,
                   position_ids=position_ids(mask), use_cache=False).logits
    top = torch.topk(logits[:, -width:].float(), 2, dim=-1)
    return top.values.cpu(), top.indices.cpu()


def _forced_pass(subject: Subject, examples: list[Example], prompts: list[list[int]],
                 fed: list[list[int]], steering: Steering | None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    model, tok = subject.model, subject.tokenizer
    batch = _layout(prompts, fed, tok.pad_token_id if tok.pad_token_id is not None else 0)
    width = max(len(f) for f in fed) + 1
    _count(passes=1)
    if steering is None:
        return _top2(model, batch, width)
    iv = steering.intervention
    sources = (sources_for(model, tok, iv, examples, batch["prompt"])
               if iv.kind == "interchange" else {})
    with intervene(model, iv, steering.alpha, steering.direction, steering.positions) as state:
        state.sources = sources
        with forced_layout(state, batch["prompt"], batch["last"], batch["answer"]):
            return _top2(model, batch, width)


def _rows_per_pass(decoding: Decoding, vocab: int, length: int) -> int:
    return max(1, min(2 * decoding.batch_size, LOGIT_BUDGET // max(1, vocab * length)))


@torch.no_grad()
def forced_outputs(subject: Subject, examples: Sequence[Example], decoding: Decoding,
                   steering: Steering | None, decode: Callable[[list[Example]], list[str]],
                   tolerance: float | None = None, prefer: str = "mem") -> list[str]:
    """``decode(examples)``'s greedy outputs, proven by teacher-forced passes (module doc).

    ``decode`` is the real decoder of the same steering (it runs only when some item is not
    proven, on the whole list). ``tolerance``: the relative top-2 gap a read needs (None:
    :func:`tie_tolerance` of the model's dtype). ``prefer`` (mem / gen): the answer guessed
    first, the likelier one saves a pass (the other is guessed once the first token says so).
    """
    examples = list(examples)
    if not examples:
        return []
    model, tok = subject.model, subject.tokenizer
    answers_text = [candidates(ex, prefer) for ex in examples]
    flat = _token_ids(tok, [ex.prompt for ex in examples] + [t for a in answers_text for t in a])
    prompt_ids, rest = flat[:len(examples)], iter(flat[len(examples):])
    answers = [[next(rest) for _ in a] for a in answers_text]
    if decoding.num_beams != 1 or not plain_greedy(model) or not all(prompt_ids):
        _count(items=len(examples), fallback=len(examples), decodes=1)
        return decode(examples)
    param = next(model.parameters())
    tol = tie_tolerance(param.dtype) if tolerance is None else tolerance
    stop, m = stop_token(tok), int(decoding.max_new_tokens)
    limit = max(m - 1, 0)  # reads after m - 1 fed tokens reach step m - 1, the last one
    vocab = int(getattr(model.config, "vocab_size", 0) or 50_000)
    proofs: list[_Proof | None] = [None] * len(examples)
    # round 0: every answer (one row each) or the preferred one; then one row per item
    rows = [(i, a[:limit]) for i in range(len(examples))
            for a in (answers[i][:FIRST_GUESSES] or [[]])]
    was_training = model.training
    model.eval()
    try:
        for round_ in range(m + 1):
            if not rows:
                break
            longest = max(len(prompt_ids[i]) + len(f) for i, f in rows)
            step = _rows_per_pass(decoding, vocab, longest)
            for start in range(0, len(rows), step):
                chunk = rows[start:start + step]
                top_values, top_ids = _forced_pass(subject, [examples[i] for i, _ in chunk],
                                                   [prompt_ids[i] for i, _ in chunk],
                                                   [f for _, f in chunk], steering)
                width = top_values.shape[1]
                values, ids = top_values.tolist(), top_ids.tolist()
                for row, (i, fed) in enumerate(chunk):
                    lo = width - len(fed) - 1
                    proof = read_proof(fed, values[row][lo:], ids[row][lo:], m, stop, tol)
                    earlier = proofs[i]
                    if round_ or earlier is None or proof.better_than(earlier):
                        proofs[i] = proof  # later rounds extend the proof they were fed
            rows = [(i, guess(p.known, answers[i], limit)) for i, p in enumerate(proofs)
                    if p is not None and not p.done and not p.unsure]
    finally:
        model.train(was_training)
    unproven = [i for i, p in enumerate(proofs) if p is None or not p.done]
    _count(items=len(examples), fallback=len(unproven), decodes=int(bool(unproven)))
    done = [p.known for p in proofs if p is not None and p.done]
    width = max(map(len, done), default=0) + 1
    texts = iter(decode_new_tokens(tok, torch.tensor([k + [stop] * (width - len(k))
                                                      for k in done], dtype=torch.long))
                 if done else [])
    outputs = [next(texts) if p is not None and p.done else "" for p in proofs]
    if unproven:  # the whole list, so that each row is decoded in the batch it would be
        decoded = decode(examples)
        for i in unproven:
            outputs[i] = decoded[i]
    return outputs


def steered_outputs(subject: Subject, examples: Sequence[Example], decoding: Decoding,
                    steering: Steering | None, decode: Callable[[list[Example]], list[str]],
                    prefer: str = "mem") -> list[str]:
    """``decode(examples)``, through :func:`forced_outputs` when ``decoding.forced_labels``."""
    if not decoding.forced_labels:
        return decode(list(examples))
    return forced_outputs(subject, examples, decoding, steering, decode, prefer=prefer)


def legacy_steering(selection, alpha: float, direction: str, last_prompt_only: bool
                    ) -> Steering:
    """``hooks.steer``'s shift as an intervention: ``add`` of the selection's NMD at the last
    prompt token (``last_prompt_only``) or at the last position of every pass."""
    return Steering(Intervention("add", selection, shift=selection.nmd.float()), alpha,
                    direction, "last_prompt" if last_prompt_only else "every_pass")



def outputs_with(subject: Subject, intervention: Intervention, alpha: float, direction: str,
                 positions: str, examples: Sequence[Example], decoding: Decoding,
                 prefer: str = "mem") -> list[str]:
    """``runner.generate_with``'s outputs, proven where ``decoding.forced_labels`` allows."""

    def decode(items: list[Example]) -> list[str]:
        return generate_with(subject, intervention, alpha, direction, positions, items,
                             decoding)

    return steered_outputs(subject, examples, decoding,
                           Steering(intervention, alpha, direction, positions), decode, prefer)
