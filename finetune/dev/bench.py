"""Benchmarks that print numbers: `python -m finetune.dev.bench data DIR | secrets [DIR] | train RECIPE | compare RECIPE
| peers [RECIPE] | gpu-check | eval`.

`data` measures the sample pipeline on a source tree, per stage (read, parse, select, encode = format + tokenize)
for random and structured FIM, then end to end with several worker processes. `secrets` runs the secret scrubber's
detectors over every `.py` file of a tree (default: this Python's standard library and its tests, where every hit is
a false positive) and lists each flagged span masked, so a person can judge them.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from finetune.data.fim.random_span import document_rng, random_fim
from finetune.data.types import Document

_WORKER_STATE: dict = {}


def _load_encoder(tokenizer_dir: str):
    from transformers import AutoTokenizer

    from finetune.data.tokenize.encoder import SampleEncoder
    from finetune.data.tokenize.families import detect_family

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    return SampleEncoder(tokenizer, detect_family(tokenizer))


def _samples(docs: list[Document], mode: str, seed: int, max_chars: int) -> list:
    from finetune.config.schema import FimSection
    from finetune.data.fim.transforms import make_samples

    structured, random_rate = (1.0, 0.0) if mode == "structured" else (0.0, 1.0)
    fim = FimSection(structured_rate=structured, random_rate=random_rate)
    return list(make_samples(docs, fim, seed=seed, max_chars=max_chars, stats=Counter()))


def _init_worker(tokenizer_dir: str) -> None:
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    _WORKER_STATE["encoder"] = _load_encoder(tokenizer_dir)


def _end_to_end(args: tuple[list[Document], str, int, int]) -> int:
    docs, mode, seed, max_chars = args
    encoder = _WORKER_STATE["encoder"]
    return sum(len(encoder.encode(s)["input_ids"]) for s in _samples(docs, mode, seed, max_chars))


def _stage_times(docs: list[Document], encoder, mode: str, seed: int, max_chars: int) -> dict[str, float]:
    """Seconds per stage. Structured `select` is structured_fim's time minus a parse of the same file."""
    from finetune.data.fim.structured import find_spans, structured_fim

    times: Counter[str] = Counter()
    samples = []
    for doc in docs:
        rng = document_rng(doc, seed)
        if mode == "structured":
            start = time.perf_counter()
            find_spans(doc.text.encode("utf-8"), doc.language)
            parsed = time.perf_counter()
            result = structured_fim(doc, rng, spm=False, max_chars=max_chars)
            done = time.perf_counter()
            times["parse"] += parsed - start
            times["select"] += max(0.0, (done - parsed) - (parsed - start))
            samples.append(result.sample or random_fim(doc, rng, spm=False))
        else:
            start = time.perf_counter()
            samples.append(random_fim(doc, rng, spm=False))
            times["select"] += time.perf_counter() - start
    start = time.perf_counter()
    for sample in samples:
        encoder.encode(sample)
    times["encode"] = time.perf_counter() - start
    return dict(times)


def bench_data(root: str, tokenizer_dir: str, workers: list[int], seed: int, max_chars: int, limit: int) -> None:
    from finetune.data.ingest.walk import walk_repository

    start = time.perf_counter()
    docs, report = walk_repository(root)
    read_s = time.perf_counter() - start
    docs = docs[:limit] if limit else docs
    megabytes = sum(len(d.text.encode("utf-8")) for d in docs) / 1e6
    encoder = _load_encoder(tokenizer_dir)
    print(f"source: {root}: {len(docs)} files, {megabytes:.1f} MB (walk+read {megabytes / read_s:.1f} MB/s)")
    print(f"{'mode':<11} {'stage':<8} {'seconds':>8} {'MB/s':>8}")
    totals = {}
    for mode in ("random", "structured"):
        times = _stage_times(docs, encoder, mode, seed, max_chars)
        for stage, seconds in times.items():
            print(f"{mode:<11} {stage:<8} {seconds:8.2f} {megabytes / max(seconds, 1e-9):8.1f}")
        totals[mode] = sum(times.values())
        print(f"{mode:<11} {'total':<8} {totals[mode]:8.2f} {megabytes / totals[mode]:8.1f}")
    print(f"structured / random throughput: {totals['random'] / totals['structured']:.2f}")
    chunks = [docs[i :: max(workers) * 4] for i in range(max(workers) * 4)]
    for mode in ("random", "structured"):
        for n in workers:
            start = time.perf_counter()
            with ProcessPoolExecutor(n, initializer=_init_worker, initargs=(tokenizer_dir,)) as pool:
                tokens = sum(pool.map(_end_to_end, [(c, mode, seed, max_chars) for c in chunks]))
            seconds = time.perf_counter() - start
            print(
                f"end to end {mode:<10} workers={n}: {megabytes / seconds:6.2f} MB/s, "
                f"{len(docs) / seconds:7.0f} files/s, {tokens / seconds:9.0f} tokens/s (incl. worker start-up)"
            )


def bench_secrets(root: str, show: int) -> None:
    """Flagged spans by kind, per MB and throughput on the `.py` files under `root` (site-packages left out)."""
    from finetune.data.ingest.scan import scan_text

    files = sorted(p for p in Path(root).rglob("*.py") if "site-packages" not in p.parts and p.is_file())
    size, seconds, cpu, flags, unreadable = 0, 0.0, 0.0, [], 0
    for file in files:
        try:
            text = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            unreadable += 1
            continue
        size += len(text.encode("utf-8"))
        start, start_cpu = time.perf_counter(), time.process_time()
        flags += scan_text(text, file.name, str(file.relative_to(root)))
        seconds += time.perf_counter() - start
        cpu += time.process_time() - start_cpu
    megabytes = size / 1e6
    kinds = Counter(flag.kind for flag in flags)
    print(f"scanned {len(files) - unreadable} files, {megabytes:.1f} MB ({unreadable} not UTF-8, skipped) in {seconds:.1f} s")
    for flag in flags[:show]:
        print("  " + flag.text())
    if len(flags) > show:
        print(f"  ... {len(flags) - show} more (--show)")
    print("spans by kind: " + (", ".join(f"{k} {v}" for k, v in kinds.most_common()) or "none"))
    print(
        f"{len(flags)} spans, {len(flags) / max(megabytes, 1e-9):.2f} per MB; {megabytes / max(seconds, 1e-9):.2f} MB/s "
        f"({megabytes / max(cpu, 1e-9):.2f} MB/s of CPU time: the figure to compare on a busy machine)"
    )


STARTUP_COMMANDS = (
    ("finetune --help", ["--help"]),
    ("finetune recipe show recipes/quickstart.yaml", ["recipe", "show", "recipes/quickstart.yaml"]),
    ("finetune train (a missing data source)", ["train", "recipes/quickstart.yaml", "data.sources.0.path=/no/such"]),
)


def bench_startup(repeats: int) -> None:
    """Wall and CPU seconds of commands that must answer at once: each a fresh process, median of `repeats`."""
    import resource
    import statistics
    import subprocess

    print(f"{'command':<48} {'wall s':>7} {'cpu s':>7}  (median of {repeats}, fresh process each)")
    for label, argv in STARTUP_COMMANDS:
        walls, cpus = [], []
        for _ in range(repeats):
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            start = time.perf_counter()
            subprocess.run([sys.executable, "-m", "finetune", *argv], capture_output=True, check=False)
            walls.append(time.perf_counter() - start)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpus.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
        print(f"{label:<48} {statistics.median(walls):>7.2f} {statistics.median(cpus):>7.2f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m finetune.dev.bench", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    data = sub.add_parser("data", help="sample-pipeline throughput on a source tree")
    data.add_argument("root", help="a source tree, e.g. the Python standard library")
    data.add_argument("--tokenizer", default="data/tiny-coder", help="tokenizer directory")
    data.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    data.add_argument("--seed", type=int, default=0)
    data.add_argument("--max-chars", type=int, default=16_000)
    data.add_argument("--limit", type=int, default=0, help="use only the first N files (0 = all)")
    import sysconfig

    secrets = sub.add_parser("secrets", help="secret-scrubber hits (false positives) and speed on a source tree")
    secrets.add_argument("root", nargs="?", default=sysconfig.get_paths()["stdlib"], help="default: the stdlib")
    secrets.add_argument("--show", type=int, default=200, help="list at most this many flagged spans")
    from finetune.dev.bench_eval import add_parser as add_eval_parser

    add_eval_parser(sub)
    startup = sub.add_parser("startup", help="how fast commands that load no model answer (run from the repo root)")
    startup.add_argument("--repeats", type=int, default=5)
    rand = sub.add_parser("random-model", help="save a model with seeded random weights from a config (no download)")
    rand.add_argument("config", help="directory with a config.json of the architecture")
    rand.add_argument("--tokenizer", default="data/tiny-coder", help="tokenizer saved next to the weights")
    rand.add_argument("--out", required=True, help="output directory")
    rand.add_argument("--seed", type=int, default=0)
    from finetune.dev.gpu_check import add_arguments as add_gpu_check_arguments

    add_gpu_check_arguments(sub.add_parser("gpu-check", help="the one prepared GPU run (8 minutes); --dry-run plans it"))
    from finetune.dev.bench_peers import add_parser as add_peers_parser

    add_peers_parser(sub)
    for name, text in (
        ("train", "training throughput and peak memory of a recipe"),
        ("compare", "the recipe vs the reference configuration vs plain TRL, same data and model"),
        ("trl", "plain TRL SFTTrainer with its defaults on the recipe's data and model"),
    ):
        train = sub.add_parser(name, help=text)
        train.add_argument("recipe", help="recipe YAML file")
        train.add_argument("overrides", nargs="*", metavar="key=value")
        train.add_argument("--steps", type=int, default=20, help="optimizer steps measured")
        train.add_argument("--warmup", type=int, default=3, help="optimizer steps run first and not measured")
        train.add_argument("--json", help="also write the result to this JSON file")
        train.add_argument("--config-name", default="toolkit", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.command == "gpu-check":
        from finetune.dev.gpu_check import check

        return check(args)
    if args.command == "peers":
        from finetune.dev.bench_peers import peers

        return peers(args)
    if args.command == "startup":
        bench_startup(args.repeats)
        return 0
    if args.command == "eval":
        from finetune.dev.bench_eval import bench_eval

        return bench_eval(args)
    if args.command == "random-model":
        return _random_model(args.config, args.tokenizer, args.out, args.seed)
    if args.command not in ("data", "secrets"):
        return _bench_training(args)
    if not Path(args.root).is_dir():
        print(f"error: {args.root} is not a directory", file=sys.stderr)
        return 2
    if args.command == "secrets":
        bench_secrets(args.root, args.show)
    else:
        bench_data(args.root, args.tokenizer, args.workers, args.seed, args.max_chars, args.limit)
    return 0


def _random_model(config_dir: str, tokenizer_dir: str, out: str, seed: int) -> int:
    """Benchmarks need a model of the real shape, not its weights: build one on the GPU when there is one."""
    import torch
    from transformers import AutoConfig, AutoTokenizer

    from finetune.runtime import seeded_random_model

    start = time.perf_counter()
    config = AutoConfig.from_pretrained(config_dir)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = seeded_random_model(config, seed, device, dtype=torch.bfloat16)
    partial = Path(f"{out}.partial")
    model.save_pretrained(partial)
    AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(partial)
    partial.rename(out)
    params = sum(p.numel() for p in model.parameters())
    print(f"wrote {out}: {params / 1e9:.2f}B parameters, random (seed {seed}), in {time.perf_counter() - start:.0f} s")
    return 0


def _bench_training(args: argparse.Namespace) -> int:
    import warnings

    from finetune.dev.bench_train import bench_plain_trl, bench_toolkit, compare, write_result
    from finetune.errors import UserError

    warnings.filterwarnings("ignore", category=FutureWarning, module=r"transformers\..*")
    try:
        if args.command == "compare":
            compare(args.recipe, args.overrides, args.steps, args.warmup)
        elif args.command == "trl":
            write_result(bench_plain_trl(args.recipe, args.overrides, args.steps, args.warmup), args.json)
        else:
            result = bench_toolkit(args.recipe, args.overrides, args.steps, args.warmup, args.config_name)
            write_result(result, args.json)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
