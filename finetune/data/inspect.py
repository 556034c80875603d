"""Human views of the data: samples as JSON Lines (`finetune data fim`) and coloured token views (`data inspect`)."""

from __future__ import annotations

from finetune.data.tokenize.encoder import SampleEncoder, render_text
from finetune.data.types import IGNORE_INDEX, Sample

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
