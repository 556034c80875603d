"""HumanEval-infilling with execution: completions placed between prompt and suffix, run with the task's tests
in the sandbox, results journaled as each test ends (a killed eval resumes)."""

from __future__ import annotations

import time
from collections import Counter
from functools import partial
from pathlib import Path

from finetune.errors import UserError
from finetune.evaluate.options import EvalOptions, make_console, models_to_run, settings_of, unique_label
from finetune.evaluate.progress import EvalProgress
from finetune.evaluate.report import (
    benchmark_markdown,
)
from finetune.evaluate.truncate import settled, truncate
from finetune.io import write_text_atomic

# HumanEval-infilling (MIT licence) ships in the checkout's data/benchmarks, found by name from any directory.
SHIPPED_DIR = Path(__file__).resolve().parents[2] / "data" / "benchmarks"
SHIPPED = {
    "humaneval-single-line": "HumanEval-SingleLineInfilling.jsonl.gz",
    "humaneval-multi-line": "HumanEval-MultiLineInfilling.jsonl.gz",
    "humaneval-random-span-light": "HumanEval-RandomSpanInfillingLight.jsonl.gz",
}


def benchmark_path(value: str) -> Path:
    """The benchmark file `value` names: an existing file as given, else a shipped benchmark's short name."""
    path = Path(value).expanduser()
    if path.is_dir():
        raise UserError(f"benchmark {value} is a directory: give a .jsonl or .jsonl.gz file")
    if path.is_file():
        return path
    if value in SHIPPED:
        if not (SHIPPED_DIR / SHIPPED[value]).is_file():
            raise UserError(f"the shipped benchmark {value} is missing from {SHIPPED_DIR}: use a full checkout")
        return SHIPPED_DIR / SHIPPED[value]
    raise UserError(
        f"benchmark {value} not found: pass a HumanEval-infilling .jsonl(.gz) file or one of {', '.join(SHIPPED)}"
    )


def _completions(options, model, adapter, tasks, label_taken: set[str], progress) -> tuple[str, list[str], dict]:
    """A model's label, its (truncated) completion for each task, and generation stats."""
    from finetune.inference.complete import Sampling, generate, load_completer

    completer = load_completer(model, adapter, family=options.family, dtype=options.dtype)
    label = unique_label(completer.label, label_taken)
    prompts = [completer.prompt_ids(t.prompt, t.suffix, "", "python") for t in tasks]
    task = progress.add_task(f"completing with {label}", total=len(tasks))
    sampling = Sampling(options.max_new_tokens, options.temperature, options.top_p, options.top_k, options.seed)
    modes = [t.truncation if options.truncate == "auto" else "none" for t in tasks]
    stops = [partial(settled, language="python", mode=mode) for mode in modes] if options.early_stop else None
    results, stats = generate(
        completer,
        prompts,
        sampling,
        batch_size=options.batch_size,
        on_batch=lambda pairs: progress.advance(task, len(pairs)),
        stops=stops,
        groups=modes,
    )
    completions = [truncate(r.text if r else "", "python", mode) for r, mode in zip(results, modes, strict=True)]
    return label, completions, {**stats.to_dict(), "batch_size": options.batch_size, "early_stop": options.early_stop}


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
        label, completions = unique_label("oracle", taken), [tasks[i].canonical_solution for i in pending]
    elif pending:
        label, completions, generation = _completions(options, model, adapter, [tasks[i] for i in pending], taken, progress)
    else:
        label, completions = unique_label(kept[0]["label"], taken), []
    test_task = progress.add_task(f"running tests ({label})", total=len(tasks), completed=len(kept), unit="tests")
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

    console = make_console()
    benchmark = benchmark_path(options.benchmark)
    tasks = load_tasks(benchmark, limit=options.limit)
    out = Path(options.out)
    settings = {**settings_of(options), "timeout_s": options.timeout, "memory_mb": options.memory_mb, "truncate": options.truncate}
    models = [["oracle", None]] if options.oracle else [[m, a] for m, a, _ in models_to_run(options)]
    journal = Journal(out, {"benchmark_sha256": file_digest(benchmark), "settings": settings, "models": models})
    done = journal.resume()
    summary: dict = {"kind": "benchmark", "benchmark": str(benchmark), "tasks": len(tasks), "settings": settings}
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
            with EvalProgress(console) as progress:
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
        *journal.finish(results, sorted(rows, key=lambda row: (row["run"], row["item"]))),
        write_text_atomic(out / "report.md", benchmark_markdown(runs, benchmark.name, notes)),
    ]
    for run in runs:
        console.print(f"{run['label']}: pass@1 {100 * run['pass@1']:.1f}% ({run['passed']}/{run['total']} tasks)")
    console.print(f"done in {seconds:.1f}s; wrote {', '.join(str(f) for f in files)}")
    return 0


# -------------------------------------------------------------------------------------------------------- CLI


# What an eval writes into --out: a folder holding anything else is someone else's, and is not written into.
