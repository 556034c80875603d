"""Human views of the data: samples as JSON Lines (`finetune data fim`) and coloured token views (`data inspect`)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from finetune.data.tokenize.families import SampleEncoder, render_text
from finetune.data.types import IGNORE_INDEX, Sample
from finetune.io import make_temp_file

MODES = {"structured": (1.0, 0.0), "random": (0.0, 1.0), "mixed": (0.5, 0.5)}


def sample_kind(sample: Sample) -> str:
    """plain, structured (the middle is a syntax node) or random (the middle is cut at random characters)."""
    if sample.mode == "plain":
        return "plain"
    return "structured" if sample.node_type else "random"


def sample_record(sample: Sample, family: str | None) -> dict:
    """What `finetune data fim` writes for one sample: where it comes from and exactly what the model sees."""
    record = {
        "path": sample.path,
        "language": sample.language,
        "mode": sample_kind(sample),
        "order": "spm" if sample.spm else "psm",
        "node_type": sample.node_type,
        "prefix": sample.prefix if sample.mode == "fim" else sample.text,
        "middle": sample.middle,
        "suffix": sample.suffix,
    }
    if family:
        record["text"] = render_text(sample, family)
    return record


def write_jsonl_atomic(path: Path, records) -> int:
    """Write records to `path` through a temporary file in the same folder; returns how many were written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = make_temp_file(path)
    count = 0
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            for record in records:
                out.write(json.dumps(record, ensure_ascii=False) + "\n")
                count += 1
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return count


def token_view(encoder: SampleEncoder, row: dict[str, list[int]]):
    """A rich Text of the decoded ids: special tokens highlighted, tokens outside the loss dimmed."""
    from rich.text import Text

    special = set(encoder.tokenizer.all_special_ids) | set(encoder.stop_token_ids)
    text = Text()
    group: list[int] = []
    style = None

    def flush() -> None:
        if group:
            text.append(encoder.tokenizer.decode(group, clean_up_tokenization_spaces=False), style=style)

    for token, label in zip(row["input_ids"], row["labels"], strict=True):
        if token in special:
            token_style = "bold magenta" if label != IGNORE_INDEX else "magenta"
        else:
            token_style = "green" if label != IGNORE_INDEX else "dim"
        if token_style != style or token in special:
            flush()
            group, style = [], token_style
        group.append(token)
    flush()
    return text
