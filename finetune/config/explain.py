"""Words for people: a validation error as one line naming the key, the problem and the nearest valid choice, and
every key of the schema with its type, default and description (`finetune recipe keys`)."""

from __future__ import annotations

import difflib
import types
import typing
from typing import Annotated, Any, Union

from pydantic import BaseModel

from finetune.config.schema import Recipe


def _unwrap(annotation: Any) -> list[Any]:
    """The classes an annotation may hold (Optional/Union/list/Annotated peeled off)."""
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        return _unwrap(typing.get_args(annotation)[0])
    if origin in (Union, types.UnionType, list):
        return [cls for arg in typing.get_args(annotation) for cls in _unwrap(arg)]
    return [annotation]


def _models_at(loc: tuple[Any, ...]) -> tuple[list[type[BaseModel]], list[str]]:
    """Walk the schema along an error location; return candidate models there and the readable key path."""
    models: list[type[BaseModel]] = [Recipe]
    path: list[str] = []
    for part in loc:
        if isinstance(part, str) and "[" in part:  # pydantic names the union member it tried: not a key
            continue
        if isinstance(part, int):
            path.append(str(part))
            continue
        by_tag = [
            m for m in models if m.model_fields.get("type") is not None and m.model_fields["type"].default == part
        ]
        if by_tag:
            models = by_tag
            continue
        field = next((m.model_fields[part] for m in models if part in m.model_fields), None)
        path.append(part)
        if field is None:
            return models, path
        models = [cls for cls in _unwrap(field.annotation) if isinstance(cls, type) and issubclass(cls, BaseModel)]
        if not models:
            models = []
    return models, path


def _nearest(word: str, choices: list[str]) -> str:
    match = difflib.get_close_matches(word, choices, n=1, cutoff=0.5)
    return f"; did you mean {match[0]!r}?" if match else ""


def describe_error(error: dict[str, Any]) -> str:
    loc = tuple(error.get("loc", ()))
    kind = error.get("type", "")
    models, path = _models_at(loc)
    key = ".".join(path) or "(top level)"
    if kind == "extra_forbidden":
        parent_models, _ = _models_at(loc[:-1])
        valid = sorted({name for m in parent_models for name in m.model_fields})
        hint = _nearest(str(loc[-1]), valid) or f"; valid keys here: {', '.join(valid)}"
        return f"unknown key {key!r}{hint} (`finetune recipe keys` lists every key)"
    if kind == "missing":
        return f"missing required key {key!r}: add it to the recipe or pass {key}=VALUE"
    value = error.get("input")
    if kind == "literal_error":
        expected = error.get("ctx", {}).get("expected", "")
        choices = [c.strip().strip("'") for c in expected.replace(" or ", ",").split(",") if c.strip()]
        return f"{key}={value!r} is not valid: choose one of {', '.join(choices)}{_nearest(str(value), choices)}"
    if kind == "union_tag_invalid":
        tags = error.get("ctx", {}).get("expected_tags", "")
        return f"{key}: unknown source type {error.get('ctx', {}).get('tag')!r}; choose one of {tags}"
    if kind == "value_error":
        where = f"{key}: " if path else ""
        return where + error.get("msg", "").removeprefix("Value error, ")
    problem = error.get("msg", kind).replace("Input should be", "it must be")
    return f"{key}={value!r} is not valid: {problem}"


def iter_keys(model: type[BaseModel] = Recipe, prefix: str = "") -> typing.Iterator[tuple[str, str, str, str]]:
    """(dotted key, type, default, description) for every key of the schema, sections flattened."""
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        sub = [c for c in _unwrap(field.annotation) if isinstance(c, type) and issubclass(c, BaseModel)]
        if len(sub) == 1 and typing.get_origin(field.annotation) is not list:
            yield from iter_keys(sub[0], f"{key}.")
            continue
        if len(sub) > 1:  # a list of tagged sources: document each kind
            for cls in sub:
                tag = cls.model_fields["type"].default
                yield from iter_keys(cls, f"{key}[type={tag}].")
            continue
        default = "(required)" if field.is_required() else repr(field.get_default(call_default_factory=True))
        yield key, _type_name(field.annotation), default, field.description or ""


def _type_name(annotation: Any) -> str:
    text = str(annotation).replace("typing.", "")
    return text.replace("<class '", "").replace("'>", "")
