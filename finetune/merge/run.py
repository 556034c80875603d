"""The work behind `finetune merge`: plan from the adapters' files, load, merge or combine, save, verify."""

from __future__ import annotations

import json
import resource
import shutil
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from finetune.errors import UserError
from finetune.io import AtomicDir, directory_bytes
from finetune.merge.load import (
    AdapterInfo,
    BaseCheckpoint,
    BaseMode,
    Combination,
    attach_adapters,
    check_combination,
    check_fits,
    load_base,
    parse_dtype,
    read_adapter,
    resolve_base,
)
from finetune.merge.options import DENSITY_METHODS, MergeOptions
from finetune.merge.verify import RELATIVE_TOLERANCE, VerifyResult, prompt_ids, verify

_TOKENIZER_FILES = ("chat_template.jinja", "chat_template.json")


# ------------------------------------------------------------------------------------------------ the plan


@dataclass
class MergePlan:
    """Everything decided from the arguments and the adapters' files before any weights are loaded."""

    adapters: list[AdapterInfo]
    base: BaseCheckpoint
    out: AtomicDir
    dtype: torch.dtype
    device: str
    merge_mode: BaseMode  # base the adapters are merged into / applied to
    reference_mode: BaseMode  # base the adapters were trained on (for --verify)
    combination: Combination | None
    into_base: bool
    vocab_size: int
    max_shard_size: str
    notes: list[str] = field(default_factory=list)

    @property
    def writes_model(self) -> bool:
        return self.combination is None or self.into_base

    def describe_base(self, mode: BaseMode) -> str:
        return {"full": "unquantized base", "4bit": "4-bit base", "dequantized": "dequantized 4-bit base"}[mode]


def _parse_weights(text: str | None, count: int) -> tuple[float, ...]:
    if text is None:
        return tuple(1.0 / count for _ in range(count))
    try:
        weights = tuple(float(w) for w in text.split(","))
    except ValueError:
        raise UserError(
            f"--weights {text!r} is not a comma-separated list of numbers: write e.g. 0.5,0.3,0.2"
        ) from None
    if len(weights) != count:
        raise UserError(f"--weights has {len(weights)} values for {count} adapters: give one weight per adapter")
    return weights


def _combination(options: MergeOptions, adapters: list[AdapterInfo]) -> Combination | None:
    if len(adapters) == 1:
        given = [name for name in ("method", "weights", "density") if getattr(options, name) is not None]
        if given:
            raise UserError(f"--{given[0]} combines several adapters: pass two or more ADAPTER_DIRs, or drop it")
        return None
    method = options.method or "cat"
    if options.density is not None and method not in DENSITY_METHODS:
        raise UserError(f"--density applies to {', '.join(DENSITY_METHODS)}, not --method {method}: drop --density")
    if options.density is not None and not 0 < options.density <= 1:
        raise UserError(f"--density {options.density} must be in (0, 1]: it is the fraction of entries kept")
    density = (options.density if options.density is not None else 0.5) if method in DENSITY_METHODS else None
    check_combination(adapters, method)
    return Combination(method, _parse_weights(options.weights, len(adapters)), density, options.seed)


def _base_modes(options: MergeOptions, adapters: list[AdapterInfo], notes: list[str]) -> tuple[BaseMode, BaseMode]:
    """(merge mode, reference mode): QLoRA adapters were trained on the 4-bit base."""
    qlora = [a.method == "qlora" for a in adapters]
    if all(qlora):
        return ("full" if options.qlora_base == "original" else "dequantized"), "4bit"
    if any(qlora):
        notes.append("QLoRA and non-QLoRA adapters mixed: merging into the unquantized base")
    elif options.qlora_base is not None:
        notes.append("--qlora-base ignored: no adapter was trained with method=qlora (pass --qlora if it was)")
    return "full", "full"


def _vocab_size(adapters: list[AdapterInfo]) -> int:
    """Rows the embeddings need: the saved tokenizer may carry tokens added in training (FIM tokens)."""
    if not adapters[0].has_tokenizer():
        return 0
    from transformers import AutoTokenizer

    return len(AutoTokenizer.from_pretrained(adapters[0].path))


def make_plan(options: MergeOptions) -> MergePlan:
    adapters = [read_adapter(path, assume_qlora=options.qlora) for path in options.adapters]
    out = AtomicDir(options.out, force=options.force)
    out.check([a.path for a in adapters])
    notes: list[str] = []
    combination = _combination(options, adapters)
    if options.device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda but no CUDA GPU is visible: use --device cpu")
    base = resolve_base(adapters, options.base)
    if options.base is not None and adapters[0].base_name not in (None, options.base):
        notes.append(f"--base {options.base} replaces the base the adapter names ({adapters[0].base_name})")
    vocab_size = _vocab_size(adapters)
    for adapter in adapters:
        check_fits(adapter, base, vocab_size)
    merge_mode, reference_mode = _base_modes(options, adapters, notes)
    return MergePlan(
        adapters=adapters,
        base=base,
        out=out,
        dtype=parse_dtype(options.dtype, base),
        device=options.device,
        merge_mode=merge_mode,
        reference_mode=reference_mode,
        combination=combination,
        into_base=options.into_base or combination is None,
        vocab_size=vocab_size,
        max_shard_size=options.max_shard_size,
        notes=notes,
    )


# ------------------------------------------------------------------------------------------------ doing it


class _Steps:
    """Shows a spinner while a step runs and a line with its duration when it ends."""

    def __init__(self, console):
        self.console = console

    @contextmanager
    def step(self, what: str):
        start = time.perf_counter()
        with self.console.status(f"{what} ..."):
            yield
        self.console.print(f"[green]✓[/green] {what} ({time.perf_counter() - start:.1f}s)")


def write_output(plan: MergePlan, steps: _Steps, directory: Path) -> None:
    """Load, apply, merge (or combine) and save into `directory`."""
    a0 = plan.adapters[0]
    with steps.step(f"load {plan.base.name} ({plan.describe_base(plan.merge_mode)}, {_dtype_name(plan.dtype)})"):
        model = load_base(plan.base, a0, plan.merge_mode, plan.dtype, plan.device, plan.vocab_size)
    what = f"combine {len(plan.adapters)} adapters ({plan.combination.method})" if plan.combination else "apply adapter"
    with steps.step(what):
        peft_model = attach_adapters(model, plan.adapters, plan.combination)
    if plan.writes_model:
        with steps.step("merge into the base"):
            merged = peft_model.merge_and_unload(progressbar=False, safe_merge=True)
            merged.to(plan.dtype)
        with steps.step(f"save model (safetensors, shards of at most {plan.max_shard_size})"):
            merged.save_pretrained(directory, max_shard_size=plan.max_shard_size)
            merged.generation_config.save_pretrained(directory)
            _save_tokenizer(plan, directory)
        _check_plain_config(directory)
    else:
        with steps.step("save combined adapter"):
            peft_model.save_pretrained(directory)
            _save_tokenizer(plan, directory)
            methods = {a.method for a in plan.adapters}
            if len(methods) == 1 and (a0.path / "recipe.yaml").is_file():
                shutil.copy2(a0.path / "recipe.yaml", directory / "recipe.yaml")  # keeps QLoRA detection


def _save_tokenizer(plan: MergePlan, directory: Path) -> None:
    """The adapter's tokenizer (it may carry added FIM tokens and a chat template), else the base's."""
    from transformers import AutoTokenizer

    source = plan.adapters[0].path if plan.adapters[0].has_tokenizer() else plan.base.path
    AutoTokenizer.from_pretrained(source).save_pretrained(directory)
    for name in _TOKENIZER_FILES:
        if (source / name).is_file() and not (directory / name).is_file():
            shutil.copy2(source / name, directory / name)


def _check_plain_config(directory: Path) -> None:
    """The merged model must load without PEFT or bitsandbytes: no quantization settings may survive."""
    config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    if "quantization_config" in config:
        del config["quantization_config"]
        (directory / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")


def _dtype_name(dtype: torch.dtype) -> str:
    return {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}.get(dtype, str(dtype))


def run_verify(plan: MergePlan, directory: Path, tolerance: float | None) -> VerifyResult:
    """Reference: base (as trained) + adapter(s), PEFT-applied and unmerged; result: what was written."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    a0, fp32 = plan.adapters[0], torch.float32

    def reference():
        base = load_base(plan.base, a0, plan.reference_mode, fp32, plan.device, plan.vocab_size)
        return attach_adapters(base, plan.adapters, plan.combination)

    def result():
        if plan.writes_model:
            return AutoModelForCausalLM.from_pretrained(directory, dtype=fp32, device_map={"": plan.device}).eval()
        from peft import PeftModel

        base = load_base(plan.base, a0, plan.reference_mode, fp32, plan.device, plan.vocab_size)
        return PeftModel.from_pretrained(base, str(directory)).eval()

    what = "weighted adapter" if plan.combination else "adapter"
    name = f"{plan.describe_base(plan.reference_mode)} + {what} (PEFT, unmerged)"
    tokenizer = AutoTokenizer.from_pretrained(directory)
    relative = RELATIVE_TOLERANCE.get(plan.dtype, 1e-2) if plan.writes_model else RELATIVE_TOLERANCE[fp32]
    return verify(reference, result, prompt_ids(tokenizer), tolerance, relative, name)


def peak_rss_bytes() -> int:
    """Peak resident memory of this process (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def _record(plan: MergePlan, seconds: float, check: VerifyResult | None) -> dict[str, Any]:
    return {
        "adapters": [{"path": str(a.path.resolve()), "kind": a.kind, "r": a.rank} for a in plan.adapters],
        "base": plan.base.name,
        "base_path": str(plan.base.path),
        "merged_into": plan.describe_base(plan.merge_mode) if plan.writes_model else None,
        "output": "model" if plan.writes_model else "adapter",
        "combination": plan.combination.__dict__ if plan.combination else None,
        "dtype": _dtype_name(plan.dtype),
        "device": plan.device,
        "seconds": round(seconds, 2),
        "peak_rss_bytes": peak_rss_bytes(),
        "verify": check.to_dict() if check else None,
        "notes": plan.notes + plan.out.swept,
    }


def run_merge(options: MergeOptions) -> int:
    """Plan, write atomically, verify if asked; exit status 1 when verification fails."""
    from rich.console import Console

    start = time.perf_counter()
    console = Console(highlight=False)
    plan = make_plan(options)
    for note in plan.notes:
        console.print(f"[yellow]note:[/yellow] {note}")
    steps = _Steps(console)
    directory = plan.out.begin()
    for line in plan.out.swept:
        console.print(f"[yellow]note:[/yellow] {line}")
    try:
        write_output(plan, steps, directory)
        (directory / "merge.json").write_text(json.dumps(_record(plan, 0.0, None), indent=2) + "\n")
        final = plan.out.commit()
    except BaseException:
        plan.out.abort()
        raise
    check = None
    if options.verify:
        with steps.step("verify logits"):
            check = run_verify(plan, final, options.tolerance)
    seconds = time.perf_counter() - start
    (final / "merge.json").write_text(json.dumps(_record(plan, seconds, check), indent=2) + "\n")
    _print_summary(console, plan, final, check, seconds)
    return 0 if check is None or check.passed else 1


def _print_summary(console, plan: MergePlan, final: Path, check: VerifyResult | None, seconds: float) -> None:
    console.rule("[bold]finetune merge: done")
    kinds = ", ".join(sorted({a.kind for a in plan.adapters}))
    if plan.combination is not None:
        c = plan.combination
        density = f", density {c.density}" if c.density is not None else ""
        console.print(f"combined {len(plan.adapters)} {kinds} adapters: {c.method}, weights {list(c.weights)}{density}")
    if plan.writes_model:
        shards = len(list(final.glob("*.safetensors")))
        console.print(
            f"merged {kinds} into {plan.base.name} ({plan.describe_base(plan.merge_mode)}): "
            f"{_dtype_name(plan.dtype)}, {shards} safetensors shard(s), {directory_bytes(final) / 2**20:.1f} MiB"
        )
    else:
        console.print(f"wrote one adapter for {plan.base.name} ({directory_bytes(final) / 2**20:.1f} MiB)")
    if check is not None:
        console.print(check.line())
        if not check.passed:
            why = (
                "expected with --qlora-base original: the adapter was trained on the 4-bit weights"
                if plan.merge_mode != plan.reference_mode and plan.reference_mode == "4bit"
                else "the output does not reproduce base + adapter; see merge.json"
            )
            console.print(f"[red]verification failed[/red] ({why}); exit status 1")
    console.print(f"peak RSS {peak_rss_bytes() / 2**30:.2f} GiB; {seconds:.1f}s")
    console.print(f"output in {final} (merge.json records how it was made)")
