"""Fill in the middle with a base model or a fine-tuned one: loading, prompts, batched generation.

The prompt is built by the same `SampleEncoder.infill_prompt_ids` that laid out the training samples, so a
model is asked exactly what it was trained on (family header, PSM/SPM order, no spurious leading `▁`).
Generation is batched with left padding and the KV cache, and stops at EOS or any of the family's FIM tokens.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from finetune.cli import args as types
from finetune.data.tokenize.families import SampleEncoder, detect_family, get_family
from finetune.errors import UserError

if TYPE_CHECKING:
    import torch



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


def _read_yaml(path: Path) -> dict:
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


def run_recipe(directory: Path | None) -> dict:
    """The resolved recipe a training run saved in `directory` (empty when there is none)."""
    if directory is None or not (directory / "recipe.yaml").is_file():
        return {}
    return _read_yaml(directory / "recipe.yaml")


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
    from finetune.runtime import resolve_dtype
    from finetune.training.model import keep_cpu_4bit_in_full_precision

    run_dir = Path(adapter) if adapter else None
    if run_dir is not None and not run_dir.is_dir():
        raise UserError(f"adapter {adapter} not found: pass the output_dir of a training run")
    recipe = run_recipe(run_dir) or run_recipe(Path(model) if model else None)
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
    return path if (path / "split.json").is_file() else None


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
    """One completion: its ids (stop token excluded), text, and whether a stop token ended it."""

    ids: list[int]
    text: str
    stopped: bool


@dataclass
class GenerationStats:
    prompts: int = 0
    new_tokens: int = 0
    seconds: float = 0.0
    batches: int = 0
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
) -> tuple[list[Generation | None], GenerationStats]:
    """Complete every prompt, `batch_size` at a time (similar lengths together, left-padded, KV cache).

    A prompt that leaves no room for new tokens within the model's positions gets None (listed in
    `stats.skipped`). `on_batch(n)` is called after each batch with the number of prompts done.
    """
    import torch

    if batch_size < 1:
        raise UserError(f"batch size must be at least 1, got {batch_size}")
    model, encoder = completer.model, completer.encoder
    stop_ids = encoder.stop_token_ids
    pad_id = completer.tokenizer.pad_token_id if completer.tokenizer.pad_token_id is not None else encoder.eos_id
    limit = completer.max_positions
    stats = GenerationStats(prompts=len(prompts))
    results: list[Generation | None] = [None] * len(prompts)
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    if limit is not None:
        stats.skipped = [i for i in order if len(prompts[i]) >= limit]
        order = [i for i in order if len(prompts[i]) < limit]
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
            began = time.perf_counter()
            with torch.inference_mode():
                out = model.generate(
                    input_ids=input_ids,
                    attention_mask=mask,
                    generation_config=sampling.config(stop_ids, pad_id, room),
                )
            stats.seconds += time.perf_counter() - began
            stats.batches += 1
            for row, index in enumerate(chunk):
                new = out[row, input_ids.shape[1] :].tolist()
                results[index], used = _finish(completer, new, set(stop_ids))
                stats.new_tokens += used
            if on_batch is not None:
                on_batch(len(chunk))
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


# -------------------------------------------------------------------------------------------------------- CLI


def split_at_cursor(text: str, cursor: str) -> tuple[str, str]:
    """Split `text` at `LINE:COL` (both 1-based, in characters; COL may be one past the line's end)."""
    try:
        line_s, col_s = cursor.split(":")
        line, col = int(line_s), int(col_s)
    except ValueError:
        raise UserError(f"--cursor {cursor!r} is not LINE:COL: write it like 12:5 (1-based line and column)") from None
    lines = text.split("\n")
    if not 1 <= line <= len(lines):
        raise UserError(f"--cursor {cursor}: line {line} is outside the file (it has {len(lines)} lines)")
    if not 1 <= col <= len(lines[line - 1]) + 1:
        raise UserError(
            f"--cursor {cursor}: column {col} is outside line {line} (columns 1..{len(lines[line - 1]) + 1})"
        )
    offset = sum(len(part) + 1 for part in lines[: line - 1]) + col - 1
    return text[:offset], text[offset:]


def _read(path: str, what: str) -> str:
    if path == "-":
        return sys.stdin.read()
    file = Path(path)
    if not file.is_file():
        raise UserError(f"{what} {path} not found: check the path")
    try:
        return file.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{what} {path} is not UTF-8 text") from None


def _inputs(args: argparse.Namespace) -> tuple[str, str, str]:
    """prefix, suffix and the path for the header, from --file/--cursor, --prefix-file/--suffix-file, or stdin."""
    if args.file and (args.prefix_file or args.suffix_file):
        raise UserError("give either --file (with --cursor) or --prefix-file/--suffix-file, not both")
    if args.prefix_file or args.suffix_file:
        prefix = _read(args.prefix_file, "prefix file") if args.prefix_file else ""
        suffix = _read(args.suffix_file, "suffix file") if args.suffix_file else ""
        return prefix, suffix, args.path or ""
    if args.file is None and sys.stdin.isatty():
        raise UserError("nothing to complete: pass --file PATH --cursor LINE:COL, --prefix-file, or pipe the file in")
    text = _read(args.file or "-", "file")
    if not text.strip():
        raise UserError(f"nothing to complete: {args.file or 'standard input'} is empty; give code before the cursor")
    if args.cursor is None:
        prefix, suffix = text, ""
    else:
        prefix, suffix = split_at_cursor(text, args.cursor)
    path = args.path if args.path is not None else (args.file if args.file not in (None, "-") else "")
    return prefix, suffix, path


def cmd_complete(args: argparse.Namespace) -> int:
    from finetune.data.ingest.languages import detect_language

    prefix, suffix, path = _inputs(args)
    language = args.language or (detect_language(path, (prefix + suffix).split("\n", 1)[0]) if path else None) or ""
    completer = load_completer(args.model, args.adapter, family=args.family, dtype=args.dtype)
    spm = {"spm": True, "psm": False, "auto": None}[args.order]
    budget = args.context_tokens or (
        completer.max_positions - args.max_new_tokens if completer.max_positions is not None else None
    )
    if budget is not None and budget < 16:
        raise UserError(f"no room for a prompt: lower --max-new-tokens (the model takes {completer.max_positions})")
    prompt, kept_prefix, kept_suffix = fit_context(completer, prefix, suffix, path, language, spm, budget)
    if (kept_prefix, kept_suffix) != (prefix, suffix):
        print(
            f"context trimmed to fit {budget} tokens: {kept_prefix.count(chr(10))} of {prefix.count(chr(10))} lines "
            f"before the cursor, {kept_suffix.count(chr(10))} of {suffix.count(chr(10))} after",
            file=sys.stderr,
        )
    sampling = Sampling(args.max_new_tokens, args.temperature, args.top_p, args.top_k, args.seed)
    results, stats = generate(completer, [prompt], sampling)
    result = results[0]
    assert result is not None
    middle = result.text
    if args.truncate:
        from finetune.evaluate.truncate import truncate

        middle = truncate(middle, language, args.truncate, prefix)
    sys.stdout.write(middle + ("\n" if middle and not middle.endswith("\n") else ""))
    ended = "a stop token" if result.stopped else f"--max-new-tokens {args.max_new_tokens}"
    print(
        f"[{completer.family}, {'SPM' if (spm if spm is not None else completer.encoder.family.default_spm) else 'PSM'}] "
        f"{len(prompt)} prompt tokens, {len(result.ids)} new tokens in {stats.seconds:.2f}s "
        f"({stats.tokens_per_second:.1f} tokens/s), ended by {ended}",
        file=sys.stderr,
    )
    return 0


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


def add_model_arguments(parser: argparse.ArgumentParser, *, required: bool = True) -> None:
    parser.add_argument("--model", required=required, help="base model directory (or a full fine-tune's output_dir)")
    parser.add_argument("--adapter", type=types.existing_dir, help="a training run's output_dir holding a LoRA/DoRA adapter or a full model")
    parser.add_argument("--family", default="auto", help="prompt family (default: the run's recipe, else detected)")
    parser.add_argument("--dtype", choices=["auto", "bf16", "fp16", "fp32"], default="auto")


def add_sampling_arguments(parser: argparse.ArgumentParser, max_new_tokens: int) -> None:
    parser.add_argument("--max-new-tokens", type=types.positive_int, default=max_new_tokens, help="most tokens generated")
    parser.add_argument("--temperature", type=types.nonnegative_float, default=0.0, help="0 = greedy (default); > 0 samples")
    parser.add_argument("--top-p", type=types.open_fraction, default=1.0, help="nucleus sampling mass (with --temperature)")
    parser.add_argument("--top-k", type=types.nonnegative_int, default=0, help="sample among the k likeliest tokens (0 = all)")
    parser.add_argument("--seed", type=types.seed, default=None, help="seed for sampling")


def add_complete_parser(sub) -> None:
    """Register `finetune complete`."""
    from finetune.evaluate.truncate import MODES

    p = sub.add_parser("complete", help="fill in the middle at a cursor with the prompt format the model trained on")
    add_model_arguments(p, required=False)
    p.add_argument("--file", type=types.existing_file, help="source file ('-' = stdin); without --cursor the cursor is at its end")
    p.add_argument("--cursor", metavar="LINE:COL", help="where to complete, 1-based line and column")
    p.add_argument("--prefix-file", type=types.existing_file, help="text before the cursor ('-' = stdin)")
    p.add_argument("--suffix-file", type=types.existing_file, help="text after the cursor")
    p.add_argument("--path", help="file path for the family's header (default: --file)")
    p.add_argument("--language", help="language id for the header and --truncate (default: from the path)")
    p.add_argument("--order", choices=["auto", "psm", "spm"], default="auto", help="FIM order (auto: the family's)")
    p.add_argument("--truncate", choices=[m for m in MODES if m != "none"], help="cut the middle after one unit")
    p.add_argument(
        "--context-tokens",
        type=types.positive_int,
        help="prompt budget; longer prompts keep the lines nearest the cursor (default: the model's positions "
        "minus --max-new-tokens)",
    )
    add_sampling_arguments(p, max_new_tokens=128)
    p.set_defaults(func=cmd_complete)
