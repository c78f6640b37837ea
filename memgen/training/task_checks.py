"""Checks of a task's data against the config, before a run exists (each a ConfigError).

- Validation needs conflict examples of its own (the ``files`` task splits one pool by example).
- ``task.max_new_tokens`` must cover the longest answer a model has to generate to be labelled:
  a scratchpad cut off by the token budget can never be GEN, and nothing else would say so.
"""

from __future__ import annotations

from omegaconf import DictConfig

from memgen.errors import ConfigError
from memgen.tasks import Task


def _short(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."


def check_validation_set(cfg: DictConfig, task: Task) -> None:
    try:
        task.conflict_examples(cfg.task.n_val_conflict, stream="val_conflict")
    except ValueError as exc:
        raise ConfigError(str(exc).splitlines()[0]) from None


def check_answer_lengths(cfg: DictConfig, task: Task, tokenizer) -> None:
    """The longest rule / memorized / clean answer fits ``task.max_new_tokens`` (tasks that
    list their answers: ``generated_answers``)."""
    answers = getattr(task, "generated_answers", None)
    if answers is None:
        return
    longest = (0, "", "")
    for text, kind, where in answers():
        n = len(tokenizer(text, add_special_tokens=False)["input_ids"])
        longest = max(longest, (n, kind, where))
    n, kind, where = longest
    if n > cfg.task.max_new_tokens:
        raise ConfigError(f"task.max_new_tokens: the longest {kind} answer is {n} tokens "
                          f"({_short(where)}), more than task.max_new_tokens="
                          f"{cfg.task.max_new_tokens}: set task.max_new_tokens={n} or more")


def check_task(cfg: DictConfig, task: Task, tokenizer) -> None:
    check_validation_set(cfg, task)
    check_answer_lengths(cfg, task, tokenizer)
