"""A cache of prepared (tokenized) datasets, so `finetune prepare` once and every `finetune train` after it reuse it.

The key covers everything the samples depend on: the recipe's data section and seed, the model family, the
tokenizer's vocabulary and rules, the toolkit version and a hash of the data code (so an edit between releases,
such as a new split rule, is not served the old samples), and a fingerprint of every input file (path, size,
mtime). Change any of them and the key changes; nothing is ever served stale.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from datasets import load_from_disk

import finetune
from finetune.config.schema import Recipe
from finetune.data.pipeline import PreparedData
from finetune.data.sft.mixture import has_instructions
from finetune.data.tokenize.setup import TokenizerSetup, load_encoder
from finetune.io import make_temp_dir, sweep_stale


def default_cache_dir() -> Path:
    return Path(os.environ.get("FINETUNE_CACHE") or Path.home() / ".cache" / "finetune" / "prepared")


@functools.cache
def _data_code_hash() -> str:
    """A hash of the source of `finetune.data`, the code that turns a recipe into samples."""
    digest = hashlib.sha256()
    root = Path(__file__).resolve().parent
    for file in sorted(root.rglob("*.py")):
        digest.update(file.relative_to(root).as_posix().encode() + b"\0" + file.read_bytes())
    return digest.hexdigest()


def _source_fingerprint(path: str) -> list:
    """(relative path, size, mtime) of every file under `path` (or of the file itself)."""
    root = Path(path)
    if root.is_file():
        stat = root.stat()
        return [[root.name, stat.st_size, stat.st_mtime_ns]]
    entries = []
    for directory, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(files):
            full = Path(directory, name)
            try:
                stat = full.stat()
            except OSError:
                continue
            entries.append([full.relative_to(root).as_posix(), stat.st_size, stat.st_mtime_ns])
    return entries


def cache_key(recipe: Recipe, family: str, tokenizer) -> str:
    tokenizer_state = tokenizer.backend_tokenizer.to_str() if hasattr(tokenizer, "backend_tokenizer") else ""
    material = {
        "version": finetune.__version__,
        "code": _data_code_hash(),
        "seed": recipe.seed,
        "family": family,
        "data": recipe.data.model_dump(mode="json", by_alias=True, exclude={"cache_dir"}),
        "tokenizer": hashlib.sha256(tokenizer_state.encode()).hexdigest(),
        "special": sorted(tokenizer.get_added_vocab().items()),
        "inputs": [_source_fingerprint(source.path) for source in recipe.data.sources],
    }
    if has_instructions(recipe.data):
        # the chat template (set on the tokenizer by load_encoder) and the benchmarks shape the SFT samples too
        material["chat_template"] = getattr(tokenizer, "chat_template", None)
        material["benchmarks"] = [_source_fingerprint(p) for p in recipe.data.sft.decontaminate.benchmarks]
    return hashlib.sha256(json.dumps(material, sort_keys=True, default=str).encode()).hexdigest()[:24]


def cache_path(recipe: Recipe, key: str) -> Path:
    return (Path(recipe.data.cache_dir) if recipe.data.cache_dir else default_cache_dir()) / key


def load_cached(path: Path) -> PreparedData | None:
    """The prepared data stored at `path`, or None if there is no complete entry."""
    report_file = path / "report.json"
    if not report_file.is_file():
        return None
    report = json.loads(report_file.read_text(encoding="utf-8"))
    with contextlib.suppress(OSError):  # a read-only shared cache still serves
        report_file.touch()  # its mtime is the entry's last use, for `finetune cache prune --older-than`
    evaluation = load_from_disk(str(path / "eval")) if (path / "eval").is_dir() else None
    return PreparedData(
        train=load_from_disk(str(path / "train")),
        eval=evaluation,
        ingest=report["ingest"],
        ingest_lines=report["ingest_summary"],
        eval_paths=report["eval_paths"],
        stats=report["samples"],
    )


def save_cached(path: Path, data: PreparedData) -> list[str]:
    """Write the entry under a temporary name and rename it into place (report.json last marks it complete).

    Two prepares of the same recipe may race: the first rename wins and the loser discards its copy (both are the
    same data, by the key). Returns what was cleaned up after killed prepares, for the summary.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    swept = sweep_stale(path.parent)
    tmp = make_temp_dir(path)
    try:
        data.train.save_to_disk(str(tmp / "train"))
        if data.eval is not None:
            data.eval.save_to_disk(str(tmp / "eval"))
        (tmp / "report.json").write_text(json.dumps(data.report(), indent=2) + "\n", encoding="utf-8")
        try:
            tmp.rename(path)
        except OSError:  # the entry exists: another prepare finished first, or an unusable leftover
            if not (path / "report.json").is_file():
                shutil.rmtree(path, ignore_errors=True)
                tmp.rename(path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return swept


def prepare_cached(recipe: Recipe, setup: TokenizerSetup) -> tuple[PreparedData, Path, bool]:
    """Prepared data for the recipe from the cache, or prepared now and cached; returns (data, entry, was_cached).

    Leftovers of killed prepares that this one removed are added to the data's ingest lines (the summary shows them).
    """
    from finetune.data.pipeline import prepare_data

    path = cache_path(recipe, cache_key(recipe, setup.family, setup.tokenizer))
    cached = load_cached(path) if recipe.data.cache else None
    if cached is not None:
        return cached, path, True
    data = prepare_data(recipe, setup.encoder, setup.chat)
    if recipe.data.cache:
        swept = save_cached(path, data)
        data = load_cached(path) or data
        data.ingest_lines = [*data.ingest_lines, *swept]
    return data, path, False


@dataclass
class Prepared:
    """A recipe's tokenizer set-up and tokenized data, and the cache entry they came from (or went to)."""

    setup: TokenizerSetup
    data: PreparedData
    entry: Path
    cached: bool  # True: read from the cache; False: prepared now


def prepare(recipe: Recipe, state=None) -> Prepared:
    """The recipe's tokenizer and tokenized data, from the cache or prepared now and cached.

    Under several processes (`state`, an accelerate PartialState) the main one prepares and caches first; the others
    then read its cache entry.
    """
    setup = load_encoder(recipe)
    with state.main_process_first() if state is not None else contextlib.nullcontext():
        data, entry, cached = prepare_cached(recipe, setup)
    return Prepared(setup, data, entry, cached)
