"""A pretrained Hugging Face causal LM with LoRA adapters (the paper's Llama setting).

``build_lora_model(cfg)`` loads ``model.name_or_path`` and wraps it with peft, so the rest of the
pipeline (Lightning module, generation, sites, steering) runs unchanged on the wrapped model:
only the LoRA matrices train, the base weights stay bit-identical.

Where the base comes from, without ever hanging on the network:
1. an existing local directory (e.g. one written by ``memgen pretrain``);
2. else the Hugging Face cache (``local_files_only``: nothing is contacted);
3. else, unless ``HF_HUB_OFFLINE``/``TRANSFORMERS_OFFLINE`` is set, a download, after a quick
   reachability check of the hub (``HF_HUB_ETAG_TIMEOUT``/``HF_HUB_DOWNLOAD_TIMEOUT`` apply).
Anything else is a :class:`~memgen.config.ConfigError` with one line naming the key.
"""

from __future__ import annotations

import copy
import os
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from omegaconf import DictConfig
from torch import nn

from memgen.analysis.capture import LastTokenRecorder
from memgen.analysis.sites import n_layers, site_module
from memgen.config import first_line
from memgen.errors import ConfigError
from memgen.tasks import Task

KEY = "model.name_or_path"
_TRUE = ("1", "true", "yes", "on")
_DTYPES = {"bf16-true": torch.bfloat16, "bf16": torch.bfloat16, "16-true": torch.float16,
           "16": torch.float16}


def hub_offline() -> bool:
    """``HF_HUB_OFFLINE``/``TRANSFORMERS_OFFLINE``, read now: the hub library reads it at import."""
    return any(os.environ.get(k, "").strip().lower() in _TRUE
               for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def cached_snapshot(repo_id: str) -> str | None:
    """The cached snapshot folder of a hub id, or None; never touches the network."""
    from huggingface_hub import snapshot_download  # noqa: PLC0415

    try:
        folder = snapshot_download(repo_id, local_files_only=True)
    except Exception:  # noqa: BLE001 - not cached, not a valid id: both mean "not here"
        return None
    return folder if (Path(folder) / "config.json").is_file() else None


def _hub_unreachable(timeout_s: float = 5.0) -> str | None:
    """Why the hub endpoint cannot be reached (a TCP connect), or None when it can."""
    from huggingface_hub import constants  # noqa: PLC0415

    url = urlparse(constants.ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname or "", port), timeout=timeout_s).close()
    except OSError as exc:
        return f"{url.hostname}: {exc}"
    return None


def resolve_pretrained(name_or_path: str, key: str = KEY) -> tuple[str, bool]:
    """``(source, local)``: a local directory to load from, or a hub id to download."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return str(path.resolve()), True
    cached = cached_snapshot(name_or_path)
    if cached:
        return cached, True
    where = f"{key}: {name_or_path!r} is not a local directory and is not in the Hugging Face cache"
    looks_like_path = name_or_path.startswith(("/", ".", "~")) or name_or_path.count("/") > 1
    if hub_offline():
        raise ConfigError(f"{where}; HF_HUB_OFFLINE is set, so nothing is downloaded (pass a "
                          f"directory, e.g. one from `memgen pretrain`)")
    if looks_like_path:
        raise ConfigError(f"{where} (pass an existing directory or a hub id like org/name)")
    reason = _hub_unreachable()
    if reason:
        raise ConfigError(f"{where}, and the hub is unreachable ({reason}); pass a local "
                          f"directory or set HF_HUB_OFFLINE=1")
    return name_or_path, False


def _dtype_kwargs(precision: str) -> dict[str, Any]:
    """Load directly in half precision for ``*-true`` precisions; mixed keeps fp32 weights."""
    import transformers  # noqa: PLC0415
    from packaging.version import Version  # noqa: PLC0415

    dtype = _DTYPES.get(str(precision))
    if dtype is None:
        return {}
    new_api = Version(transformers.__version__) >= Version("4.56")
    return {"dtype" if new_api else "torch_dtype": dtype}


def load_pretrained(name_or_path: str, precision: str = "32-true", key: str = KEY):
    """``(model, tokenizer)`` of a causal LM; load failures become one-line ConfigErrors."""
    from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: PLC0415

    source, local = resolve_pretrained(name_or_path, key)
    opts: dict[str, Any] = {"local_files_only": True} if local else {}
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **opts)
        model = AutoModelForCausalLM.from_pretrained(source, **opts, **_dtype_kwargs(precision))
    except (OSError, ValueError, KeyError) as exc:
        why = first_line(exc)[:200]
        raise ConfigError(f"{key}: cannot load {name_or_path!r} ({why})") from None
    # Recorded in the adapter's config: a directory as given, a hub id rather than its cache path.
    model.name_or_path = source if Path(name_or_path).expanduser().is_dir() else name_or_path
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"  # generation reads position -1 as the last prompt token
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def _linear_names(model: nn.Module) -> list[str]:
    """Leaf names of the linear-like layers LoRA can target (for error messages)."""
    from transformers.pytorch_utils import Conv1D  # noqa: PLC0415

    names = {name.rsplit(".", 1)[-1] for name, module in model.named_modules()
             if isinstance(module, (nn.Linear, Conv1D))}
    return sorted(names)


def _targets_conv1d(model: nn.Module, targets: list[str]) -> bool:
    """GPT-2 stores its projections as transposed ``Conv1D``: LoRA then needs fan_in_fan_out."""
    from transformers.pytorch_utils import Conv1D  # noqa: PLC0415

    return any(isinstance(module, Conv1D) and name.rsplit(".", 1)[-1] in targets
               for name, module in model.named_modules())


def wrap_lora(model: nn.Module, r: int, alpha: int, dropout: float, target_modules: list[str]):
    """``get_peft_model`` with a LoraConfig; unknown targets fail naming the available ones."""
    from peft import LoraConfig, get_peft_model  # noqa: PLC0415

    targets = list(target_modules)
    available = _linear_names(model)
    if not set(targets) & set(available):
        raise ConfigError(f"model.lora.target_modules: none of {targets} is a layer of "
                          f"{type(model).__name__} (expected names from {available})")
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets,
                        task_type="CAUSAL_LM", fan_in_fan_out=_targets_conv1d(model, targets))
    return get_peft_model(model, config)


def check_tokenizer_covers(tokenizer, task: Task, n_examples: int = 50) -> None:
    """Fail early if the base tokenizer maps the task's memorized answers or text to ``<unk>``.

    A character tokenizer from another task (or an older ``memgen pretrain``) may lack them;
    byte-level BPE tokenizers (Llama, GPT-2) have no unknown token and always pass.
    """
    unk = tokenizer.unk_token_id
    if unk is None:
        return
    examples = task.train_examples()[:n_examples]
    texts = list(task.memorized_tokens) + [ex.text for ex in examples]
    for text in texts:
        if unk in tokenizer(text, add_special_tokens=False)["input_ids"]:
            raise ConfigError(
                f"{KEY}: its tokenizer maps part of {text[:40]!r} to {tokenizer.unk_token} "
                f"(pretrain a base on this task: memgen pretrain task={task.name} "
                f"model=llama_tiny)")


def build_lora_model(cfg: DictConfig):
    """``(peft model, tokenizer)``: ``model.name_or_path`` with LoRA at ``model.lora.*``."""
    from memgen.training.data import make_task  # noqa: PLC0415

    m = cfg.model
    model, tokenizer = load_pretrained(str(m.name_or_path), str(cfg.trainer.precision))
    check_tokenizer_covers(tokenizer, make_task(cfg))
    peft_model = wrap_lora(model, m.lora.r, m.lora.alpha, m.lora.dropout,
                           list(m.lora.target_modules))
    # from_pretrained returns eval mode and Lightning keeps submodule modes: train, so that
    # LoRA dropout is active like a scratch model's.
    return peft_model.train(), tokenizer


def is_lora_param(name: str) -> bool:
    return "lora_" in name


def lora_parameter_counts(model: nn.Module) -> dict[str, float]:
    """LoRA vs base parameter counts (logged as ``lora/*``)."""
    lora = sum(p.numel() for n, p in model.named_parameters() if is_lora_param(n))
    base = sum(p.numel() for n, p in model.named_parameters() if not is_lora_param(n))
    return {"lora/params": lora, "lora/base_params": base,
            "lora/fraction": lora / max(1, lora + base)}


def save_adapter(model, directory: str | Path, tokenizer=None) -> Path:
    """Only the adapter (``adapter_config.json`` + safetensors), plus the tokenizer if given."""
    directory = Path(directory)
    model.save_pretrained(directory)
    if tokenizer is not None:
        tokenizer.save_pretrained(directory)
    return directory


def load_adapter(base_dir_or_id: str, adapter_dir: str | Path, precision: str = "32-true"):
    """A base model (directory or cached hub id) with a saved adapter on top, in eval mode.

    Public API (README, "Use from Python"): a LoRA run's ``model`` artifact holds the adapter
    only; this puts it back on its base for a notebook's analysis.
    """
    from peft import PeftModel  # noqa: PLC0415

    base, _ = load_pretrained(base_dir_or_id, precision, key="base_dir_or_id")
    return PeftModel.from_pretrained(base, str(adapter_dir)).eval()


def merged_model(model) -> Any:
    """A plain transformers model with the adapter folded in; ``model`` is left untouched.

    Works on a deep copy (twice the memory for a moment) so the caller keeps training/steering
    the adapter model.
    """
    return copy.deepcopy(model).merge_and_unload()


def log_lora_artifacts(run, model, tokenizer, log_merged: bool = False) -> None:
    """Adapter + tokenizer as the ``model`` artifact; the merged model as ``model_merged``."""
    run.log_metrics(lora_parameter_counts(model))
    base = getattr(getattr(model, "peft_config", {}).get("default"), "base_model_name_or_path", "")
    run.set_tags({"lora.base": base or ""})
    with tempfile.TemporaryDirectory() as tmp:
        save_adapter(model, tmp, tokenizer)
        run.log_artifacts(tmp, "model")
    if log_merged:
        with tempfile.TemporaryDirectory() as tmp:
            merged_model(model).save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            run.log_artifacts(tmp, "model_merged")


def _lora_layers(model: nn.Module) -> list[tuple[str, Any]]:
    """``("<leaf>.<L>", module)`` for each LoRA-wrapped layer, L = 1-based block as in sites."""
    from peft.tuners.lora import LoraLayer  # noqa: PLC0415

    found = []
    for layer in range(1, n_layers(model) + 1):
        block, _ = site_module(model, f"resid.{layer}")
        for name, module in block.named_modules():
            if isinstance(module, LoraLayer):
                found.append((f"{name.rsplit('.', 1)[-1]}.{layer}", module))
    return found


def _delta(module: Any, x: torch.Tensor) -> torch.Tensor:
    """Sum over active adapters of scaling * B(A(x)); dropout is skipped (eval semantics)."""
    total = None
    for name in module.active_adapters:
        if name not in module.lora_A:
            continue
        a, b = module.lora_A[name], module.lora_B[name]
        out = b(a(x.to(a.weight.dtype))) * module.scaling[name]
        total = out if total is None else total + out
    if total is None:
        raise ValueError("LoRA layer has no active adapter")
    return total


@contextmanager
def record_lora_delta(model: nn.Module) -> Iterator[LastTokenRecorder]:
    """Record the LoRA update ``scaling * B A x`` at the last position of every LoRA layer.

    Keys are ``"<module>.<L>"`` such as ``"q_proj.3"`` (block L, 1-based as in ``resid.L``);
    one chunk per forward pass, like ``capture_last_token``. Hooks are always removed. Public
    API (README, "Use from Python"): what the adapter adds, layer by layer.
    """
    layers = _lora_layers(model)
    recorder = LastTokenRecorder([name for name, _ in layers])
    handles = []

    def hook(name: str):
        def fn(module, args, _out):
            with torch.no_grad():
                recorder.record(name, _delta(module, args[0][:, -1:]))
        return fn

    try:
        for name, module in layers:
            handles.append(module.register_forward_hook(hook(name)))
        yield recorder
    finally:
        for handle in handles:
            handle.remove()
