"""Check every path a recipe reads before anything heavy happens.

A missing data folder used to surface only after the tokenizer, bitsandbytes and DeepSpeed had loaded (minutes on a
big model); a typo should cost a second. Everything here is `pathlib` only, so `train`, `prepare`, `data inspect` and
`launch-check` can call it first. The loaders keep their own checks for the Python API and for races.
"""

from __future__ import annotations

from pathlib import Path

from finetune.config.schema import Recipe
from finetune.errors import UserError

# What each source type reads: a file, a folder, or either.
_SOURCE_KINDS = {"repo": "dir", "jsonl": "file", "text": "any", "dataset": "any", "instructions": "any"}
_KIND_WORDS = {"dir": "a folder", "file": "a file", "any": "a file or a folder"}


def looks_like_path(name: str) -> bool:
    """A model name that is meant as a local path (a hub name is `org/name`)."""
    return name.startswith((".", "/", "~")) or Path(name).exists() or name.count("/") > 1


def check_model_location(name: str) -> None:
    """Fail early, in one line, when a local model directory is missing."""
    path = Path(name).expanduser()
    if looks_like_path(name) and not path.is_dir():
        raise UserError(f"model {name} not found: model.name_or_path must be a model directory or a hub name")
    if path.is_dir() and not (path / "config.json").is_file():
        raise UserError(f"model directory {name} has no config.json: point model.name_or_path at a saved model")


def check_recipe_inputs(recipe: Recipe) -> None:
    """Every input the recipe names exists and is of the right kind; the first problem is one `UserError`."""
    check_model_location(recipe.model.name_or_path)
    for index, source in enumerate(recipe.data.sources):
        _check_source(index, source.type, source.path)
    for benchmark in recipe.data.sft.decontaminate.benchmarks:
        if not Path(benchmark).expanduser().is_file():
            raise UserError(f"benchmark file {benchmark} not found: check data.sft.decontaminate.benchmarks")
    template = recipe.data.sft.chat_template
    if template and "{" not in template and not Path(template).is_file():  # the rule of chat.resolve_template
        raise UserError(f"data.sft.chat_template {template!r} is neither Jinja text nor an existing file")
    if recipe.data.cache_dir and Path(recipe.data.cache_dir).expanduser().is_file():
        raise UserError(f"data.cache_dir {recipe.data.cache_dir} is a file: give a folder for the prepared-data cache")


def _check_source(index: int, kind: str, path_text: str) -> None:
    key = f"data.sources.{index}.path"
    path = Path(path_text).expanduser()
    wanted = _SOURCE_KINDS[kind]
    if not path.exists():
        raise UserError(f"{key}: {kind} source {path_text} does not exist: check the path (relative to the current folder)")
    if (wanted == "dir" and not path.is_dir()) or (wanted == "file" and not path.is_file()):
        raise UserError(f"{key}: {kind} source {path_text} must be {_KIND_WORDS[wanted]}: check the path or the type")
