"""`finetune eval`: score a model (and a base to compare) on held-out FIM items of a repository, or on an
infilling benchmark with execution; write results.json, report.md, predictions.jsonl and, with --plot, a chart.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from finetune.errors import UserError
from finetune.evaluate.items import CATEGORIES, EvalItem, build_items
from finetune.evaluate.metrics import edit_similarity, exact_match, score_by_category
from finetune.evaluate.report import (
    benchmark_markdown,
    fim_markdown,
    plot_scores,
)
from finetune.evaluate.truncate import truncate
from finetune.io import write_json_atomic, write_jsonl_atomic, write_text_atomic
from finetune.run import held_out_paths, split_file


@dataclass(frozen=True)
class EvalOptions:
    """One evaluation: what to score (held-out FIM items of `repo`, or a `benchmark` file), with which model(s)."""

    out: str
    repo: str | None = None
    benchmark: str | None = None
    model: str | None = None
    adapter: str | None = None
    family: str = "auto"
    dtype: str = "auto"
    compare: str | None = None
    split: str | None = None
    oracle: bool = False
    plot: bool = False
    categories: str | None = None
    per_category: int = 20
    context_chars: int = 4000
    batch_size: int = 8
    limit: int | None = None
    truncate: str = "auto"
    timeout: float = 10.0
    memory_mb: int = 1024
    isolation: str = "auto"
    max_new_tokens: int = 128
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None

def _console():
    from rich.console import Console

    return Console(highlight=False)


def _progress():
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())


# ------------------------------------------------------------------------------------------- held-out split


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


# ---------------------------------------------------------------------------------------------- FIM on a repo


def _models(options: EvalOptions) -> list[tuple[str | None, str | None, str | None]]:
    """(model, adapter, label) for the model under test and, with --compare, the base."""
    runs: list[tuple[str | None, str | None, str | None]] = [(options.model, options.adapter, None)]
    if options.compare:
        runs.append((options.compare, None, None))
    return runs


def _label(completer_label: str, taken: set[str]) -> str:
    label = completer_label
    while label in taken:
        label += "'"
    taken.add(label)
    return label


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

    console = _console()
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
    with _progress() as progress:
        for model, adapter, _ in _models(options) if not options.oracle else [(None, None, "oracle")]:
            if options.oracle:
                label, raw, generation = _label("oracle", taken), [it.middle for it in items], {}
            else:
                completer = load_completer(model, adapter, family=options.family, dtype=options.dtype)
                label = _label(completer.label, taken)
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
        "settings": _settings(options),
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


def _settings(options: EvalOptions) -> dict:
    keys = ("max_new_tokens", "temperature", "top_p", "top_k", "seed", "batch_size", "per_category", "context_chars")
    return {k: getattr(options, k) for k in keys if hasattr(options, k)}


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


def _completions(options, model, adapter, tasks, label_taken: set[str], progress) -> tuple[str, list[str], dict]:
    """A model's label, its (truncated) completion for each task, and generation stats."""
    from finetune.inference.complete import Sampling, generate, load_completer

    completer = load_completer(model, adapter, family=options.family, dtype=options.dtype)
    label = _label(completer.label, label_taken)
    prompts = [completer.prompt_ids(t.prompt, t.suffix, "", "python") for t in tasks]
    task = progress.add_task(f"completing with {label}", total=len(tasks))
    sampling = Sampling(options.max_new_tokens, options.temperature, options.top_p, options.top_k, options.seed)
    results, stats = generate(
        completer, prompts, sampling, batch_size=options.batch_size, on_batch=partial(progress.advance, task)
    )
    completions = [
        truncate(r.text if r else "", "python", t.truncation if options.truncate == "auto" else "none")
        for r, t in zip(results, tasks, strict=True)
    ]
    return label, completions, {**stats.to_dict(), "batch_size": options.batch_size}


def _run_tests(sandbox, journal, work: list[tuple], number: int, label: str, advance) -> list[dict]:
    """Run each (item, task, completion) in the sandbox; each result is on disk as soon as its test ends."""
    rows: list[dict] = []

    def record(j: int, outcome) -> None:
        item, task, completion = work[j]
        row = {
            "item": item,
            "task_id": task.task_id,
            "run": number,
            "label": label,
            f"{label}.completion": completion,
            f"{label}.passed": outcome.passed,
            f"{label}.reason": outcome.reason,
        }
        journal.append(row)
        rows.append(row)
        advance()

    sandbox.run_many([task.program(completion) for _, task, completion in work], on_done=record)
    return rows


def _field(row: dict, name: str):
    """A benchmark row's value for `name` (its keys carry the run's label: "oracle.passed")."""
    return row[f"{row['label']}.{name}"]


def _benchmark_run(options, number: int, model, adapter, tasks, done: dict, sandbox, journal, taken, progress):
    """One model (or the oracle) on every task not already in `done`: its summary and its new rows."""
    from finetune.evaluate.humaneval import pass_at_1

    pending = [i for i in range(len(tasks)) if (number, i) not in done]
    kept = [done[(number, i)] for i in range(len(tasks)) if (number, i) in done]
    generation: dict = {}
    if options.oracle:
        label, completions = _label("oracle", taken), [tasks[i].canonical_solution for i in pending]
    elif pending:
        label, completions, generation = _completions(options, model, adapter, [tasks[i] for i in pending], taken, progress)
    else:
        label, completions = _label(kept[0]["label"], taken), []
    test_task = progress.add_task(f"running tests ({label})", total=len(tasks), completed=len(kept))
    work = [(i, tasks[i], c) for i, c in zip(pending, completions, strict=True)]
    rows = _run_tests(sandbox, journal, work, number, label, partial(progress.advance, test_task, 1))
    passed = [bool(_field(row, "passed")) for row in kept + rows]
    failures = Counter(_field(row, "reason").split(":")[0] for row in kept + rows if not _field(row, "passed"))
    run = {
        "label": label,
        "model": None if options.oracle else model,
        "adapter": adapter,
        "pass@1": pass_at_1(passed),
        "passed": sum(passed),
        "total": len(tasks),
        "resumed": len(kept),
        "failures": dict(failures.most_common(10)),
        "generation": generation,
    }
    return run, rows


def run_benchmark(options: EvalOptions) -> int:
    from finetune.evaluate.humaneval import load_tasks
    from finetune.evaluate.journal import Journal, file_digest
    from finetune.evaluate.sandbox import Sandbox

    console = _console()
    tasks = load_tasks(options.benchmark, limit=options.limit)
    out = Path(options.out)
    settings = {**_settings(options), "timeout_s": options.timeout, "memory_mb": options.memory_mb, "truncate": options.truncate}
    models = [["oracle", None]] if options.oracle else [[m, a] for m, a, _ in _models(options)]
    journal = Journal(out, {"benchmark_sha256": file_digest(options.benchmark), "settings": settings, "models": models})
    done = journal.resume()
    summary: dict = {"kind": "benchmark", "benchmark": str(options.benchmark), "tasks": len(tasks), "settings": settings}
    journal.partial(summary)  # from here on the folder says "interrupted" until the eval completes
    (out / "report.md").unlink(missing_ok=True)
    if done:
        console.print(f"[dim]eval:[/dim] resuming: {len(done)} results of an interrupted eval kept from {out}")
    runs: list[dict] = []
    rows: list[dict] = list(done.values())
    taken: set[str] = set()
    started = time.perf_counter()
    try:
        with Sandbox(timeout_s=options.timeout, memory_mb=options.memory_mb, isolation=options.isolation) as sandbox:
            info = summary["sandbox"] = sandbox.describe()
            notes = [
                f"sandbox: {info['isolation']} isolation, tests run as {info['user']}, "
                f"{options.timeout:g}s timeout, {options.memory_mb} MB memory per test",
                *info["notes"],
            ]
            console.print(f"[dim]eval:[/dim] {notes[0]}")
            for note in info["notes"]:
                console.print(f"[yellow]note:[/yellow] {note}")
            journal.partial({**summary, "runs": runs, "notes": notes})
            with _progress() as progress:
                for number, (model, adapter) in enumerate(models):
                    run, new = _benchmark_run(options, number, model, adapter, tasks, done, sandbox, journal, taken, progress)
                    runs.append(run)
                    rows += new
                    journal.partial({**summary, "runs": runs, "notes": notes})
    finally:
        journal.close()
    seconds = time.perf_counter() - started
    if done:
        notes.append(f"resumed an interrupted eval: {len(done)} results were kept from the earlier run")
    results = {**summary, "pass@1": runs[0]["pass@1"], "seconds": round(seconds, 2), "runs": runs, "notes": notes}
    files = [
        *journal.finish(results, rows),
        write_text_atomic(out / "report.md", benchmark_markdown(runs, Path(options.benchmark).name, notes)),
    ]
    for run in runs:
        console.print(f"{run['label']}: pass@1 {100 * run['pass@1']:.1f}% ({run['passed']}/{run['total']} tasks)")
    console.print(f"done in {seconds:.1f}s; wrote {', '.join(str(f) for f in files)}")
    return 0


# -------------------------------------------------------------------------------------------------------- CLI


# What an eval writes into --out: a folder holding anything else is someone else's, and is not written into.
EVAL_FILES = frozenset({"results.json", "report.md", "predictions.jsonl", "scores.png"})


def _check_out(out: Path) -> None:
    if not out.is_dir():
        return
    foreign = sorted(p.name for p in out.iterdir() if p.name not in EVAL_FILES and not p.name.startswith("."))
    if foreign:
        raise UserError(
            f"--out {out} holds files an eval does not write ({', '.join(foreign[:3])}): choose a new or empty folder"
        )


def evaluate(options: EvalOptions) -> int:
    """Run the evaluation the options describe; writes into `options.out` and returns the exit status."""
    if bool(options.repo) == bool(options.benchmark):
        raise UserError("pass exactly one of --repo DIR (held-out FIM items) or --benchmark FILE (infilling tests)")
    if not options.oracle and not options.model and not options.adapter:
        raise UserError("pass --model DIR (and --adapter RUN_DIR for a LoRA run), or --oracle to check the benchmark")
    if options.plot and options.benchmark:
        raise UserError("--plot draws per-category FIM scores: use it with --repo")
    _check_out(Path(options.out))
    from finetune.io import sweep_stale

    for line in sweep_stale(Path(options.out), EVAL_FILES):  # leftovers of a killed eval into this folder
        print(line)
    if options.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise UserError("--plot needs matplotlib: pip install 'finetune[plot]' (or leave out --plot)") from None
    return run_benchmark(options) if options.benchmark else run_fim(options)
