"""Load the base model and tokenizer a recipe names: precision by device, attention kernel, 4-bit, adapter config."""

from __future__ import annotations

import contextlib
import importlib.util
import tempfile
from pathlib import Path

import torch

from finetune.config.inputs import check_model_location
from finetune.config.schema import Recipe
from finetune.errors import UserError
from finetune.runtime import Runtime, seeded_random_model
from finetune.training.launch import built_whole
from finetune.training.plan import TrainPlan


def attention_implementation(recipe: Recipe, runtime: Runtime) -> str:
    choice = recipe.model.attn_implementation
    has_flash = _installed("flash_attn")
    if choice == "flash_attention_2" and not (runtime.use_cuda and has_flash):
        raise UserError(
            "flash_attention_2 needs a CUDA GPU and the flash-attn package: pip install flash-attn, or use sdpa"
        )
    if choice == "flash_attention_4" and not (runtime.use_cuda and _installed("flash_attn.cute")):
        raise UserError(
            "flash_attention_4 needs a CUDA GPU, transformers >= 5.24 and the flash-attn-4 package: "
            "pip install flash-attn-4, or use sdpa"
        )
    if choice == "sdpa_varlen":  # loaded as sdpa; training switches to it once the model's config is known
        return "sdpa"
    if choice != "auto":
        return choice
    return "flash_attention_2" if runtime.use_cuda and has_flash and runtime.dtype != torch.float32 else "sdpa"


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # its parent package is missing
        return False


def load_model(recipe: Recipe, plan: TrainPlan, vocab_size: int):
    """The base model as `plan` says (precision, 4-bit, placement), embeddings resized to `vocab_size` when tokens
    were added."""
    from transformers import AutoConfig, AutoModelForCausalLM

    runtime = plan.runtime

    name = recipe.model.name_or_path
    check_model_location(name)
    kwargs = {
        "dtype": runtime.dtype,
        "attn_implementation": attention_implementation(recipe, runtime),
        "trust_remote_code": recipe.model.trust_remote_code,
        "revision": recipe.model.revision,
    }
    if plan.quantization is not None:
        kwargs["quantization_config"] = plan.quantization
        if runtime.use_cuda and not plan.launch.shards_parameters:  # ZeRO-3/FSDP place the shards themselves
            kwargs["device_map"] = {"": _local_device_index()}
    try:
        if recipe.model.random_init:
            model = _random_model(
                AutoConfig.from_pretrained(name, trust_remote_code=kwargs["trust_remote_code"]), recipe.seed, kwargs
            )
        else:
            model = AutoModelForCausalLM.from_pretrained(name, **kwargs)
    except OSError as exc:
        raise UserError(f"could not load model {name} ({str(exc).splitlines()[0]}); check model.name_or_path") from None
    if model.get_input_embeddings().num_embeddings < vocab_size:  # not weight.shape: empty under ZeRO-3
        model.resize_token_embeddings(vocab_size, mean_resizing=True)
    model.config.use_cache = False
    if recipe.method == "qlora" and not runtime.use_cuda:
        keep_cpu_4bit_in_full_precision(model)
    return model


def keep_cpu_4bit_in_full_precision(model) -> None:
    """Make 4-bit layers compute as they do in training: dequantize, then matmul in the compute dtype.

    In eval mode on CPUs with AVX512-BF16, bitsandbytes switches Linear4bit to a fused kernel that casts the input to
    bf16 (and repacks the weight); training never takes that path, so eval, inference and merge checks would be off
    by bf16 rounding.
    """
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False


def _random_model(config, seed: int, kwargs: dict):
    """A model with seeded random weights; for QLoRA it is saved and reloaded so bitsandbytes quantizes it."""
    from transformers import AutoModelForCausalLM

    quantized = "quantization_config" in kwargs
    with built_whole() if quantized else contextlib.nullcontext():  # saved below, so never sharded by zero.Init
        model = seeded_random_model(
            config,
            seed,
            dtype=kwargs["dtype"],
            attn_implementation=kwargs["attn_implementation"],
            trust_remote_code=kwargs["trust_remote_code"],
        )
    if not quantized:
        return model
    with tempfile.TemporaryDirectory(prefix="finetune-random-init-") as tmp:
        # every process writes its own copy: save_pretrained writes only on rank 0 once torch.distributed is up
        from safetensors.torch import save_model

        model.config.save_pretrained(tmp)
        save_model(model, str(Path(tmp) / "model.safetensors"), metadata={"format": "pt"})
        del model
        return AutoModelForCausalLM.from_pretrained(tmp, **{k: v for k, v in kwargs.items() if k != "revision"})


def _local_device_index() -> int:
    from accelerate import PartialState

    return PartialState().local_process_index


def lora_config(recipe: Recipe, new_token_ids: list[int] | None = None):
    """The PEFT config for lora/qlora/dora; None for full fine-tuning.

    Tokens added to the vocabulary (FIM tokens) start as mean embeddings: their embedding rows are trained through
    PEFT's trainable tokens and the LM head in full, or the model could never learn to read or emit them.
    """
    if recipe.method == "full":
        return None
    from peft import LoraConfig

    a = recipe.adapter
    modules_to_save = list(a.modules_to_save)
    if new_token_ids and "lm_head" not in modules_to_save:
        modules_to_save.append("lm_head")
    return LoraConfig(
        r=a.r,
        lora_alpha=a.alpha,
        lora_dropout=a.dropout,
        target_modules=a.target_modules,
        use_rslora=a.use_rslora,
        use_dora=recipe.method == "dora",
        modules_to_save=modules_to_save or None,
        trainable_token_indices={"embed_tokens": new_token_ids} if new_token_ids else None,
        task_type="CAUSAL_LM",
        bias="none",
    )
