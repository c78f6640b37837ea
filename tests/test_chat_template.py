"""``task.chat_template=true``: every prompt a run trains, validates, analyses and logs is the
tokenizer's chat template around the task's prompt, and the answer follows the wrapped prompt.

The base is a tiny Llama saved in tmp_path with the task's character tokenizer plus two special
tokens and a chat template of its own (no downloads).
"""

from __future__ import annotations

import random
from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from memgen.config import compose
from memgen.errors import ConfigError
from memgen.tasks import Task
from memgen.tasks.chat import ChatTask, apply_chat_template, unwrapped
from memgen.training.data import chat_task, encode_training, make_task, task_tokenizer
from tests.conftest import tiny_overrides
from tests.helpers_analysis import tiny_llama

USER, ASSISTANT = "<|user|>", "<|assistant|>"
TEMPLATE = ("{% for m in messages %}" + USER + "{{ m['content'] }}{% endfor %}"
            "{% if add_generation_prompt %}" + ASSISTANT + "{% endif %}")


def chat_cfg(tmp: Path, base: Path | None = None, *extra: str):
    model = ["model=lora", f"model.name_or_path={base}"] if base else []
    return compose([*tiny_overrides(tmp, **{"trainer.max_epochs": 1, "task.n_conflict": 12,
                                            "analysis.consistency": "false"}),
                    *model, "task.chat_template=true", *extra])


@pytest.fixture(scope="module")
def chat_base(tmp_path_factory) -> Path:
    """A tiny Llama whose tokenizer knows the task's characters and has a chat template."""
    root = tmp_path_factory.mktemp("chat_base")
    tokenizer = task_tokenizer(make_task(chat_cfg(root)))
    tokenizer.add_special_tokens({"additional_special_tokens": [USER, ASSISTANT]})
    tokenizer.chat_template = TEMPLATE
    tiny_llama(len(tokenizer), n_positions=128).save_pretrained(root / "base")
    tokenizer.save_pretrained(root / "base")
    return root / "base"


def wrapped_text(prompt: str) -> str:
    return USER + prompt + ASSISTANT


def test_chat_task_wraps_every_example_and_perturbs_the_raw_prompt(tmp_path, chat_base):
    from transformers import AutoTokenizer

    cfg = chat_cfg(tmp_path, chat_base)
    raw, tokenizer = make_task(cfg), AutoTokenizer.from_pretrained(chat_base)
    task = chat_task(cfg, raw, tokenizer)
    assert isinstance(task, ChatTask) and task.name == raw.name == "arithmetic"
    assert [ex.prompt for ex in task.train_examples()] == [
        wrapped_text(ex.prompt) for ex in raw.train_examples()]
    assert [ex.answer for ex in task.train_examples()] == [ex.answer for ex in raw.train_examples()]
    assert [ex.prompt for ex in task.clean_examples(5)] == [
        wrapped_text(ex.prompt) for ex in raw.clean_examples(5)]
    groups = task.perturbation_set(task.conflict_examples(4), 3, stream="perturb")
    raw_groups = raw.perturbation_set(raw.conflict_examples(4), 3, stream="perturb")
    assert [[ex.prompt for ex in g] for g in groups] == [
        [wrapped_text(ex.prompt) for ex in g] for g in raw_groups]
    variant = task.perturb(groups[0][0], random.Random(0))
    assert variant.prompt == wrapped_text(raw.perturb(raw_groups[0][0], random.Random(0)).prompt)
    assert unwrapped(variant).prompt == variant.meta["raw_prompt"]
    # the training sequence: wrapped prompt, then the answer and EOS (labels on the answer only)
    ex = task.train_examples()[0]
    (item,) = encode_training(tokenizer, [ex], "answer")
    assert tokenizer.decode(item["input_ids"]) == wrapped_text(raw.train_examples()[0].prompt) \
        + ex.answer + tokenizer.eos_token
    n_answer = len(tokenizer(ex.answer + tokenizer.eos_token, add_special_tokens=False)[
        "input_ids"])
    assert item["labels"][-n_answer:] == item["input_ids"][-n_answer:]
    assert set(item["labels"][:-n_answer]) == {-100}


def test_the_length_check_counts_the_template(tmp_path, chat_base):
    """Two template tokens per prompt: a base with room for the raw prompts only is refused
    before a run exists."""
    from transformers import AutoTokenizer

    from memgen.training.lengths import longest_sequence
    from memgen.training.runner import prepare

    cfg = chat_cfg(tmp_path, chat_base)
    raw, tokenizer = make_task(cfg), AutoTokenizer.from_pretrained(chat_base)
    n_raw, _ = longest_sequence(cfg, raw, tokenizer)
    n_chat, what = longest_sequence(cfg, chat_task(cfg, raw, tokenizer), tokenizer)
    assert n_chat == n_raw + 2 and USER in what
    short = tmp_path / "short"
    tiny_llama(len(tokenizer), n_positions=n_raw + 1).save_pretrained(short)
    tokenizer.save_pretrained(short)
    with pytest.raises(ConfigError, match=f"the longest sequence is {n_chat} tokens"):
        prepare(chat_cfg(tmp_path, short))


def test_a_template_that_writes_todays_date_gets_a_fixed_one(tmp_path):
    """Llama 3's template: ``date_string``, else today's date (transformers' strftime_now)."""
    task = make_task(chat_cfg(tmp_path))
    tokenizer = task_tokenizer(task)
    tokenizer.chat_template = ("{% if not date_string is defined %}{% set date_string = "
                               "strftime_now('%d %b %Y') %}{% endif %}Today Date: "
                               "{{ date_string }}|{{ messages[0]['content'] }}")
    ex = task.clean_examples(1)[0]
    assert apply_chat_template(tokenizer, ex).prompt == f"Today Date: 26 Jul 2024|{ex.prompt}"


def test_chat_task_overrides_every_public_method_of_task():
    """A method added to Task would otherwise run on the wrapper, bypassing the inner task."""
    public = {n for n, v in vars(Task).items()
              if not n.startswith("_") and (callable(v) or isinstance(v, property))}
    assert {"train_examples", "perturbation_set", "rng", "memorized_tokens"} <= public
    assert public <= set(vars(ChatTask)), public - set(vars(ChatTask))


def test_a_tokenizer_without_a_chat_template_is_refused(tmp_path):
    cfg = chat_cfg(tmp_path)  # a scratch model: the task's character tokenizer has no template
    task = make_task(cfg)
    with pytest.raises(ConfigError, match="chat_template: the tokenizer of model.kind=scratch"):
        chat_task(cfg, task, task_tokenizer(task))


@pytest.mark.slow
def test_a_chat_template_run_trains_and_logs_the_wrapped_prompts(tmp_path, chat_base):
    from memgen.commands.run import run
    from memgen.training.reopen import load_run

    cfg = chat_cfg(tmp_path, chat_base)
    _, objects = run(cfg)
    run_id = objects["run_id"]
    client = MlflowClient(cfg.tracking.uri)
    assert client.get_run(run_id).info.status == "FINISHED"
    outputs = pd.read_parquet(client.download_artifacts(run_id, "behavior/outputs.parquet",
                                                        str(tmp_path)))
    raw = make_task(cfg)  # the prompts by hand: the unwrapped task's, in the template
    groups = raw.perturbation_set(raw.conflict_examples(cfg.task.n_conflict),
                                  cfg.task.n_perturbations)
    expected = [wrapped_text(ex.prompt) for group in groups for ex in group]
    assert len(outputs) == len(expected) == 12 * 6
    assert outputs.sort_values(["group", "variant"])["prompt"].tolist() == expected
    trained = objects["trained"]
    assert trained.task.train_examples()[0].prompt == wrapped_text(
        raw.train_examples()[0].prompt)
    reopened = load_run(client, run_id)  # re-analysis sees the prompts training saw
    assert reopened.task.conflict_examples(3)[0].prompt == expected[0]
