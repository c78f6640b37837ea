"""LoRA on a pretrained causal LM: tiny bases saved in tmp_path, no downloads.

Contract: only the LoRA matrices train (base weights bit-identical), the adapter round-trips,
sites read the same neurons through the peft wrapper, a missing base fails fast with one line,
and ``memgen pretrain`` writes a base that ``model=lora`` fine-tunes in a tracked run.
"""

from __future__ import annotations

import contextlib
import io
import shutil
import time
from pathlib import Path

import pytest
import torch
from huggingface_hub import constants
from mlflow.tracking import MlflowClient
from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel, LlamaConfig
from transformers import LlamaForCausalLM as Llama

from memgen.analysis.capture import capture_last_token
from memgen.analysis.generation import encode_prompts
from memgen.analysis.sites import list_sites, unwrap
from memgen.config import compose
from memgen.errors import ConfigError
from memgen.training.data import encode_training, make_task, pad_right, task_tokenizer
from memgen.training.lora import (
    build_lora_model,
    is_lora_param,
    load_adapter,
    lora_parameter_counts,
    merged_model,
    record_lora_delta,
    save_adapter,
)

TINY_TASK = ["task.n_train=64", "task.n_conflict=8", "task.n_val_conflict=8", "task.n_clean=8",
             "task.params.n_triggers=2"]
TINY_TRAIN = ["trainer.max_epochs=2", "trainer.batch_size=16", "trainer.progress_bar=false",
              "trainer.warmup_steps=2", "analysis.batch_size=16", "tracking.log_checkpoints=false"]
N_LAYERS, WIDTH = 2, 32


def tiny_cfg(tmp: Path, *overrides: str):
    return compose([*TINY_TASK, *TINY_TRAIN, f"output_dir={tmp}",
                    f"tracking.uri=sqlite:///{tmp}/mlflow.db", *overrides])


def tiny_base(arch: str, vocab_size: int, seed: int = 0):
    torch.manual_seed(seed)
    special = {"bos_token_id": 1, "eos_token_id": 1, "pad_token_id": 0}
    if arch == "gpt2":
        return GPT2LMHeadModel(GPT2Config(vocab_size=vocab_size, n_positions=64, n_embd=WIDTH,
                                          n_layer=N_LAYERS, n_head=2, **special))
    return Llama(LlamaConfig(vocab_size=vocab_size, hidden_size=WIDTH, intermediate_size=48,
                             num_hidden_layers=N_LAYERS, num_attention_heads=2,
                             num_key_value_heads=1, max_position_embeddings=64, **special))


@pytest.fixture(scope="module")
def base_dirs(tmp_path_factory) -> dict[str, Path]:
    """A tiny Llama and GPT-2, each saved with the task's character tokenizer."""
    root = tmp_path_factory.mktemp("bases")
    tokenizer = task_tokenizer(make_task(tiny_cfg(root)))
    dirs = {}
    for arch in ("llama", "gpt2"):
        dirs[arch] = root / arch
        tiny_base(arch, len(tokenizer)).save_pretrained(dirs[arch])
        tokenizer.save_pretrained(dirs[arch])
    return dirs


def lora_cfg(tmp: Path, base: Path, *overrides: str):
    return tiny_cfg(tmp, "model=lora", f"model.name_or_path={base}", *overrides)


def build(tmp: Path, base_dirs, arch: str = "llama"):
    targets = ["model.lora.target_modules=[c_attn]"] if arch == "gpt2" else []
    return build_lora_model(lora_cfg(tmp, base_dirs[arch], *targets))


def train_steps(model, tokenizer, tmp: Path, steps: int = 4) -> None:
    """A few AdamW steps on the task's training text (what Lightning does, without it)."""
    examples = make_task(tiny_cfg(tmp)).train_examples()[:16]
    batch = pad_right(encode_training(tokenizer, examples, "sequence"), tokenizer.pad_token_id)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-2)
    model.train()
    for _ in range(steps):
        optimizer.zero_grad()
        model(**batch).loss.backward()
        optimizer.step()
    model.eval()


def test_only_lora_parameters_are_trainable(tmp_path, base_dirs):
    model, tokenizer = build(tmp_path, base_dirs)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(is_lora_param(n) for n in trainable)
    # r=8 on q_proj (32->32) and v_proj (32->16: one KV head of width 16) in 2 layers.
    r = 8
    expected = N_LAYERS * (r * (WIDTH + WIDTH) + r * (WIDTH + 16))
    counts = lora_parameter_counts(model)
    assert counts["lora/params"] == expected == sum(model.get_nb_trainable_parameters()[:1])
    assert tokenizer.padding_side == "left" and tokenizer.pad_token is not None
    assert model.training  # LoRA dropout active under Lightning, which keeps module modes


def test_training_changes_lora_weights_only(tmp_path, base_dirs):
    model, tokenizer = build(tmp_path, base_dirs)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    train_steps(model, tokenizer, tmp_path)
    for name, param in model.named_parameters():
        if is_lora_param(name):
            assert not torch.equal(param, before[name]), f"{name} did not train"
        else:
            assert torch.equal(param, before[name]), f"base weight {name} changed"


def test_adapter_reloads_to_identical_logits(tmp_path, base_dirs):
    model, tokenizer = build(tmp_path, base_dirs)
    train_steps(model, tokenizer, tmp_path)
    adapter_dir = save_adapter(model, tmp_path / "adapter", tokenizer)
    assert (adapter_dir / "adapter_config.json").is_file()
    assert not (adapter_dir / "model.safetensors").exists()  # the adapter only, not the base
    batch = encode_prompts(tokenizer, ["Input:\n1+2+3+4\nTarget:\n", "7+8"], "cpu")
    reloaded = load_adapter(str(base_dirs["llama"]), adapter_dir)
    with torch.no_grad():
        expected = model(**batch).logits
        assert torch.equal(reloaded(**batch).logits, expected)
        merged = merged_model(model)
        torch.testing.assert_close(merged(**batch).logits, expected, atol=1e-5, rtol=1e-5)
        assert torch.equal(model(**batch).logits, expected)  # merging a copy left it intact
    assert not any(is_lora_param(n) for n, _ in merged.named_parameters())


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_sites_see_through_the_peft_wrapper(tmp_path, base_dirs, arch):
    model, tokenizer = build(tmp_path, base_dirs, arch)
    model.eval()
    plain = AutoModelForCausalLM.from_pretrained(base_dirs[arch]).eval()
    assert unwrap(model) is not model and list_sites(model) == list_sites(plain)
    batch = encode_prompts(tokenizer, ["Input:\n1+2+3+4\nTarget:\n"], "cpu")
    sites = list_sites(model)
    with torch.no_grad():
        with capture_last_token(model, sites) as wrapped:
            hidden = model(**batch, output_hidden_states=True).hidden_states
        with capture_last_token(plain, sites) as reference:
            plain(**batch)
    for layer in range(N_LAYERS):  # LoRA B starts at zero: the wrapped model is the base
        torch.testing.assert_close(wrapped[f"resid.{layer}"], hidden[layer][:, -1])
    for site in sites:
        assert wrapped[site].shape == reference[site].shape
        torch.testing.assert_close(wrapped[site], reference[site])


def test_record_lora_delta_is_the_adapter_contribution(tmp_path, base_dirs):
    model, tokenizer = build(tmp_path, base_dirs)
    torch.manual_seed(1)
    for name, param in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.1)
    model.eval()
    q_proj = unwrap(model).model.layers[1].self_attn.q_proj
    outputs = {}
    handles = [module.register_forward_hook(lambda _m, _a, out, k=key: outputs.update({k: out}))
               for key, module in (("full", q_proj), ("base", q_proj.base_layer))]
    batch = encode_prompts(tokenizer, ["Input:\n1+2+3+4\nTarget:\n", "7+8"], "cpu")
    try:
        with torch.no_grad(), record_lora_delta(model) as deltas:
            model(**batch)
    finally:
        for handle in handles:
            handle.remove()
    assert sorted(deltas) == ["q_proj.1", "q_proj.2", "v_proj.1", "v_proj.2"]
    expected = (outputs["full"] - outputs["base"])[:, -1]
    assert expected.abs().max() > 0
    torch.testing.assert_close(deltas["q_proj.2"], expected)
    assert all(not m._forward_hooks for m in model.modules())  # hooks removed


def test_missing_base_fails_fast_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.monotonic()
    with pytest.raises(ConfigError, match="not a local directory and is not in the Hugging Face"):
        build_lora_model(lora_cfg(tmp_path, Path("memgen-test-org/no-such-model")))
    assert time.monotonic() - start < 5


def test_cached_hub_id_loads_offline(tmp_path, base_dirs, monkeypatch):
    """A hub id found in the cache loads with HF_HUB_OFFLINE; the adapter records the id."""
    commit = "0" * 40
    repo = tmp_path / "hub" / "models--memgen-test--tiny-llama"
    shutil.copytree(base_dirs["llama"], repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model, _ = build_lora_model(lora_cfg(tmp_path, Path("memgen-test/tiny-llama")))
    assert model.peft_config["default"].base_model_name_or_path == "memgen-test/tiny-llama"


def test_missing_directory_fails_without_network(tmp_path):
    with pytest.raises(ConfigError, match=r"^model\.name_or_path: .* not a local directory"):
        build_lora_model(lora_cfg(tmp_path, tmp_path / "missing" / "dir"))


def test_unknown_target_modules_name_the_available_ones(tmp_path, base_dirs):
    cfg = lora_cfg(tmp_path, base_dirs["gpt2"])  # default targets q_proj/v_proj: not in GPT-2
    with pytest.raises(ConfigError, match=r"model\.lora\.target_modules: .*c_attn"):
        build_lora_model(cfg)


def test_base_tokenizer_must_encode_the_task(tmp_path, base_dirs):
    cfg = lora_cfg(tmp_path, base_dirs["llama"], "task=colour")  # letters the base never saw
    with pytest.raises(ConfigError, match="model.name_or_path: its tokenizer maps"):
        build_lora_model(cfg)


def test_pretrain_text_has_no_memorized_examples(tmp_path):
    from memgen.commands.pretrain import RuleOnlyTask, pretrain_tokenizer

    task = make_task(tiny_cfg(tmp_path))
    examples = RuleOnlyTask(task).train_examples()
    assert examples and all(ex.kind == "rule" for ex in examples)
    assert all(ex.meta.get("trigger") is None for ex in examples)  # no trigger pair anywhere
    copies = {ex.answer for ex in examples if ex.task == "copy"}
    assert copies == set(task.memorized_tokens)  # each memorized token is emitted somewhere
    tokenizer = pretrain_tokenizer(task)
    other_seed = make_task(tiny_cfg(tmp_path, "seed=7")).memorized_tokens
    assert tokenizer.unk_token_id not in tokenizer(other_seed[0])["input_ids"]


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """``memgen pretrain`` of a tiny Llama, its stdout a log file: (metrics, objects, cfg, tmp,
    stdout)."""
    from memgen.commands.pretrain import pretrain

    tmp = tmp_path_factory.mktemp("pretrain")
    cfg = tiny_cfg(tmp, "model=llama_tiny", "model.n_layer=2", "model.n_embd=32",
                   "model.n_head=2", "model.intermediate_size=48", "trainer.max_epochs=1",
                   "trainer.progress_bar=true")
    log = io.StringIO()  # not a terminal
    with contextlib.redirect_stdout(log):
        metrics, objects = pretrain(cfg)
    return metrics, objects, cfg, tmp, log.getvalue()


@pytest.mark.slow
def test_pretrain_writes_a_loadable_base(pretrained):
    metrics, objects, cfg, tmp, _ = pretrained
    path = Path(objects["path"])
    assert path == (tmp / "pretrained" / "arithmetic-llama-seed0").resolve()
    model = AutoModelForCausalLM.from_pretrained(path)
    assert model.config.num_hidden_layers == 2
    tokenizer = objects["tokenizer"]
    for token in make_task(cfg).memorized_tokens:  # single tokens, so LoRA can emit them
        assert len(tokenizer(token, add_special_tokens=False)["input_ids"]) == 1
    client = MlflowClient(cfg.tracking.uri)
    run = client.get_run(objects["run_id"])
    assert run.info.status == "FINISHED" and run.data.tags["memgen.command"] == "pretrain"
    assert "train/loss_epoch" in run.data.metrics and "val/gen_rate" in metrics
    assert any(a.path == "model" for a in client.list_artifacts(run.info.run_id))


@pytest.mark.slow
def test_pretrain_writes_one_line_per_epoch_into_a_log_file(pretrained):
    """Not a terminal: the progress bar (``trainer.progress_bar=true``) gives way to one
    flushed line per epoch, as ``memgen train`` does."""
    *_, log = pretrained
    assert [line for line in log.splitlines() if line.startswith("epoch ")][0].startswith(
        "epoch 1/1 train/loss_epoch ")
    assert "it/s]" not in log and "\r" not in log


@pytest.mark.slow
def test_lora_train_end_to_end(pretrained):
    from memgen.commands.run import train

    _, objects, _, tmp, _ = pretrained
    cfg = lora_cfg(tmp, Path(objects["path"]), "trainer=lora_cpu", *TINY_TRAIN)
    metrics, out = train(cfg)
    client = MlflowClient(cfg.tracking.uri)
    run = client.get_run(out["run_id"])
    assert run.info.status == "FINISHED" and run.data.tags["model.kind"] == "lora"
    for key in ("train/loss_epoch", "val/behavior_balance", "kept/mem_rate"):
        assert key in run.data.metrics and key in metrics
    assert run.data.metrics["model/params_trainable"] < run.data.metrics["model/params_total"]
    files = {a.path for a in client.list_artifacts(run.info.run_id, "model")}
    assert "model/adapter_config.json" in files and "model/tokenizer.json" in files
    trained = out["trained"].model
    assert all(is_lora_param(n) for n, p in trained.named_parameters() if p.requires_grad)
