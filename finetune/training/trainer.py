"""Build and run the trainer for a recipe: TRL's SFTTrainer (loss only: `sft_trainer.py`) on pre-tokenized samples,
under Accelerate.

Every process prepares the same data (deterministic for the seed) and trains its shard; only the main process
touches the output directory, which is renamed into place when the run is complete.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from finetune.config.load import recipe_to_yaml
from finetune.config.schema import Recipe
from finetune.data.cache import prepare
from finetune.data.pipeline import PreparedData
from finetune.errors import UserError
from finetune.run import RunDir, last_checkpoint, write_run_records
from finetune.runtime import Runtime, keep_freed_memory
from finetune.training import varlen_sdpa
from finetune.training.callbacks import MetricsCallback, read_metrics
from finetune.training.checkpoints import AlreadyFinished, CompletionMarker, StopWhenFinished, checkpoint_step
from finetune.training.collate import group_rows_by_length, packed_rows_collator, packing_layout
from finetune.training.console import ConsoleLines
from finetune.training.consolidate import save_final_model
from finetune.training.launch import LaunchPlan
from finetune.training.model import load_model, lora_config
from finetune.training.plan import TrainPlan, plan_training


@dataclass
class RunSummary:
    output_dir: Path
    steps: int
    first_loss: float | None
    last_loss: float | None
    eval_loss: float | None
    tokens_per_second: float | None
    train_seconds: float
    method: str
    world_size: int = 1
    peak_gpu_memory_gib: float | None = None  # this process's peak allocated CUDA memory (None on CPU)
    held_out_fim: dict[str, Any] | None = None  # first and last scores of eval.fim_items (evaluate/callback.py)
    data: dict[str, Any] = field(default_factory=dict)
    trainer: Any = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        fields = {k: v for k, v in self.__dict__.items() if k != "trainer"}
        return {**fields, "output_dir": str(self.output_dir)}

    def lines(self) -> list[str]:
        def fmt(value: float | None) -> str:
            return "n/a" if value is None else f"{value:.4f}"

        tps = "n/a" if self.tokens_per_second is None else f"{self.tokens_per_second:,.0f}"
        return [
            f"trained ({self.method}) for {self.steps} steps in {self.train_seconds:.1f}s",
            f"train loss {fmt(self.first_loss)} -> {fmt(self.last_loss)}; eval loss {fmt(self.eval_loss)}",
            *([fim_line(self.held_out_fim)] if self.held_out_fim else []),
            f"throughput {tps} tokens/s",
            f"outputs in {self.output_dir}",
        ]


def fim_line(fim: dict[str, Any]) -> str:
    """Held-out completion scores of the first and last evaluation (`RunSummary.held_out_fim`), in percent."""
    (em0, em1), (es0, es1) = fim["exact_match"], fim["edit_similarity"]
    line = f"held-out FIM: exact match {100 * em0:.1f}% -> {100 * em1:.1f}%, edit similarity {100 * es0:.1f}% -> {100 * es1:.1f}%"
    if "middle_loss" in fim:
        line += ", middle loss {:.3f} -> {:.3f}".format(*fim["middle_loss"])
    return line


def training_arguments(recipe: Recipe, plan: TrainPlan, output_dir: Path, has_eval: bool):
    from trl import SFTConfig

    runtime = plan.runtime
    t = recipe.training
    optim = t.optim
    if optim == "auto":
        optim = "paged_adamw_8bit" if recipe.method == "qlora" and runtime.use_cuda else "adamw_torch"
    return SFTConfig(
        output_dir=str(output_dir),
        per_device_train_batch_size=t.batch_size,
        per_device_eval_batch_size=t.batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        learning_rate=t.learning_rate,
        lr_scheduler_type=t.lr_scheduler,
        warmup_steps=t.warmup if t.warmup < 1 else int(t.warmup),
        num_train_epochs=t.epochs,
        max_steps=t.max_steps,
        weight_decay=t.weight_decay,
        max_grad_norm=t.max_grad_norm,
        optim=optim,
        **plan.checkpointing,
        logging_steps=t.logging_steps,
        logging_first_step=True,
        save_steps=t.save_steps,
        save_total_limit=t.save_total_limit,
        eval_strategy="steps" if has_eval and t.eval_steps else "no",
        eval_steps=t.eval_steps,
        report_to=[] if t.report_to == "none" else [t.report_to],
        seed=recipe.seed,
        data_seed=recipe.seed,
        bf16=runtime.bf16,
        fp16=runtime.fp16,
        use_cpu=not runtime.use_cuda,
        dataloader_num_workers=t.dataloader_num_workers,
        use_liger_kernel=plan.liger,
        torch_compile=t.torch_compile,
        max_length=recipe.data.max_length,
        packing=recipe.data.packing,
        packing_strategy="bfd",
        ddp_find_unused_parameters=False,
        disable_tqdm=True,  # ConsoleLines prints one line per logging step instead
    )


def run(recipe: Recipe, console=None, callbacks: list | None = None) -> RunSummary | None:
    """Train as the recipe says; returns the summary on the main process (None on the others).

    Everything that can fail on bad input (output directory, model path, bitsandbytes, data) is checked before
    anything is written. The main process holds the output directory's lock for the whole run; the others never
    touch the output directory, so they need no lock.
    """
    from contextlib import nullcontext

    from accelerate import PartialState

    from finetune.training.launch import check_launch

    launch = check_launch(recipe)  # DeepSpeed/FSDP launch settings against the recipe, before anything loads
    # Without a GPU, accelerate only sets up the process group (gloo) when told to run on CPU.
    state = PartialState(cpu=not torch.cuda.is_available())
    rundir = RunDir(recipe.output_dir)
    with rundir.lock() if state.is_main_process else nullcontext() as lock:
        if lock is not None and lock.note and console is not None:
            console.print(f"[yellow]note:[/yellow] {lock.note}")
        summary = _run_locked(recipe, launch, state, rundir, console, callbacks or [])
    _leave_process_group(state)
    return summary


def _leave_process_group(state) -> None:
    """Every rank waits for the others, then closes the process group: a rank that exits while gloo's threads still
    run can abort ('terminate called without an active exception') and fail the whole launch after a good run."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        state.wait_for_everyone()
        state.destroy_process_group()


def _run_locked(
    recipe: Recipe, launch: LaunchPlan, state, rundir: RunDir, console, callbacks: list
) -> RunSummary | None:
    from transformers import set_seed

    rundir.check(overwrite=recipe.overwrite, resume=recipe.resume)
    state.wait_for_everyone()  # every process has checked before the main one creates anything
    plan = plan_training(recipe, launch)  # every option the run cannot honour fails here, before data or model load
    set_seed(recipe.seed)
    prepared = prepare(recipe, state)
    tokenizer, family, data = prepared.setup.tokenizer, prepared.setup.family, prepared.data
    if state.is_main_process:
        if console is not None:
            _print_data_summary(console, data, family)
            console.print(f"[dim]data:[/dim] {'reused' if prepared.cached else 'cached'} prepared dataset {prepared.entry}")
        _, notes = rundir.prepare(overwrite=recipe.overwrite, resume=recipe.resume)
        for line in notes if console is not None else []:
            console.print(f"[dim]run:[/dim] {line}")
    state.wait_for_everyone()
    try:
        return _train(
            recipe, plan, tokenizer, family, data, rundir, state, prepared.setup.new_token_ids, callbacks, console
        )
    except UserError:
        if state.is_main_process:
            rundir.discard_if_empty()
        raise


def _match_adapter_dtype(model, runtime: Runtime) -> None:
    """TRL keeps QLoRA adapters in bf16; in an fp32 run (CPU) that only loses precision and slows every step."""
    if runtime.dtype != torch.float32:
        return
    for param in model.parameters():
        if param.requires_grad and param.dtype != torch.float32:
            param.data = param.data.float()


def use_varlen_sdpa(recipe: Recipe, model) -> None:
    """Packed training with sdpa attends each document alone (`varlen_sdpa`) when the recipe leaves the kernel to
    the toolkit or asks for it, and the model's attention allows it."""
    choice = recipe.model.attn_implementation
    if not recipe.data.packing or choice not in ("auto", "sdpa_varlen") or model.config._attn_implementation != "sdpa":
        return
    if varlen_sdpa.supports(model.config):
        model.set_attn_implementation(varlen_sdpa.register())
    elif choice == "sdpa_varlen":
        raise UserError(
            "model.attn_implementation=sdpa_varlen needs a model whose every layer attends to the whole sequence; "
            "this one has sliding-window or chunked attention: use sdpa"
        )


def _print_data_summary(console, data: PreparedData, family: str) -> None:
    for line in data.ingest_lines:
        console.print(f"[dim]data:[/dim] {line}")
    console.print(
        f"[dim]data:[/dim] {len(data.train)} train / {len(data.eval) if data.eval else 0} eval samples, "
        f"{data.stats['tokens']:,} train tokens, family {family}"
    )


def _train(
    recipe: Recipe,
    plan: TrainPlan,
    tokenizer,
    family: str,
    data: PreparedData,
    rundir: RunDir,
    state,
    new_token_ids: list[int],
    callbacks: list,
    console=None,
) -> RunSummary | None:
    from transformers import PrinterCallback

    from finetune.evaluate.callback import fim_before_after, fim_eval_callback
    from finetune.training.sft_trainer import LossOnlySFTTrainer

    # the main process has moved incomplete checkpoints aside (RunDir.prepare): the newest one left is complete
    checkpoint = last_checkpoint(rundir.partial) if recipe.resume else None
    # before the model: under ZeRO-3 (zero3_init_flag) the arguments make from_pretrained build it sharded
    runtime = plan.runtime
    if not runtime.use_cuda:  # CPU steps reuse their freed memory instead of faulting it in again
        keep_freed_memory()
    args = training_arguments(recipe, plan, rundir.partial, has_eval=data.eval is not None)
    model = load_model(recipe, plan, vocab_size=len(tokenizer))
    # No peft.prepare_model_for_kbit_training for QLoRA: it upcasts the norms, embeddings and LM head to fp32, which
    # turns every hidden state after a norm into fp32 (slower, more memory); TRL readies the quantized model for
    # gradient checkpointing itself. quantization.fp32_norms restores the norm half of it, for comparisons.
    if recipe.quantization.fp32_norms:
        for name, param in model.named_parameters():
            if "norm" in name:
                param.data = param.data.float()
    if recipe.training.gradient_checkpointing == "selective":
        # TRL applies its policy to the model it is given, which for adapters is the PEFT wrapper; transformers >= 5.24
        # only honours it on the transformers model itself, so put it there first (TRL then sees it and skips).
        from trl.models import enable_selective_activation_checkpointing

        enable_selective_activation_checkpointing(model)
    metrics = MetricsCallback(rundir.partial / "metrics.jsonl")
    if state.is_main_process:
        metrics.resume_at(checkpoint_step(checkpoint) if checkpoint else 0)
    use_varlen_sdpa(recipe, model)
    layout = packing_layout(recipe.data.packing_layout, model.config._attn_implementation or "sdpa", runtime.use_cuda)
    trainer = LossOnlySFTTrainer(
        model=model,
        args=args,
        train_dataset=data.train,
        eval_dataset=data.eval,
        processing_class=tokenizer,
        peft_config=lora_config(recipe, new_token_ids),
    )
    trainer.callback_handler.callbacks.insert(0, metrics)
    trainer.remove_callback(PrinterCallback)  # raw dicts; metrics.jsonl keeps them
    if console is not None:
        trainer.add_callback(ConsoleLines(console))
    trainer.add_callback(CompletionMarker())
    if recipe.data.packing and layout == "rows":  # TRL refuses a custom collator with packing: swap it in after
        trainer.data_collator = packed_rows_collator(tokenizer)
        group_rows_by_length(trainer)
    for callback in callbacks:  # e.g. the benchmark's step timer
        trainer.add_callback(callback)
    fim_eval = fim_eval_callback(recipe, tokenizer, family, data.eval_paths, metrics.path)
    if fim_eval is not None:
        trainer.add_callback(fim_eval)
    if recipe.method == "qlora":
        _match_adapter_dtype(trainer.model, runtime)
    trainer.add_callback(StopWhenFinished())
    try:
        result = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    except AlreadyFinished:  # resumed from the last step's checkpoint: only the end of the run is left to do
        metrics.tokens.detach()
        result = None
    eval_loss = trainer.evaluate()["eval_loss"] if data.eval is not None else None
    if eval_loss is not None and state.is_main_process:
        with metrics.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps({"step": trainer.state.global_step, "final_eval_loss": eval_loss}) + "\n")
    save_final_model(trainer, rundir.partial)  # whole weights even under ZeRO-3/FSDP
    state.wait_for_everyone()
    if not state.is_main_process:
        return None

    resolved = recipe.model_copy(deep=True)
    resolved.model.family = family
    _write_run_files(rundir.partial, resolved, data)
    records = read_metrics(metrics.path)
    losses = [r["loss"] for r in records if "loss" in r]
    runtime_s = float(result.metrics.get("train_runtime", 0.0)) if result is not None else 0.0
    summary = RunSummary(
        output_dir=rundir.final,
        steps=trainer.state.global_step,
        first_loss=losses[0] if losses else None,
        last_loss=losses[-1] if losses else None,
        eval_loss=eval_loss,
        tokens_per_second=_overall_tokens_per_second(metrics.history, runtime_s),
        train_seconds=runtime_s,
        method=recipe.method,
        world_size=state.num_processes,
        peak_gpu_memory_gib=round(torch.cuda.max_memory_allocated() / 2**30, 2) if runtime.use_cuda else None,
        data=dict(data.stats),
        held_out_fim=fim_before_after(records) if fim_eval is not None else None,
    )
    summary.trainer = trainer
    (rundir.partial / "summary.json").write_text(json.dumps(summary.to_dict(), indent=2) + "\n")
    rundir.finalize()  # last: a run killed before this point is resumed, never half-renamed
    return summary


def _write_run_files(directory: Path, recipe: Recipe, data: PreparedData) -> None:
    split = {"seed": recipe.seed, "eval_split": recipe.data.eval_split, "eval_paths": data.eval_paths}
    write_run_records(directory, recipe_to_yaml(recipe), data.report(), split)


def _overall_tokens_per_second(history: list[dict[str, Any]], seconds: float) -> float | None:
    tokens = [r["tokens_seen"] for r in history if "tokens_seen" in r]
    return tokens[-1] / seconds if tokens and seconds > 0 else None
