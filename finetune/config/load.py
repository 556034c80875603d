"""Reading a recipe: YAML, `base:` inheritance (relative to the recipe file), dotted `key=value` overrides, validation.

Every problem is one `UserError` line that names the file, the key and the fix (wording in `explain.py`).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from finetune.config.explain import describe_error
from finetune.config.schema import Recipe
from finetune.errors import UserError


def _read_yaml(path: Path) -> dict[str, Any]:
    if path.is_dir():
        raise UserError(f"recipe {path} is a folder: give a recipe YAML file, e.g. {path / 'lora.yaml'}")
    if not path.is_file():
        raise UserError(f"recipe file {path} not found: check the path (recipes live under recipes/)")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise UserError(f"recipe {path}{where}: YAML syntax error: {problem}; fix the YAML there") from None
    except UnicodeDecodeError:
        raise UserError(f"recipe {path} is not UTF-8 text: save it as UTF-8") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"recipe {path} must be a mapping of keys to values, not a {type(data).__name__}")
    return data


def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_raw(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The recipe as a plain dict with every `base:` resolved (bases first, the file's own keys win)."""
    path = Path(path)
    resolved = path.resolve()
    if resolved in _seen:
        chain = " -> ".join(str(p) for p in (*_seen, resolved))
        raise UserError(f"recipe inheritance loops: {chain}; remove one of the `base:` keys")
    data = _read_yaml(path)
    base = data.pop("base", None)
    if base is None:
        return data
    if not isinstance(base, str):
        raise UserError(f"recipe {path}: `base` must be a path to another recipe, got {base!r}")
    base_path = (path.parent / base) if not Path(base).is_absolute() else Path(base)
    if not base_path.is_file():
        raise UserError(f"recipe {path}: base recipe {base_path} not found; `base` is relative to the recipe's folder")
    return _deep_merge(load_raw(base_path, (*_seen, resolved)), data)


def parse_override(text: str) -> tuple[list[str], Any]:
    """`a.b.c=value` -> (["a", "b", "c"], value parsed as YAML so numbers, booleans and lists get their types)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise UserError(f"override {text!r} is not key=value: write it like training.max_steps=50")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Set each dotted key; numeric parts index into lists (data.sources.0.path=...)."""
    data = copy.deepcopy(data)
    for item in overrides:
        keys, value = parse_override(item)
        node: Any = data
        for depth, key in enumerate(keys):
            last = depth == len(keys) - 1
            if isinstance(node, list):
                if not key.isdigit() or int(key) >= len(node):
                    raise UserError(f"override {item!r}: {'.'.join(keys[:depth])} has no item {key}")
                if last:
                    node[int(key)] = value
                else:
                    node = node[int(key)]
                continue
            if last:
                node[key] = value
            else:
                child = node.get(key)
                if not isinstance(child, (dict, list)):
                    child = node[key] = {} if child is None else child
                if not isinstance(child, (dict, list)):
                    raise UserError(f"override {item!r}: {'.'.join(keys[: depth + 1])} is a value, not a section")
                node = child
    return data


def load_recipe(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """Read, inherit, override and validate a recipe; every problem is one `UserError` line."""
    data = apply_overrides(load_raw(path), list(overrides))
    return validate_recipe(data, source=str(path))


def validate_recipe(data: dict[str, Any], source: str = "recipe") -> Recipe:
    try:
        return Recipe.model_validate(data)
    except ValidationError as exc:
        raise UserError(f"{source}: {describe_error(exc.errors()[0])}") from None


def recipe_to_yaml(recipe: Recipe) -> str:
    """The fully resolved recipe as YAML, in schema order, for humans and for reproducing a run."""
    return yaml.safe_dump(recipe.model_dump(mode="json", by_alias=True), sort_keys=False, allow_unicode=True, width=120)
