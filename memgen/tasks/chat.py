"""Chat-template wrapping of prompts for instruction-tuned models (the paper's Llama setting).

Only the prompt changes; the answers and the metadata stay, so ``classify`` is unaffected. The
unwrapped prompt is kept in ``meta["raw_prompt"]``, which makes wrapping idempotent. Perturb
first and wrap afterwards: perturbations rebuild prompts from the metadata, without the template.
"""

from __future__ import annotations

from typing import Any

from memgen.tasks.base import Example


def apply_chat_template(tokenizer: Any, example: Example) -> Example:
    """``example`` with its prompt as the user turn of the tokenizer's chat template, ready for
    the assistant's answer (``add_generation_prompt=True``)."""
    raw = example.meta.get("raw_prompt", example.prompt)
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": raw}], tokenize=False,
                                           add_generation_prompt=True)
    return example.with_prompt(prompt, raw_prompt=raw)
