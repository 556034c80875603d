"""Held-out FIM items of a repository: the files training did not see, completed by each model and scored per
category (exact match, edit similarity after truncation to the syntactic unit)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from finetune.errors import UserError
from finetune.evaluate.items import CATEGORIES, EvalItem, build_items
from finetune.evaluate.metrics import edit_similarity, exact_match, score_by_category
from finetune.evaluate.options import EvalOptions, make_console, models_to_run, progress_bar, settings_of, unique_label
from finetune.evaluate.report import (
    fim_markdown,
    plot_scores,
)
from finetune.evaluate.truncate import truncate
from finetune.io import write_json_atomic, write_jsonl_atomic, write_text_atomic
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


def fim_predictions(completer, items: list[EvalItem], options: EvalOptions, progress) -> tuple[list[str], dict]:
    """Raw completions for every item, and generation stats."""
    from finetune.inference.complete import Sampling, generate

    prompts = [completer.prompt_ids(item.prefix, item.suffix, item.path, item.language) for item in items]
    task = progress.add_task(f"completing with {completer.label}", total=len(items))
    sampling = Sampling(options.max_new_tokens, options.temperature, options.top_p, options.top_k, options.seed)
    results, stats = generate(
        completer, prompts, sampling, batch_size=options.batch_size, on_batch=lambda n: progress.advance(task, n)
    )
    texts = [result.text if result is not None else "" for result in results]
    return texts, {**stats.to_dict(), "batch_size": options.batch_size, "skipped_too_long": len(stats.skipped)}


def run_fim(options: EvalOptions) -> int:
    from finetune.inference.complete import load_completer

    console = make_console()
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
    console.print(f"[dim]eval:[/dim] {len(items)} items from {len(documents)} files, {len(categories)} categories")
    out = Path(options.out)
    rows = [{"id": it.id, "category": it.category, "path": it.path, "reference": it.middle} for it in items]
    runs: list[dict] = []
    taken: set[str] = set()
    with progress_bar() as progress:
        for model, adapter, _ in models_to_run(options) if not options.oracle else [(None, None, "oracle")]:
            if options.oracle:
                label, raw, generation = unique_label("oracle", taken), [it.middle for it in items], {}
            else:
                completer = load_completer(model, adapter, family=options.family, dtype=options.dtype)
                label = unique_label(completer.label, taken)
                raw, generation = fim_predictions(completer, items, options, progress)
                del completer
            cut = [truncate(text, it.language, it.mode, it.prefix) for text, it in zip(raw, items, strict=True)]
            scores = score_by_category((it.category, p, it.middle) for p, it in zip(cut, items, strict=True))
            for row, text, pred in zip(rows, raw, cut, strict=True):
                row[f"{label}.raw"] = text
                row[f"{label}.prediction"] = pred
                row[f"{label}.exact_match"] = exact_match(pred, row["reference"])
                row[f"{label}.edit_similarity"] = round(edit_similarity(pred, row["reference"]), 4)
            runs.append(
                {
                    "label": label,
                    "model": model,
                    "adapter": adapter,
                    "scores": {c: s.to_dict() for c, s in scores.items()},
                    "generation": generation,
                }
            )
    results = {
        "kind": "fim",
        "repo": str(options.repo),
        "split": str(split) if split else None,
        "items": len(items),
        "item_stats": dict(stats),
        "settings": settings_of(options),
        "runs": runs,
        "notes": notes,
    }
    write_json_atomic(out / "results.json", results)
    write_jsonl_atomic(out / "predictions.jsonl", rows)
    write_text_atomic(out / "report.md", fim_markdown(runs, categories, notes))
    files = [out / "results.json", out / "predictions.jsonl", out / "report.md"]
    if options.plot:
        files.append(plot_scores(out / "scores.png", runs, categories))
    _print_fim_table(console, runs, categories)
    for note in notes:
        console.print(f"[dim]note:[/dim] {note}")
    console.print(f"wrote {', '.join(str(f) for f in files)}")
    return 0


def _print_fim_table(console, runs: list[dict], categories: list[str]) -> None:
    from rich.table import Table

    table = Table("category", "n", box=None, pad_edge=False, title="exact match / edit similarity (%)")
    for run in runs:
        table.add_column(f"EM {run['label']}", justify="right")
    for run in runs:
        table.add_column(f"ES {run['label']}", justify="right")
    for category in [*categories, "overall"]:
        scores = [run["scores"].get(category) for run in runs]
        if not any(scores):
            continue
        n = next(s["n"] for s in scores if s)
        ems = [f"{100 * s['exact_match']:.1f}" if s else "" for s in scores]
        ess = [f"{100 * s['edit_similarity']:.1f}" if s else "" for s in scores]
        table.add_row(f"[bold]{category}[/bold]" if category == "overall" else category, str(n), *ems, *ess)
    console.print(table)


# ------------------------------------------------------------------------------------- execution benchmarks
