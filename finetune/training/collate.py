"""Batches of packed rows where each document attends only to itself, with or without flattening the batch.

TRL's padding-free collator flattens a whole batch into one sequence with its document boundaries. flash-attention's
varlen kernels and `varlen_sdpa` (sdpa once per document) compute only each document's own block. Eager and plain
sdpa would get a dense mask over the flattened sequence instead, so a batch of B rows of length L costs (B*L)^2 rather
than B*L^2: `PackedRowsCollator` keeps the rows for them (position ids restart at each document, no attention mask
is passed, and transformers derives a per-row block-diagonal causal mask from the position ids).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

from finetune.data.types import IGNORE_INDEX

PackingLayout = Literal["flatten", "rows"]


@dataclass
class PackedRowsCollator(DataCollatorForLanguageModeling):
    """TRL's collator for bfd-packed rows, returning per-document position ids and no attention mask."""

    return_position_ids: bool = True

    def torch_call(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        batch = super().torch_call(examples)
        # Rows are padded on the right, and the causal mask already keeps real tokens from seeing later pads; an
        # attention mask would stop transformers from reading document boundaries out of the position ids.
        batch.pop("attention_mask", None)
        starts = batch["position_ids"] == 0
        starts[:, 0] = False
        batch["labels"][starts] = IGNORE_INDEX  # the first token of a document is not predicted from the previous one
        return batch


def packing_layout(choice: str, attn_implementation: str, on_gpu: bool) -> PackingLayout:
    """'auto': flatten (no padding at all) with a kernel that attends each document alone (flash-attention's varlen
    kernels, `sdpa_varlen`), and on a GPU; rows otherwise, where a dense mask over a flattened batch would grow with
    the square of its size."""
    if choice != "auto":
        return choice  # type: ignore[return-value]
    alone = attn_implementation.startswith("flash_attention") or attn_implementation == "sdpa_varlen"
    return "flatten" if alone or on_gpu else "rows"


def packed_rows_collator(tokenizer) -> PackedRowsCollator:
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return PackedRowsCollator(pad_token_id=pad)


def group_rows_by_length(trainer) -> None:
    """Put packed rows of similar length in the same micro-batch, so each batch pads to its longest row by little.

    Rows are padded per batch, and best-fit packing leaves rows of very different lengths (a full bin next to a
    last, half-full one): drawn at random, the pairs padded 8.6% of the quickstart's positions. transformers'
    length-grouped sampler keeps the order random across groups of one optimizer step's rows and sorts within them.
    The lengths come from the Arrow column (no pass over the rows in Python).
    """
    import pyarrow.compute as pc
    from datasets import Dataset

    dataset = trainer.train_dataset
    if not isinstance(dataset, Dataset):  # a stream has no lengths to sort by
        return
    lengths = pc.list_value_length(dataset.with_format("arrow")["input_ids"]).to_pylist()
    trainer.train_dataset = dataset.add_column(trainer.args.length_column_name, lengths)
    trainer.args.train_sampling_strategy = "group_by_length"


def count_tokens(inputs: dict[str, Any]) -> tuple[int, int, int]:
    """(real tokens, all positions, documents) of a batch as the model receives it, in any layout.

    Padded batches carry an attention mask. Packed batches carry position ids that restart at 0 for each document;
    a packed row's padding is its trailing run of zero positions (TRL pads position ids with 0), which a real
    document only ends in when it is one token long: then that token is counted as padding, a negligible error.
    """
    input_ids = inputs["input_ids"]
    total = input_ids.numel()
    mask, positions = inputs.get("attention_mask"), inputs.get("position_ids")
    if mask is not None and mask.dim() == 2:  # != 0: packed masks elsewhere (axolotl) number the documents 1, 2, ...
        return int((mask != 0).sum()), total, input_ids.shape[0]
    if positions is None:
        return total, total, input_ids.shape[0]
    starts = positions == 0
    length = positions.shape[-1]
    has_nonzero = (~starts).any(-1)
    last_nonzero = length - 1 - (~starts).flip(-1).int().argmax(-1)
    pads = torch.where(has_nonzero, length - 1 - last_nonzero, torch.full_like(last_nonzero, length))
    return total - int(pads.sum()), total, int(starts.sum()) - int(pads.sum())


class TokenCounter:
    """Counts what the model's training forwards receive (`count_tokens`), through a forward pre-hook, so the
    metrics and the benchmark count real tokens the same way in every batch layout."""

    def __init__(self) -> None:
        self.real = self.total = self.documents = 0
        self._handle = None

    def attach(self, model) -> None:
        if self._handle is None:
            self._handle = model.register_forward_pre_hook(self.count, with_kwargs=True)

    def detach(self) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def count(self, module, args, kwargs) -> None:
        if module.training and "input_ids" in kwargs:
            real, total, documents = count_tokens(kwargs)
            self.real += real
            self.total += total
            self.documents += documents
