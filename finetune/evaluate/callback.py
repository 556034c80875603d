"""Complete a small held-out FIM set while training, so metrics.jsonl shows whether completions get better.

Training loss says little about whether a model now writes the right line; exact match and edit similarity on
real completions do, and the loss of each item's reference middle shows learning before greedy completions change.
The items come from the run's held-out files (never trained on), built as `finetune eval` builds them, with each
prompt cut to the run's sequence length (less the tokens to generate) as `finetune complete`
cuts a long file: the model is asked at the length it trains at, which also keeps a small model's evaluation cheap.
They are completed greedily before training, every `eval.every_steps` steps, and at the end.
Every process generates (ZeRO-3 and FSDP need all ranks in each forward); the main process writes the record.
"""

from __future__ import annotations

import dataclasses
import json
from functools import partial
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from finetune.data.tokenize.encoder import SampleEncoder
from finetune.errors import UserError
from finetune.evaluate.items import EvalItem, build_items
from finetune.evaluate.metrics import score_by_category
from finetune.evaluate.truncate import settled, truncate


class FimEvalCallback(TrainerCallback):
    """Scores `items` with the model being trained and appends the scores to `metrics_path`."""

    def __init__(
        self,
        items: list[EvalItem],
        tokenizer: Any,
        encoder: SampleEncoder,
        metrics_path: Path,
        *,
        every_steps: int | None,
        max_new_tokens: int,
        batch_size: int,
    ) -> None:
        self.items = items
        self.tokenizer = tokenizer
        self.encoder = encoder
        self.metrics_path = metrics_path
        self.every_steps = every_steps
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size
        self.history: list[dict[str, Any]] = []
        self._last_step: int | None = None

    def evaluate(self, model: Any, step: int, epoch: float, is_main: bool) -> dict[str, Any]:
        from finetune.inference.complete import Completer, Sampling, generate
        from finetune.inference.likelihood import reference_losses

        completer = Completer(model, self.tokenizer, self.encoder, self.encoder.family.name, "training")
        prompts = [completer.prompt_ids(it.prefix, it.suffix, it.path, it.language) for it in self.items]
        targets = [self.encoder.middle_target_ids(it.middle) for it in self.items]
        losses = reference_losses(completer, prompts, targets, batch_size=self.batch_size)
        stops = [partial(settled, language=it.language, mode=it.mode, prefix=it.prefix) for it in self.items]
        results, stats = generate(
            completer,
            prompts,
            Sampling(self.max_new_tokens),
            batch_size=self.batch_size,
            stops=stops,
            groups=[it.mode for it in self.items],
        )
        predictions = [
            truncate(r.text if r is not None else "", it.language, it.mode, it.prefix)
            for r, it in zip(results, self.items, strict=True)
        ]
        scores = score_by_category(
            (it.category, p, it.middle, loss) for p, it, loss in zip(predictions, self.items, losses, strict=True)
        )
        overall = scores["overall"]
        record = {
            "step": step,
            "epoch": round(epoch, 4),
            "fim_items": overall.n,
            "fim_exact_match": round(overall.exact_match, 4),
            "fim_edit_similarity": round(overall.edit_similarity, 4),
            **({"fim_middle_loss": round(overall.middle_loss, 4)} if overall.middle_loss is not None else {}),
            "fim_exact_match_by_category": {c: round(s.exact_match, 4) for c, s in scores.items() if c != "overall"},
            "fim_tokens_per_second": round(stats.tokens_per_second, 1),
        }
        self._last_step = step
        if is_main:
            self.history.append(record)
            with self.metrics_path.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(record) + "\n")
        return record

    def _run(self, state, model) -> None:
        if model is not None and self._last_step != state.global_step:
            self.evaluate(model, state.global_step, state.epoch or 0.0, state.is_world_process_zero)

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self._run(state, model)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if self.every_steps and state.global_step % self.every_steps == 0:
            self._run(state, model)

    def on_train_end(self, args, state, control, model=None, **kwargs):
        self._run(state, model)


def fim_eval_callback(
    recipe: Any, tokenizer: Any, family: str, eval_paths: list[str], metrics_path: Path
) -> FimEvalCallback | None:
    """The callback a recipe asks for (`eval.fim_items` > 0 and held-out files exist), else None."""
    settings = getattr(recipe, "eval", None)
    if settings is None or settings.fim_items <= 0 or not eval_paths:
        return None
    from finetune.data.ingest.sources import load_data_documents

    held = set(eval_paths)
    documents, _ = load_data_documents(recipe.data)
    documents = [doc for doc in documents if doc.path in held]
    encoder = SampleEncoder(tokenizer, family)
    items = build_items(documents, per_category=settings.fim_items, seed=recipe.seed)
    items = _fit_prompts(_spread(items, settings.fim_items), encoder, recipe.data.max_length - settings.max_new_tokens)
    if not items:
        return None
    every = settings.every_steps if settings.every_steps is not None else recipe.training.eval_steps
    return FimEvalCallback(
        items,
        tokenizer,
        encoder,
        metrics_path,
        every_steps=every,
        max_new_tokens=settings.max_new_tokens,
        batch_size=settings.batch_size,
    )


def _fit_prompts(items: list[EvalItem], encoder: SampleEncoder, budget: int) -> list[EvalItem]:
    """Each item with its prefix and suffix cut to a prompt of `budget` tokens, keeping the lines nearest the cursor
    (`inference.complete.fit_context`); an item whose cursor line alone does not fit is left out."""
    from finetune.inference.complete import Completer, fit_context

    completer = Completer(None, encoder.tokenizer, encoder, encoder.family.name, "training")
    fitted = []
    for item in items:
        try:
            _, prefix, suffix = fit_context(completer, item.prefix, item.suffix, item.path, item.language, None, budget)
        except UserError:
            continue
        fitted.append(dataclasses.replace(item, prefix=prefix, suffix=suffix))
    return fitted


def fim_before_after(records: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The first and last completion scores of a run's metrics records (None when none were scored).

    Read from metrics.jsonl rather than the callback's memory, so a resumed run still compares with the scores
    taken before any training.
    """
    scored = [r for r in records if "fim_exact_match" in r]
    if not scored:
        return None
    first, last = scored[0], scored[-1]
    return {
        "items": last["fim_items"],
        "steps": [first["step"], last["step"]],
        "exact_match": [first["fim_exact_match"], last["fim_exact_match"]],
        "edit_similarity": [first["fim_edit_similarity"], last["fim_edit_similarity"]],
        **({"middle_loss": [first["fim_middle_loss"], last["fim_middle_loss"]]} if "fim_middle_loss" in last else {}),
    }


def _spread(items: list[EvalItem], n: int) -> list[EvalItem]:
    """`n` items taken round-robin over the categories, so a small set still covers each kind."""
    by_category: dict[str, list[EvalItem]] = {}
    for item in items:
        by_category.setdefault(item.category, []).append(item)
    chosen: list[EvalItem] = []
    while len(chosen) < n and any(by_category.values()):
        for group in by_category.values():
            if group and len(chosen) < n:
                chosen.append(group.pop(0))
    return chosen
