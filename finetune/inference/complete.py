"""Fill in the middle with a base model or a fine-tuned one: loading, prompts, batched generation.

The prompt is built by the same `SampleEncoder.infill_prompt_ids` that laid out the training samples, so a
model is asked exactly what it was trained on (family header, PSM/SPM order, no spurious leading `▁`).
Generation is batched with left padding and the KV cache, and stops at EOS or any of the family's FIM tokens.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from finetune.data.tokenize.encoder import SampleEncoder
from finetune.data.tokenize.families import detect_family, get_family
from finetune.errors import UserError
from finetune.run import saved_recipe, split_file

if TYPE_CHECKING:
    import torch

    from finetune.inference.stopping import StopRule


@dataclass
class Completer:
    """A model ready to fill in the middle, with its tokenizer and the prompt encoder of its family."""

    model: Any
    tokenizer: Any
    encoder: SampleEncoder
    family: str
    label: str
    run_dir: Path | None = None  # the training run this model came from (split.json, recipe.yaml), if any

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def max_positions(self) -> int | None:
        return getattr(self.model.config, "max_position_embeddings", None)

    def prompt_ids(self, prefix: str, suffix: str, path: str = "", language: str = "", spm: bool | None = None):
        return self.encoder.infill_prompt_ids(prefix, suffix, path, language, spm)

    def decode(self, ids: list[int]) -> str:
        """Generated ids as the text they continue with: no dummy-prefix space lost or added."""
        return self.encoder.pieces.decode_continuation(ids)


def _has_tokenizer(directory: Path) -> bool:
    return (directory / "tokenizer_config.json").is_file() or (directory / "tokenizer.json").is_file()


def _check_fim_tokens(tokenizer: Any, family: str, what: str) -> None:
    vocab = tokenizer.get_vocab()
    missing = [t for t in get_family(family).fim_tokens if t not in vocab]
    if missing:
        raise UserError(
            f"{what} has no {family} FIM tokens ({', '.join(missing)}), so it cannot fill in the middle: use a "
            "model trained with them, pass --family for the family it was trained with, or fine-tune it with "
            "model.add_fim_tokens=true"
        )


def load_completer(
    model: str | None,
    adapter: str | None = None,
    *,
    family: str = "auto",
    dtype: str = "auto",
    label: str | None = None,
) -> Completer:
    """Load a model (and a LoRA/DoRA adapter or a full fine-tune's output directory) for inference.

    `model` may be left out when `adapter` is a training run: its recipe.yaml names the base model. The
    tokenizer comes from the run when it saved one (FIM tokens added in training live there), and the family
    from the run's recipe, else from the tokenizer. A QLoRA run's base is loaded in 4-bit as it was trained.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from finetune.config.inputs import check_model_location
    from finetune.runtime import keep_freed_memory, resolve_dtype
    from finetune.training.model import keep_cpu_4bit_in_full_precision

    run_dir = Path(adapter) if adapter else None
    if run_dir is not None and not run_dir.is_dir():
        raise UserError(f"adapter {adapter} not found: pass the output_dir of a training run")
    recipe = saved_recipe(run_dir) or saved_recipe(Path(model) if model else None)
    if model is None:
        model = (recipe.get("model") or {}).get("name_or_path")
        if not model:
            raise UserError("no model given: pass --model DIR (the base model the adapter was trained on)")
    check_model_location(model)
    full_run = run_dir is not None and (run_dir / "config.json").is_file() and not (run_dir / "adapter_config.json").is_file()
    if run_dir is not None and not full_run and not (run_dir / "adapter_config.json").is_file():
        raise UserError(f"{adapter} holds neither an adapter (adapter_config.json) nor a model: pass a run's output_dir")
    weights = str(run_dir) if full_run else model
    tokenizer_dir = str(run_dir) if run_dir is not None and _has_tokenizer(run_dir) else weights
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    if family == "auto":
        family = (recipe.get("model") or {}).get("family") or "auto"
    family = detect_family(tokenizer) if family == "auto" else family
    _check_fim_tokens(tokenizer, family, f"the tokenizer of {tokenizer_dir}")
    encoder = SampleEncoder(tokenizer, family)

    use_cuda = torch.cuda.is_available()
    if not use_cuda:  # generation allocates and frees a step's tensors (cache, logits) hundreds of times per item
        keep_freed_memory()
    kwargs: dict[str, Any] = {"dtype": resolve_dtype(dtype, use_cuda)}
    if recipe.get("method") == "qlora" and not full_run:
        kwargs["quantization_config"] = _qlora_config(recipe, kwargs["dtype"])
    if use_cuda:
        kwargs["device_map"] = {"": 0}
    try:
        net = AutoModelForCausalLM.from_pretrained(weights, **kwargs)
    except OSError as exc:
        raise UserError(f"could not load model {weights} ({str(exc).splitlines()[0]})") from None
    if run_dir is not None and not full_run:
        from peft import PeftModel

        if net.get_input_embeddings().weight.shape[0] < len(tokenizer):
            net.resize_token_embeddings(len(tokenizer), mean_resizing=False)
        net = PeftModel.from_pretrained(net, str(run_dir))
    if "quantization_config" in kwargs:
        keep_cpu_4bit_in_full_precision(net)
    net.eval()
    name = label or (run_dir.name if run_dir is not None else Path(model).name)
    return Completer(net, tokenizer, encoder, family, name, run_dir if run_dir is not None else _run_dir_of(model))


def _run_dir_of(model: str) -> Path | None:
    path = Path(model)
    return path if split_file(path) else None


def _qlora_config(recipe: dict, dtype: torch.dtype):
    """The run's 4-bit settings (from its recipe.yaml), built by the same code as in training."""
    from finetune.config.schema import QuantizationSection
    from finetune.runtime import Runtime, four_bit_config

    raw = recipe.get("quantization") or {}
    section = QuantizationSection.model_validate({k: v for k, v in raw.items() if k in QuantizationSection.model_fields})
    return four_bit_config(section, Runtime(torch.cuda.is_available(), dtype))


# ------------------------------------------------------------------------------------------------- generation


@dataclass(frozen=True)
class Sampling:
    """Decoding settings: greedy when temperature is 0."""

    max_new_tokens: int = 128
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None

    def config(self, stop_ids: list[int], pad_id: int, max_new_tokens: int):
        from transformers import GenerationConfig

        sample = self.temperature > 0
        extra = {"temperature": self.temperature, "top_p": self.top_p, "top_k": self.top_k or None} if sample else {}
        return GenerationConfig(
            max_new_tokens=max_new_tokens,
            do_sample=sample,
            eos_token_id=stop_ids,
            pad_token_id=pad_id,
            use_cache=True,
            **extra,
        )


@dataclass
class Generation:
    """One completion: its ids (stop token excluded), text, and what ended it (a stop token, its rule, or the limit)."""

    ids: list[int]
    text: str
    stopped: bool
    by_rule: bool = False

    @property
    def ended(self) -> str:
        return "stop_token" if self.stopped else "rule" if self.by_rule else "limit"


@dataclass
class GenerationStats:
    prompts: int = 0
    new_tokens: int = 0
    seconds: float = 0.0
    batches: int = 0
    rule_stops: int = 0  # rows a stop rule ended before a stop token or the limit
    tokens_saved_at_most: int = 0  # what those rows had left of max_new_tokens: they might have hit EOS sooner
    skipped: list[int] = field(default_factory=list)

    @property
    def tokens_per_second(self) -> float:
        return self.new_tokens / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict:
        return {
            "prompts": self.prompts,
            "new_tokens": self.new_tokens,
            "seconds": round(self.seconds, 3),
            "tokens_per_second": round(self.tokens_per_second, 1),
            "batches": self.batches,
            "rule_stops": self.rule_stops,
            "tokens_saved_at_most": self.tokens_saved_at_most,
        }


def _left_pad(batch: list[list[int]], pad_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    import torch

    width = max(len(ids) for ids in batch)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, ids in enumerate(batch):
        input_ids[row, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
        mask[row, width - len(ids) :] = 1
    return input_ids.to(device), mask.to(device)


def generate(
    completer: Completer,
    prompts: list[list[int]],
    sampling: Sampling = Sampling(),
    *,
    batch_size: int = 8,
    on_batch=None,
    stops: Sequence[StopRule | None] | None = None,
    groups: Sequence[str] | None = None,
) -> tuple[list[Generation | None], GenerationStats]:
    """Complete every prompt, `batch_size` at a time (similar lengths together, left-padded, KV cache).

    `stops[i](text)` says when prompt i's completion is done (e.g. its syntactic unit is complete): the row stops
    there instead of running to a stop token or `max_new_tokens`. Prompts are batched by `groups[i]` first, then by
    length: a batch lasts as long as its longest completion, so one-line completions should not wait for whole
    blocks. A prompt that leaves no room for new tokens
    within the model's positions gets None (listed in `stats.skipped`). `on_batch(pairs)` is called with the
    (prompt index, generation) pairs of each finished batch (the skipped prompts first, with None).
    """
    import torch

    if batch_size < 1:
        raise UserError(f"batch size must be at least 1, got {batch_size}")
    if stops is not None and len(stops) != len(prompts):
        raise ValueError(f"{len(stops)} stop rules for {len(prompts)} prompts")
    model, encoder = completer.model, completer.encoder
    stop_ids = encoder.stop_token_ids
    pad_id = completer.tokenizer.pad_token_id if completer.tokenizer.pad_token_id is not None else encoder.eos_id
    limit = completer.max_positions
    stats = GenerationStats(prompts=len(prompts))
    results: list[Generation | None] = [None] * len(prompts)
    order = sorted(range(len(prompts)), key=lambda i: (groups[i] if groups else "", -len(prompts[i])))
    if limit is not None:
        stats.skipped = [i for i in order if len(prompts[i]) >= limit]
        order = [i for i in order if len(prompts[i]) < limit]
    if stats.skipped and on_batch is not None:
        on_batch([(i, None) for i in stats.skipped])
    if sampling.seed is not None:
        torch.manual_seed(sampling.seed)
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            batch = [prompts[i] for i in chunk]
            room = sampling.max_new_tokens
            if limit is not None:
                room = min(room, limit - max(len(ids) for ids in batch))
            input_ids, mask = _left_pad(batch, pad_id, completer.device)
            row_stop = None
            if stops is not None:
                from finetune.inference.stopping import RowStop

                row_stop = RowStop([stops[i] for i in chunk], input_ids.shape[1], completer.decode, set(stop_ids))
            began = time.perf_counter()
            with torch.inference_mode():
                out = model.generate(
                    input_ids=input_ids,
                    attention_mask=mask,
                    generation_config=sampling.config(stop_ids, pad_id, room),
                    stopping_criteria=row_stop.as_list() if row_stop is not None else None,
                )
            stats.seconds += time.perf_counter() - began
            stats.batches += 1
            for row, index in enumerate(chunk):
                new = out[row, input_ids.shape[1] :].tolist()
                kept = row_stop.kept[row] if row_stop is not None else None
                if kept is not None:
                    results[index], used = Generation(new[:kept], completer.decode(new[:kept]), False, True), kept
                    stats.rule_stops += 1
                    stats.tokens_saved_at_most += room - kept
                else:
                    results[index], used = _finish(completer, new, set(stop_ids))
                stats.new_tokens += used
            if on_batch is not None:
                on_batch([(index, results[index]) for index in chunk])
    finally:
        model.train(was_training)
    return results, stats


def _finish(completer: Completer, new: list[int], stop_ids: set[int]) -> tuple[Generation, int]:
    """Cut generated ids at the first stop token; returns the generation and how many tokens were produced."""
    for position, token in enumerate(new):
        if token in stop_ids:
            ids = new[:position]
            return Generation(ids, completer.decode(ids), True), position + 1
    return Generation(new, completer.decode(new), False), len(new)


def fit_context(
    completer: Completer, prefix: str, suffix: str, path: str, language: str, spm: bool | None, budget: int | None
) -> tuple[list[int], str, str]:
    """The prompt ids, trimmed to `budget` tokens by keeping the lines nearest the cursor (as editor plugins do).

    The prefix keeps its last lines and the suffix its first, both shrunk in proportion until the prompt fits; the
    line the cursor is on is never cut.
    """
    prompt = completer.prompt_ids(prefix, suffix, path, language, spm)
    kept_prefix, kept_suffix = prefix, suffix
    while budget is not None and len(prompt) > budget:
        ratio = 0.9 * budget / len(prompt)
        head = kept_prefix[len(kept_prefix) - int(len(kept_prefix) * ratio) :]
        tail = kept_suffix[: int(len(kept_suffix) * ratio)]
        cursor_line_start = prefix.rfind("\n") + 1
        head = head[head.find("\n") + 1 :] if len(head) > len(prefix) - cursor_line_start else prefix[cursor_line_start:]
        first_line_end = suffix.find("\n") + 1 or len(suffix)
        tail = tail[: tail.rfind("\n") + 1] if len(tail) > first_line_end else suffix[:first_line_end]
        if (head, tail) == (kept_prefix, kept_suffix):
            raise UserError(
                f"the prompt needs {len(prompt)} tokens even with only the cursor's line, but {budget} fit: "
                "lower --max-new-tokens or raise --context-tokens"
            )
        kept_prefix, kept_suffix = head, tail
        prompt = completer.prompt_ids(kept_prefix, kept_suffix, path, language, spm)
    return prompt, kept_prefix, kept_suffix
