"""The longest sequence a run will see must fit the model's positions: checked before training.

A prompt plus answer longer than ``n_positions`` would crash inside the position embedding
mid-run (an IndexError and a FAILED run); this check fails up front and names the fix.
"""

from __future__ import annotations

from omegaconf import DictConfig

from memgen.errors import ConfigError
from memgen.tasks import Example, Task


def model_positions(model) -> int | None:
    """How many positions the model embeds (GPT-2 ``n_positions``, Llama
    ``max_position_embeddings``); None when the config says neither."""
    config = getattr(model, "config", None)
    for key in ("n_positions", "max_position_embeddings"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def longest_sequence(cfg: DictConfig, task: Task, tokenizer) -> tuple[int, str]:
    """(tokens, what) of the longest sequence: a training example's prompt + answer + end token,
    or a prompt (any perturbation variant) + ``task.max_new_tokens`` generated tokens."""
    def n_tokens(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    longest = (0, "")
    for ex in task.train_examples():
        longest = max(longest, (n_tokens(ex.text) + 1, f"a training example ({ex.prompt!r}...)"))
    conflict = task.conflict_examples(cfg.task.n_conflict)
    generated: list[Example] = [ex for group in task.perturbation_set(
        conflict, cfg.task.n_perturbations) for ex in group] + task.clean_examples()
    for ex in generated:
        longest = max(longest, (n_tokens(ex.prompt) + cfg.task.max_new_tokens,
                                f"a prompt + task.max_new_tokens ({ex.prompt!r})"))
    return longest


def check_lengths(cfg: DictConfig, task: Task, tokenizer, model) -> None:
    """ConfigError naming the longest sequence and the fix when it exceeds the positions."""
    limit = model_positions(model)
    if limit is None:
        return
    n, what = longest_sequence(cfg, task, tokenizer)
    if n <= limit:
        return
    what = what if len(what) < 120 else what[:117] + "..."
    fix = (f"set model.n_positions={n} or more" if cfg.model.kind == "scratch"
           else "use a model with more positions")
    raise ConfigError(f"model.n_positions: the longest sequence is {n} tokens, more than the "
                      f"model's {limit} positions: {fix}, or shorten the data / "
                      f"task.max_new_tokens; longest: {what}")
