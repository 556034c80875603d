"""Benchmarks that print numbers: `python -m finetune.bench data DIR [--workers N ...]`.

`data` measures the sample pipeline on a source tree, per stage (read, parse, select, encode = format + tokenize)
for random and structured FIM, then end to end with several worker processes.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from finetune.data.fim import document_rng, random_fim
from finetune.data.sample import Document

_WORKER_STATE: dict = {}


def _load_encoder(tokenizer_dir: str):
    from transformers import AutoTokenizer

    from finetune.data.formats import SampleEncoder, detect_family

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    return SampleEncoder(tokenizer, detect_family(tokenizer))


def _samples(docs: list[Document], mode: str, seed: int, max_chars: int) -> list:
    from finetune.data.transforms import make_samples
    from finetune.recipe import FimSection

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
    from finetune.data.sfim import find_spans, structured_fim

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
    from finetune.data.repo import walk_repository

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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m finetune.bench", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    data = sub.add_parser("data", help="sample-pipeline throughput on a source tree")
    data.add_argument("root", help="a source tree, e.g. the Python standard library")
    data.add_argument("--tokenizer", default="data/tiny-llama", help="tokenizer directory")
    data.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    data.add_argument("--seed", type=int, default=0)
    data.add_argument("--max-chars", type=int, default=16_000)
    data.add_argument("--limit", type=int, default=0, help="use only the first N files (0 = all)")
    args = parser.parse_args(argv)
    if not Path(args.root).is_dir():
        print(f"error: {args.root} is not a directory", file=sys.stderr)
        return 2
    bench_data(args.root, args.tokenizer, args.workers, args.seed, args.max_chars, args.limit)
    return 0


if __name__ == "__main__":
    sys.exit(main())
