"""Held-out FIM items of a repository: the files training did not see, completed by each model and scored per
category (exact match, edit similarity after truncation to the syntactic unit, and the loss of the reference middle).

Each completion stops as soon as its unit is whole (`truncate.settled`), and is on disk when its batch ends: a
line per (model, item) appended to predictions.jsonl and a partial results.json, so a stopped eval keeps its work
and the same command with the same --out completes only what is missing. The finished eval rewrites
predictions.jsonl as one line per item, every model side by side.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from functools import partial
from pathlib import Path

from finetune.errors import UserError
from finetune.evaluate.items import CATEGORIES, EvalItem, build_items
from finetune.evaluate.journal import Journal
from finetune.evaluate.metrics import edit_similarity, exact_match, score_by_category
from finetune.evaluate.options import EvalOptions, make_console, models_to_run, settings_of, unique_label
from finetune.evaluate.progress import EvalProgress
from finetune.evaluate.report import fim_markdown, plot_scores
from finetune.evaluate.truncate import settled, truncate
from finetune.inference.likelihood import reference_losses
from finetune.io import write_text_atomic
from finetune.run import held_out_paths, split_file


def find_split(options: EvalOptions) -> Path | None:
    """The split.json to use: --split, else the adapter's run, else the model's run directory."""
    if options.split:
        if not Path(options.split).is_file():
            raise UserError(f"--split {options.split} not found: pass the split.json a training run wrote")
        return Path(options.split)
    return split_file(options.adapter) or split_file(options.model)


def held_out_documents(repo: str, split: Path | None, notes: list[str]):
    """The repository's documents that training did not see (all of them when there is no recorded split)."""
    from finetune.data.ingest.sources import clean_documents
    from finetune.data.ingest.walk import IngestReport, walk_repository

    documents, report = walk_repository(repo)
    documents = clean_documents(documents, report if isinstance(report, IngestReport) else IngestReport(), dedup="none")
    if split is None:
        notes.append("no split.json found: every file of the repository is used (the model may have trained on them)")
        return documents
    held = held_out_paths(split)
    kept = [doc for doc in documents if doc.path in held]
    if not kept:
        raise UserError(
            f"none of the {len(held)} held-out files in {split} is in {repo}: pass the repository the run trained on"
        )
    notes.append(f"{len(kept)} held-out files from {split} (training never saw them)")
    return kept


def _row(
    item: EvalItem, index: int, number: int, label: str, raw: str, generation=None, too_long: bool = False, loss=None
) -> dict:
    """One model's completion of one item, scored; the journal's line (the final file merges them per item)."""
    prediction = truncate(raw, item.language, item.mode, item.prefix)
    row = {
        "item": index,
        "run": number,
        "label": label,
        "id": item.id,
        "category": item.category,
        "path": item.path,
        "reference": item.middle,
        f"{label}.raw": raw,
        f"{label}.prediction": prediction,
        f"{label}.exact_match": exact_match(prediction, item.middle),
        f"{label}.edit_similarity": round(edit_similarity(prediction, item.middle), 4),
    }
    if loss is not None:
        row[f"{label}.middle_loss"] = round(loss, 4)
    if generation is not None or too_long:
        row[f"{label}.tokens"] = len(generation.ids) + generation.stopped if generation is not None else 0
        row[f"{label}.ended"] = generation.ended if generation is not None else "prompt_too_long"
    return row


def _merged(items: list[EvalItem], runs: list[dict], rows: dict[tuple[int, int], dict]) -> list[dict]:
    """predictions.jsonl as people read it: one line per item, each model's fields side by side."""
    merged = []
    for index, item in enumerate(items):
        line = {"id": item.id, "category": item.category, "path": item.path, "reference": item.middle}
        for number, run in enumerate(runs):
            prefix = f"{run['label']}."
            line.update((k, v) for k, v in rows[(number, index)].items() if k.startswith(prefix))
        merged.append(line)
    return merged


def _generation(label: str, rows: list[dict], stats, options: EvalOptions, resumed: int) -> dict:
    """Generation figures of a run: token counts from the rows (so a resumed eval counts every item), speed from
    this session's generation."""
    ended = Counter(row.get(f"{label}.ended") for row in rows)
    ended.pop(None, None)
    saved = sum(options.max_new_tokens - row[f"{label}.tokens"] for row in rows if row.get(f"{label}.ended") == "rule")
    return {
        "new_tokens": sum(row.get(f"{label}.tokens", 0) for row in rows),
        "ended": dict(sorted(ended.items())),
        "tokens_saved_at_most": saved,  # rows a rule stopped might have hit a stop token before max_new_tokens
        "early_stop": options.early_stop,
        "batch_size": options.batch_size,
        "seconds": round(stats.seconds, 3) if stats else 0.0,
        "tokens_per_second": round(stats.tokens_per_second, 1) if stats else 0.0,
        "resumed": resumed,
        "completed_now": stats.prompts if stats else 0,
    }


def _fingerprint(path: str | None) -> list | None:
    """Names, sizes and times of a model folder's weights: a folder retrained in place is another model."""
    if not path or not Path(path).is_dir():
        return None
    files = sorted(f for f in Path(path).iterdir() if f.suffix in (".safetensors", ".bin", ".pt") and f.is_file())
    return [[f.name, f.stat().st_size, f.stat().st_mtime_ns] for f in files]


def _resume_key(options: EvalOptions, items: list[EvalItem], models: list[list]) -> dict:
    """Everything the rows depend on: an interrupted eval resumes only when all of it is the same."""
    digest = hashlib.sha256(json.dumps([it.to_dict() for it in items], sort_keys=True).encode()).hexdigest()
    settings = {k: v for k, v in settings_of(options).items() if k != "batch_size"}  # batches do not change rows
    settings.update(family=options.family, dtype=options.dtype, early_stop=options.early_stop)
    weights = [[_fingerprint(model), _fingerprint(adapter)] for model, adapter in models]
    return {"items_sha256": digest, "settings": settings, "models": models, "weights": weights}


class _Run:
    """One model (or the oracle) over the items: completes what the journal lacks, a batch at a time."""

    def __init__(self, number: int, model, adapter, items: list[EvalItem], done: dict, options: EvalOptions) -> None:
        self.number, self.model, self.adapter, self.items, self.options = number, model, adapter, items, options
        self.rows = {i: done[(number, i)] for i in range(len(items)) if (number, i) in done}
        self.resumed = len(self.rows)
        self.label = ""
        self.stats = None
        self.losses: dict[int, float | None] = {}

    def summary(self) -> dict:
        rows = [self.rows[i] for i in sorted(self.rows)]
        scores = score_by_category(
            (row["category"], row[f"{self.label}.prediction"], row["reference"], row.get(f"{self.label}.middle_loss"))
            for row in rows
        )
        run = {"label": self.label, "model": self.model, "adapter": self.adapter, "items_done": len(rows)}
        run["scores"] = {c: s.to_dict() for c, s in scores.items()}
        run["generation"] = {} if self.options.oracle else _generation(self.label, rows, self.stats, self.options, self.resumed)
        return run

    def complete(self, journal: Journal, taken: set[str], progress: EvalProgress, publish) -> None:
        from finetune.inference.complete import Sampling, generate, load_completer

        items, options = self.items, self.options
        pending = [i for i in range(len(items)) if i not in self.rows]
        if options.oracle or not pending:
            name = "oracle" if options.oracle else next(iter(self.rows.values()))["label"]
            self.label = unique_label(name, taken)
            if pending:
                self._record(journal, [(i, items[i].middle, None) for i in pending])
                publish()
            return
        progress.phase(f"loading {self.adapter or self.model}" + (f" on {self.model}" if self.adapter and self.model else ""))
        completer = load_completer(self.model, self.adapter, family=options.family, dtype=options.dtype)
        self.label = unique_label(completer.label, taken)
        todo = [items[i] for i in pending]
        prompts = [completer.prompt_ids(it.prefix, it.suffix, it.path, it.language) for it in todo]
        progress.phase(f"loss of the {len(todo)} reference middles under {self.label}")
        targets = [completer.encoder.middle_target_ids(it.middle) for it in todo]
        losses = reference_losses(completer, prompts, targets, batch_size=options.batch_size)
        self.losses = dict(zip(pending, losses, strict=True))
        stops = [partial(settled, language=it.language, mode=it.mode, prefix=it.prefix) for it in todo]
        task = progress.add_task(f"completing with {self.label}", total=len(items), completed=len(self.rows))

        def on_batch(pairs) -> None:
            done = [(pending[j], gen.text if gen is not None else "", gen) for j, gen in pairs]
            self._record(journal, done)
            progress.advance(task, len(pairs), tokens=sum(len(g.ids) + g.stopped for _, g in pairs if g is not None))
            publish()

        sampling = Sampling(options.max_new_tokens, options.temperature, options.top_p, options.top_k, options.seed)
        _, self.stats = generate(
            completer,
            prompts,
            sampling,
            batch_size=options.batch_size,
            on_batch=on_batch,
            stops=stops if options.early_stop else None,
            groups=[it.mode for it in todo],  # one-line and signature items end long before blocks and bodies
        )
        del completer

    def _record(self, journal: Journal, done: list[tuple[int, str, object]]) -> None:
        for index, raw, generation in done:
            too_long = generation is None and not self.options.oracle
            loss = self.losses.get(index)
            row = _row(self.items[index], index, self.number, self.label, raw, generation, too_long, loss)
            journal.append(row)
            self.rows[index] = row


def run_fim(options: EvalOptions) -> int:
    console = make_console()
    out = Path(options.out)
    with EvalProgress(console) as progress:
        progress.phase(f"building items from {options.repo}")
        notes: list[str] = []
        split = find_split(options)
        documents = held_out_documents(options.repo, split, notes)
        stats: Counter[str] = Counter()
        categories = options.categories.split(",") if options.categories else list(CATEGORIES)
        items = build_items(
            documents,
            per_category=options.per_category,
            seed=options.seed or 0,
            max_context_chars=options.context_chars,
            categories=categories,
            stats=stats,
        )
        if not items:
            raise UserError(
                f"no benchmark items in the {len(documents)} held-out files (no parsable functions or blocks): "
                "evaluate a repository with code in a supported language"
            )
        if stats["truncation_would_change_reference"]:
            notes.append(f"{stats['truncation_would_change_reference']} spans left out: their truncation rule cuts the reference")
        progress.phase(f"{len(items)} items from {len(documents)} files, {len(categories)} categories")
        models = [["oracle", None]] if options.oracle else [[m, a] for m, a, _ in models_to_run(options)]
        for model, _ in models if not options.oracle else []:
            if model is not None and not Path(model).exists():
                raise UserError(f"model {model} not found: pass a model directory (a base, merged or full run)")
        journal = Journal(out, _resume_key(options, items, models))  # first write: every input was checked
        done = journal.resume()
        summary = {
            "kind": "fim",
            "repo": str(options.repo),
            "split": str(split) if split else None,
            "items": len(items),
            "item_stats": dict(stats),
            "settings": settings_of(options),
        }
        runs = [_Run(number, model, adapter, items, done, options) for number, (model, adapter) in enumerate(models)]
        journal.partial({**summary, "runs": [], "notes": notes})  # the folder says "interrupted" until the end
        for stale in ("report.md", "scores.png"):
            (out / stale).unlink(missing_ok=True)
        if done:
            progress.phase(f"resuming: {len(done)} completions of an interrupted eval kept from {out}")
            notes.append(f"resumed an interrupted eval: {len(done)} completions were kept from the earlier run")
        taken: set[str] = set()
        try:
            for number, run in enumerate(runs):
                publish = partial(_publish, journal, summary, runs[: number + 1], notes)
                run.complete(journal, taken, progress, publish)
        finally:
            journal.close()
        progress.phase("scoring")
        results = {**summary, "runs": [run.summary() for run in runs], "notes": notes}
        all_rows = {(run.number, i): row for run in runs for i, row in run.rows.items()}
        progress.phase(f"writing results to {out}")
        files = journal.finish(results, _merged(items, results["runs"], all_rows))
        files.append(write_text_atomic(out / "report.md", fim_markdown(results["runs"], categories, notes)))
        if options.plot:
            files.append(plot_scores(out / "scores.png", results["runs"], categories))
    _print_fim_table(console, results["runs"], categories)
    for note in notes:
        console.print(f"[dim]note:[/dim] {note}")
    console.print(f"wrote {', '.join(str(f) for f in files)}")
    return 0


def _publish(journal: Journal, summary: dict, runs: list[_Run], notes: list[str]) -> None:
    """results.json of the eval so far (`complete: false`): the scores of the items done."""
    journal.partial({**summary, "runs": [run.summary() for run in runs if run.label], "notes": notes})


def _print_fim_table(console, runs: list[dict], categories: list[str]) -> None:
    from rich.table import Table

    from finetune.evaluate.report import score_columns

    head, rows = score_columns(runs, categories)
    table = Table(*head[:2], box=None, pad_edge=False, title="exact match / edit similarity (%), middle loss (nats/token)")
    for name in head[2:]:
        table.add_column(name, justify="right")
    for row in rows:
        table.add_row(f"[bold]{row[0]}[/bold]" if row[0] == "overall" else row[0], *row[1:])
    console.print(table)


# ------------------------------------------------------------------------------------- execution benchmarks
