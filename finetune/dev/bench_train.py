"""Training throughput, measured the same way for the toolkit, the reference configuration and plain TRL.

`python -m finetune.dev.bench train RECIPE [key=value ...]` runs the recipe for warm-up + measured optimizer steps and
prints real tokens/s (padding excluded), the padding fraction, step time, peak memory (GPU allocator, or process
RSS on CPU) and, on a GPU with a known peak, the model FLOP utilisation. `compare` runs three configurations on the
same data and model, each in its own process so peak memory is its own, and prints the ratios:

- `toolkit`: the recipe as written (padding-free packing, the device's attention kernel, Liger when installed);
- `reference`: the reference aiXcoder script's set-up: QLoRA r=8 on all linear layers, no packing, the model's
  default attention, paged 8-bit AdamW, sequence length 1024;
- `trl`: plain TRL `SFTTrainer` with its own defaults on the same tokenized samples, model and adapter.

MFU follows the PaLM paper's model-FLOPs definition: per token 6N (full fine-tuning) or 4N (adapters: no weight
gradients for the frozen matrices) for the N non-embedding parameters, plus 12 * layers * hidden * T for attention
with T the mean document length; activation recomputation is not counted.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from transformers import TrainerCallback

from finetune.io import write_json_atomic
from finetune.training.collate import TokenCounter

# Dense bf16 tensor-core peaks (TFLOP/s) from the vendors' data sheets, matched against the device name.
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0, "A10": 125.0}

# The reference aiXcoder script as it runs: QLoRA r=8 (PEFT's default alpha 8, no dropout) on all linear layers, no
# packing, paged 8-bit AdamW, 1024 tokens, TrainingArguments' default of no gradient checkpointing, and the fp32
# upcast that the SFTTrainer of its day applied to 4-bit models. Batch shape and data stay the recipe's: same job.
REFERENCE_OVERRIDES = [
    "method=qlora",
    "adapter.r=8",
    "adapter.alpha=8",
    "adapter.dropout=0",
    "adapter.target_modules=all-linear",
    "quantization.fp32_norms=true",
    "data.packing=false",
    "data.max_length=1024",
    "model.attn_implementation=sdpa",
    "training.optim=paged_adamw_8bit",
    "training.gradient_checkpointing=false",
    "training.liger=false",
]


@dataclass
class BenchResult:
    """What one configuration measured (JSON-able)."""

    config: str
    device: str
    method: str
    steps: int
    tokens_per_second: float
    padding_fraction: float
    step_seconds: float
    peak_memory_gb: float
    memory_kind: str
    mean_document_tokens: float
    mfu: float | None
    params: int
    extra: dict = field(default_factory=dict)

    def line(self) -> str:
        mfu = f", MFU {self.mfu:.1%}" if self.mfu is not None else ""
        return (
            f"{self.config:<10} {self.tokens_per_second:10,.0f} tokens/s, padding {self.padding_fraction:5.1%}, "
            f"step {self.step_seconds * 1000:8.1f} ms, peak {self.memory_kind} {self.peak_memory_gb:6.2f} GB{mfu}"
        )


class StepMeter(TrainerCallback):
    """Times each optimizer step and counts the tokens its forward passes saw (real ones and padded positions)."""

    def __init__(self) -> None:
        self.steps: list[tuple[float, int, int]] = []  # (seconds, real tokens, all positions)
        self.tokens = TokenCounter()
        self._counted = (0, 0)  # the counter's (real, total) at the end of the previous step
        self._start = 0.0
        self.ends: list[float] = []  # when each step ended: end to end includes what happens between steps

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.tokens.attach(model)
        self.ends = [time.perf_counter()]

    def on_step_begin(self, args, state, control, **kwargs):
        _sync()
        self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        _sync()
        real, total = self.tokens.real, self.tokens.total
        now = time.perf_counter()
        self.steps.append((now - self._start, real - self._counted[0], total - self._counted[1]))
        self.ends.append(now)
        self._counted = (real, total)

    def on_train_end(self, args, state, control, **kwargs):
        self.tokens.detach()


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _device_name() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"CPU ({os.cpu_count()} cores, {torch.get_num_threads()} threads)"


def _peak_tflops(device: str) -> float | None:
    return next((peak for name, peak in PEAK_BF16_TFLOPS.items() if name in device), None)


def _peak_memory() -> tuple[float, str]:
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**30, "GPU"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, "RSS"  # Linux reports KiB


def model_shape(model) -> tuple[int, int, int]:
    """(non-embedding parameters, layers, hidden size) of the base model under any adapter/quantization wrapper."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = base.config
    embedding = base.get_input_embeddings()
    total = 0
    for param in base.parameters():
        # 4-bit weights are packed two per byte: count what they stand for
        total += param.numel() * (2 if param.dtype == torch.uint8 else 1)
    non_embedding = total - (embedding.weight.numel() if embedding is not None else 0)
    return non_embedding, config.num_hidden_layers, config.hidden_size


def summarize(
    config: str, method: str, meter: StepMeter, warmup: int, model, extra: dict | None = None
) -> BenchResult:
    """Averages over the steps after `warmup` (compilation, allocator growth and caches settle in those)."""
    measured = meter.steps[warmup:] or meter.steps
    seconds = sum(s for s, _, _ in measured)
    real = sum(r for _, r, _ in measured)
    total = sum(t for _, _, t in measured)
    params, layers, hidden = model_shape(model)
    mean_doc = (sum(r for _, r, _ in meter.steps) / meter.tokens.documents) if meter.tokens.documents else 0.0
    tokens_per_second = real / seconds if seconds else 0.0
    device = _device_name()
    peak = _peak_tflops(device)
    mfu = None
    if peak and torch.cuda.is_available():
        per_token = (6 if method == "full" else 4) * params + 12 * layers * hidden * mean_doc
        mfu = tokens_per_second * per_token / (peak * 1e12)
    memory, kind = _peak_memory()
    extra = dict(extra or {})
    first = min(warmup, len(meter.steps) - len(measured))  # the steps left out
    if len(meter.ends) > first + 1:  # seconds from the end of the warm-up to the end of the last step
        wall = meter.ends[-1] - meter.ends[first]
        extra["end_to_end_tokens_per_second"] = real / wall if wall > 0 else 0.0
    return BenchResult(
        config=config,
        device=device,
        method=method,
        steps=len(measured),
        tokens_per_second=tokens_per_second,
        padding_fraction=1 - real / total if total else 0.0,
        step_seconds=statistics.mean(s for s, _, _ in measured) if measured else 0.0,
        peak_memory_gb=memory,
        memory_kind=kind,
        mean_document_tokens=mean_doc,
        mfu=mfu,
        params=params,
        extra=extra,
    )


def _bench_overrides(output_dir: str, steps: int, warmup: int) -> list[str]:
    return [
        f"output_dir={output_dir}",
        "overwrite=true",
        "resume=false",
        f"training.max_steps={warmup + steps}",
        f"training.save_steps={warmup + steps + 1}",
        f"training.logging_steps={warmup + steps}",
        "training.report_to=none",
        "data.eval_split=0",
    ]


def bench_toolkit(recipe_path: str, overrides: list[str], steps: int, warmup: int, config: str) -> BenchResult:
    """The toolkit's own training path (`finetune train`), timed step by step."""
    from finetune.config.load import load_recipe
    from finetune.training.trainer import run

    _reset_peak()
    with tempfile.TemporaryDirectory(prefix="finetune-bench-") as tmp:
        recipe = load_recipe(recipe_path, [*overrides, *_bench_overrides(f"{tmp}/run", steps, warmup)])
        meter = StepMeter()
        summary = run(recipe, callbacks=[meter])
        return summarize(config, recipe.method, meter, warmup, summary.trainer.model)


def bench_plain_trl(recipe_path: str, overrides: list[str], steps: int, warmup: int) -> BenchResult:
    """Plain TRL: the same tokenized samples, model and adapter, with `SFTConfig`'s defaults for everything else.

    Only what must match is set: batch shape, steps, learning rate, sequence length, and on CPU the precision
    (TRL's default bf16 would otherwise make the comparison about autocast on a CPU, not about the trainer).
    """
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from finetune.config.load import load_recipe
    from finetune.data.cache import prepare
    from finetune.training.launch import LaunchPlan
    from finetune.training.model import load_model, lora_config
    from finetune.training.plan import plan_training

    _reset_peak()
    with tempfile.TemporaryDirectory(prefix="finetune-bench-") as tmp:
        recipe = load_recipe(
            recipe_path, [*overrides, *_bench_overrides(f"{tmp}/run", steps, warmup), "model.attn_implementation=sdpa"]
        )
        plan = plan_training(recipe, LaunchPlan())
        runtime = plan.runtime
        prepared = prepare(recipe)
        tokenizer, data = prepared.setup.tokenizer, prepared.data
        model = load_model(recipe, plan, vocab_size=len(tokenizer))
        t = recipe.training
        args = SFTConfig(
            output_dir=f"{tmp}/run",
            per_device_train_batch_size=t.batch_size,
            gradient_accumulation_steps=t.gradient_accumulation_steps,
            learning_rate=t.learning_rate,
            max_steps=warmup + steps,
            max_length=recipe.data.max_length,
            save_strategy="no",
            report_to=[],
            logging_steps=warmup + steps,
            seed=recipe.seed,
            **({} if runtime.use_cuda else {"use_cpu": True, "bf16": False}),
        )
        new_token_ids = prepared.setup.new_token_ids
        meter = StepMeter()
        trainer = SFTTrainer(
            model=model,
            args=args,
            train_dataset=Dataset.from_dict({"input_ids": data.train["input_ids"]}),
            processing_class=tokenizer,
            peft_config=lora_config(recipe, new_token_ids),
            callbacks=[meter],
        )
        trainer.train()
        return summarize("trl", recipe.method, meter, warmup, trainer.model)


def _reset_peak() -> None:
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


def timing_args(steps: int, warmup: int, out: Path) -> list[str]:
    """The options every child benchmark (toolkit, TRL, axolotl) takes: steps measured, warm-up, where the JSON goes."""
    return ["--steps", str(steps), "--warmup", str(warmup), "--json", str(out)]


def bench_command(kind: str, recipe: str, overrides: list[str], steps: int, warmup: int, out: Path) -> list[str]:
    """The command line that runs one `bench train`/`bench trl` job in a fresh process and writes its JSON to `out`."""
    return [sys.executable, "-m", "finetune.dev.bench", kind, recipe, *overrides, *timing_args(steps, warmup, out)]


def _run_child(kind: str, recipe: str, overrides: list[str], steps: int, warmup: int) -> BenchResult:
    """One configuration in a fresh process, so each peak memory is its own."""
    with tempfile.TemporaryDirectory(prefix="finetune-bench-") as tmp:
        out = Path(tmp) / "result.json"
        command = bench_command(kind, recipe, overrides, steps, warmup, out)
        completed = subprocess.run(command, check=False)
        if completed.returncode != 0 or not out.is_file():
            raise RuntimeError(f"{kind} benchmark failed (exit status {completed.returncode}): {' '.join(command)}")
        return BenchResult(**json.loads(out.read_text()))


def compare(recipe: str, overrides: list[str], steps: int, warmup: int) -> list[BenchResult]:
    """Toolkit vs reference configuration vs plain TRL on the same data and model; prints the table and ratios."""
    results = [
        _run_child("train", recipe, overrides, steps, warmup),
        _run_child("train", recipe, [*overrides, *REFERENCE_OVERRIDES, "--config-name", "reference"], steps, warmup),
        _run_child("trl", recipe, overrides, steps, warmup),
    ]
    print(f"\nfinetune.dev.bench compare: {recipe} {' '.join(overrides)} on {results[0].device}, {steps} steps measured")
    for result in results:
        print(result.line())
    ours = results[0]
    for other in results[1:]:
        speed = ours.tokens_per_second / other.tokens_per_second if other.tokens_per_second else float("inf")
        memory = ours.peak_memory_gb / other.peak_memory_gb if other.peak_memory_gb else float("nan")
        print(f"toolkit vs {other.config:<9}: {speed:5.2f}x tokens/s, {memory:5.2f}x peak memory")
    return results


def write_result(result: BenchResult, path: str | None) -> None:
    print(result.line())
    if path:  # atomically, and into its folder even when no earlier GPU-check step has made it yet
        write_json_atomic(Path(path), asdict(result))
