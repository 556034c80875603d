"""Read adapters, find their base offline, and load the base the way training saw it (full, 4-bit or dequantized).

Everything that can be checked without loading weights (adapter files, base location, shapes on a meta-device
model, equal ranks for a combination) is checked here first, so bad input fails in one line before minutes of
loading.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from finetune.config.inputs import check_model_location
from finetune.config.schema import QuantizationSection
from finetune.errors import UserError
from finetune.merge.options import EQUAL_RANK_METHODS
from finetune.run import RECIPE_FILE, saved_recipe
from finetune.runtime import DTYPES, Runtime, resolve_dtype
from finetune.runtime import four_bit_config as build_four_bit_config
from finetune.training.model import keep_cpu_4bit_in_full_precision

BaseMode = Literal["full", "4bit", "dequantized"]


@dataclass
class AdapterInfo:
    """One adapter directory: its PEFT config, the base it names, and how it was trained (from recipe.yaml)."""

    path: Path
    config: dict[str, Any]
    method: str  # lora | qlora | dora | unknown (no recipe.yaml)
    quantization: QuantizationSection = field(default_factory=QuantizationSection)
    train_dtype: str = "auto"
    trust_remote_code: bool = False
    revision: str | None = None

    @property
    def base_name(self) -> str | None:
        return self.config.get("base_model_name_or_path")

    @property
    def rank(self) -> int:
        pattern = self.config.get("rank_pattern") or {}
        return max([int(self.config.get("r", 8)), *pattern.values()])

    @property
    def use_dora(self) -> bool:
        return bool(self.config.get("use_dora"))

    @property
    def kind(self) -> str:
        """A short description for the summary: lora, dora, rslora, qlora."""
        if self.method == "qlora":
            return "qlora"
        if self.use_dora:
            return "dora"
        return "rslora" if self.config.get("use_rslora") else "lora"

    def has_tokenizer(self) -> bool:
        return (self.path / "tokenizer_config.json").is_file()


def read_adapter(path: str | Path, assume_qlora: bool = False) -> AdapterInfo:
    """Parse ADAPTER_DIR/adapter_config.json (+ recipe.yaml when training wrote one)."""
    directory = Path(path)
    config_file = directory / "adapter_config.json"
    if not directory.is_dir():
        raise UserError(f"adapter directory {directory} not found: pass the output_dir of a LoRA/QLoRA/DoRA run")
    if not config_file.is_file():
        hint = (
            " (this looks like a full fine-tune: it is already a model)"
            if (directory / "config.json").is_file()
            else ""
        )
        raise UserError(
            f"{directory} has no adapter_config.json{hint}: pass a directory written by a LoRA/QLoRA/DoRA run"
        )
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{config_file} is not valid JSON ({exc}): re-save the adapter") from None
    if config.get("peft_type", "LORA") != "LORA":
        raise UserError(f"{directory} holds a {config.get('peft_type')} adapter: only LoRA-type adapters can be merged")
    if not any((directory / name).is_file() for name in ("adapter_model.safetensors", "adapter_model.bin")):
        raise UserError(f"{directory} has adapter_config.json but no adapter_model.safetensors: copy the weights too")
    info = AdapterInfo(path=directory, config=config, method="qlora" if assume_qlora else "unknown")
    if (directory / RECIPE_FILE).is_file():
        _read_training_recipe(info, directory, assume_qlora)
    return info


def _read_training_recipe(info: AdapterInfo, directory: Path, assume_qlora: bool) -> None:
    """Take only what merging needs from recipe.yaml, leniently, so recipes of other versions still work."""
    raw = saved_recipe(directory, strict=True)
    recipe_file = directory / RECIPE_FILE
    model = raw.get("model") or {}
    info.method = "qlora" if assume_qlora else str(raw.get("method", "lora"))
    info.train_dtype = str(model.get("dtype", "auto"))
    info.trust_remote_code = bool(model.get("trust_remote_code", False))
    info.revision = model.get("revision")
    quant = {k: v for k, v in (raw.get("quantization") or {}).items() if k in QuantizationSection.model_fields}
    try:
        info.quantization = QuantizationSection.model_validate(quant)
    except ValueError as exc:
        raise UserError(f"{recipe_file}: bad quantization section ({str(exc).splitlines()[0]})") from None


# ------------------------------------------------------------------------------------------------ base location


@dataclass(frozen=True)
class BaseCheckpoint:
    """Where the base model's files are on this machine, and what the adapters called it."""

    name: str
    path: Path


def _cached_hub_model(name: str, revision: str | None) -> Path | None:
    """The local snapshot directory of a hub model in the Hugging Face cache, without any network access."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - transformers depends on it
        return None
    try:
        found = try_to_load_from_cache(name, "config.json", revision=revision)
    except Exception:  # an invalid repo id, for instance
        return None
    return Path(found).parent if isinstance(found, str) else None


def locate_base(name: str, adapter: AdapterInfo | None = None, explicit: bool = False) -> BaseCheckpoint:
    """A local model directory (as given, or relative to the adapter) or a hub model already in the cache."""
    where = "--base" if explicit else f"{adapter.path}/adapter_config.json" if adapter else "the adapter"
    candidates = [Path(name).expanduser()]
    if adapter is not None and not Path(name).is_absolute():
        candidates.append(adapter.path / name)
    for candidate in candidates:
        if candidate.is_dir():
            check_model_location(str(candidate))
            return BaseCheckpoint(name=name, path=candidate.resolve())
    looks_local = name.startswith((".", "/", "~")) or name.count("/") > 1
    if not looks_local:
        cached = _cached_hub_model(name, adapter.revision if adapter else None)
        if cached is not None:
            return BaseCheckpoint(name=name, path=cached)
        raise UserError(
            f"base model {name} (named in {where}) is not a local directory and not in the Hugging Face cache, so it "
            f"cannot be loaded offline: download it first (hf download {name}) or pass --base PATH"
        )
    raise UserError(f"base model directory {name} (named in {where}) not found: pass --base PATH to the base model")


def resolve_base(adapters: list[AdapterInfo], base: str | None) -> BaseCheckpoint:
    """The base to merge into: --base, else the one every adapter names (they must agree)."""
    if base is not None:
        return locate_base(base, adapters[0], explicit=True)
    located = []
    for adapter in adapters:
        if not adapter.base_name:
            raise UserError(f"{adapter.path}/adapter_config.json names no base model: pass --base PATH")
        located.append(locate_base(adapter.base_name, adapter))
    paths = {b.path for b in located}
    if len(paths) > 1:
        names = ", ".join(f"{a.path} on {b.name}" for a, b in zip(adapters, located, strict=True))
        raise UserError(
            f"the adapters were trained on different bases ({names}): combine adapters of one base only "
            "(or pass --base if these names are copies of the same model)"
        )
    return located[0]


# ------------------------------------------------------------------------------------------------ fit checks


def check_combination(adapters: list[AdapterInfo], method: str) -> None:
    """Refuse combinations PEFT cannot do faithfully, before loading anything."""
    if method in EQUAL_RANK_METHODS and len({a.rank for a in adapters}) > 1:
        ranks = ", ".join(f"r={a.rank} ({a.path})" for a in adapters)
        raise UserError(
            f"--method {method} needs adapters of equal rank, got {ranks}: use --method cat or svd, "
            "or train the adapters with the same adapter.r"
        )
    dora = [str(a.path) for a in adapters if a.use_dora]
    if dora:
        raise UserError(
            f"DoRA adapters cannot be combined ({', '.join(dora)}): PEFT's weighted combination ignores their "
            "magnitude vectors; merge each DoRA adapter into the base on its own"
        )
    saved = [
        str(a.path) for a in adapters if a.config.get("modules_to_save") or a.config.get("trainable_token_indices")
    ]
    if len(saved) > 1:
        raise UserError(
            f"adapters {', '.join(saved)} each carry fully trained modules (modules_to_save / new FIM token "
            "embeddings), which cannot be averaged: merge them one at a time, or train without model.add_fim_tokens"
        )


def _adapter_shapes(adapter: AdapterInfo) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape, read from the safetensors header without loading the weights."""
    file = adapter.path / "adapter_model.safetensors"
    if not file.is_file():
        return {}
    from safetensors import safe_open

    try:
        with safe_open(str(file), framework="pt") as handle:
            return {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}  # noqa: SIM118 (not a dict)
    except Exception as exc:  # safetensors raises its own error types
        raise UserError(f"{file} is not a readable safetensors file ({exc}): re-save the adapter") from None


def check_fits(adapter: AdapterInfo, base: BaseCheckpoint, vocab_size: int) -> None:
    """Compare every LoRA matrix with the base's layer shapes on a meta-device model (no weights loaded)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(base.path, trust_remote_code=adapter.trust_remote_code)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, trust_remote_code=adapter.trust_remote_code)
    modules = dict(model.named_modules())
    hint = f"pass --base with the model it was trained on (its adapter_config.json names {adapter.base_name})"
    for key, shape in _adapter_shapes(adapter).items():
        for part, axis in ((".lora_A.", 1), (".lora_B.", 0)):
            if part not in key:
                continue
            name = key.split(part)[0].removeprefix("base_model.model.")
            module = modules.get(name)
            if module is None:
                raise UserError(f"adapter {adapter.path} does not fit base {base.name}: it has no layer {name}; {hint}")
            want = _module_size(module, axis, vocab_size)
            if want is not None and shape[axis] != want:
                feature = "in_features" if axis == 1 else "out_features"
                raise UserError(
                    f"adapter {adapter.path} does not fit base {base.name}: layer {name} has {feature}={want}, the "
                    f"adapter expects {shape[axis]}; {hint}"
                )


def _module_size(module: torch.nn.Module, axis: int, vocab_size: int) -> int | None:
    """in_features (axis 1 of lora_A) or out_features (axis 0 of lora_B) of a linear or embedding layer."""
    if isinstance(module, torch.nn.Linear):
        return module.in_features if axis == 1 else module.out_features
    if isinstance(module, torch.nn.Embedding):
        return max(module.num_embeddings, vocab_size) if axis == 1 else module.embedding_dim
    return None


# ------------------------------------------------------------------------------------------------ loading


def parse_dtype(name: str, base: BaseCheckpoint) -> torch.dtype:
    """--dtype; 'auto' keeps the base checkpoint's precision (what its authors serve it in)."""
    if name != "auto":
        return DTYPES[name]
    from transformers import AutoConfig

    stored = getattr(AutoConfig.from_pretrained(base.path), "dtype", None)
    if isinstance(stored, str):
        stored = getattr(torch, stored, None)
    return stored if isinstance(stored, torch.dtype) and stored.is_floating_point else torch.float32


def training_dtype(adapter: AdapterInfo, use_cuda: bool) -> torch.dtype:
    """The dtype the base was loaded in for training (by training's own rule, `finetune.runtime.resolve_dtype`)."""
    return resolve_dtype(adapter.train_dtype, use_cuda)


def four_bit_config(adapter: AdapterInfo, use_cuda: bool, compute_dtype: torch.dtype):
    """The BitsAndBytesConfig training used (so the 4-bit weights are the same), computing in `compute_dtype`."""
    runtime = Runtime(use_cuda=use_cuda, dtype=training_dtype(adapter, use_cuda))
    config = build_four_bit_config(adapter.quantization, runtime)
    config.bnb_4bit_compute_dtype = compute_dtype
    return config


def load_base(base: BaseCheckpoint, adapter: AdapterInfo, mode: BaseMode, dtype: torch.dtype, device: str, vocab_size: int):
    """The base model in `mode`: full precision, 4-bit as in training, or 4-bit dequantized into `dtype`.

    Weights are read lazily from safetensors (transformers' low-memory loading), one shard at a time.
    """
    from transformers import AutoModelForCausalLM

    use_cuda = device == "cuda"
    kwargs: dict[str, Any] = {"trust_remote_code": adapter.trust_remote_code, "device_map": {"": device}}
    if mode == "full":
        kwargs["dtype"] = dtype
    else:
        kwargs["dtype"] = training_dtype(adapter, use_cuda)
        kwargs["quantization_config"] = four_bit_config(adapter, use_cuda, dtype)
    try:
        model = AutoModelForCausalLM.from_pretrained(base.path, **kwargs)
    except (OSError, ValueError) as exc:
        raise UserError(f"could not load base model {base.name} ({str(exc).splitlines()[0]}); check --base") from None
    if mode == "dequantized":
        model = model.dequantize(dtype=dtype)
        model.to(dtype)
    if mode == "4bit":
        keep_cpu_4bit_in_full_precision(model)
    if model.get_input_embeddings().weight.shape[0] < vocab_size:
        # rows for tokens added in training; their values come from the adapter's trainable tokens / modules_to_save
        model.resize_token_embeddings(vocab_size, mean_resizing=False)
    model.eval()
    return model


def attach_adapters(model, adapters: list[AdapterInfo], combine: Combination | None):
    """A PeftModel whose only adapter is the one to merge or save: the single adapter, or the weighted combination."""
    from peft import PeftModel

    names = ["default"] if combine is None else [f"adapter{i}" for i in range(len(adapters))]
    try:
        peft_model = PeftModel.from_pretrained(model, str(adapters[0].path), adapter_name=names[0])
        for name, adapter in zip(names[1:], adapters[1:], strict=True):
            peft_model.load_adapter(str(adapter.path), adapter_name=name)
    except (RuntimeError, ValueError, KeyError) as exc:
        raise UserError(
            f"could not apply the adapter to the base ({str(exc).splitlines()[0][:200]}): pass the base it was "
            "trained on with --base"
        ) from None
    if combine is not None:
        combine.apply(peft_model, names)
    peft_model.eval()
    return peft_model


@dataclass(frozen=True)
class Combination:
    """How several adapters become one: PEFT's add_weighted_adapter with these settings, seeded for DARE."""

    method: str
    weights: tuple[float, ...]
    density: float | None = None
    seed: int = 0

    def apply(self, peft_model, names: list[str]) -> None:
        torch.manual_seed(self.seed)  # DARE drops entries at random: the same seed gives the same adapter
        try:
            peft_model.add_weighted_adapter(
                adapters=names,
                weights=list(self.weights),
                adapter_name="default",
                combination_type=self.method,
                density=self.density,
            )
        except (ValueError, TypeError) as exc:
            raise UserError(f"cannot combine the adapters with --method {self.method}: {exc}") from None
        _fix_rslora_scaling(peft_model)
        peft_model.set_adapter("default")
        for name in names:
            peft_model.delete_adapter(name)


def _fix_rslora_scaling(peft_model) -> None:
    """The combined adapter has lora_alpha = r and already holds each input's scaling in its matrices, so its own
    scaling must be 1; PEFT copies use_rslora from the first input, which would scale it by sqrt(r) again."""
    from peft.tuners.lora import LoraLayer

    config = peft_model.peft_config["default"]
    if not config.use_rslora:
        return
    config.use_rslora = False
    for module in peft_model.modules():
        if isinstance(module, LoraLayer) and "default" in module.scaling:
            module.scaling["default"] = 1.0
