"""torch's sdpa run once per document of a packed batch: flash-attention's varlen idea without flash-attn.

TRL's padding-free collator flattens a packed batch into one sequence and passes the document boundaries
(`cu_seq_lens_q`) with it. flash-attention's varlen kernels compute each document's causal block alone. Plain sdpa
instead gets one dense block-diagonal mask over the whole sequence: transformers builds it from the position ids
(33 ms for 800 flattened tokens on the development CPU, every forward), sdpa computes every block of it, masked or
not, and the explicit mask keeps sdpa off its causal kernel that skips the upper triangle. `sdpa_varlen` builds no
mask when there is no padding and calls sdpa per document with `is_causal=True`, the documents taken from
`cu_seq_lens_q` or else from where the position ids restart at 0. A call with a padding mask (batched generation,
padded eval batches) or a KV cache is transformers' sdpa unchanged, with the mask sdpa would get.

Only for models whose every layer attends causally to the whole sequence (`supports`): sliding windows or chunked
attention would need the mask this skips.
"""

from __future__ import annotations

import torch

NAME = "sdpa_varlen"


def supports(config) -> bool:
    """Whether per-document causal attention is all the model's attention (no sliding window, no chunks)."""
    if any(kind != "full_attention" for kind in getattr(config, "layer_types", None) or []):
        return False
    if getattr(config, "attention_chunk_size", None):
        return False
    return getattr(config, "use_sliding_window", True) is False or getattr(config, "sliding_window", None) is None


def sdpa_varlen_forward(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None, **kwargs):
    """Attention for `AttentionInterface`: one sdpa call per document of each row when nothing is padded."""
    from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward

    rows, length = query.shape[0], query.shape[2]
    if attention_mask is not None or length != key.shape[2] or length == 1:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout, scaling, **kwargs)
    groups = getattr(module, "num_key_value_groups", 1)
    if groups > 1:  # CPU's fused sdpa takes no grouped heads; neither does transformers' sdpa
        key, value = repeat_kv(key, groups), repeat_kv(value, groups)

    def attend(q, k, v):
        return torch.nn.functional.scaled_dot_product_attention(
            q, k, v, dropout_p=dropout, scale=scaling, is_causal=True
        )

    documents = _cached_document_lengths(kwargs, rows, length)
    if all(len(lengths) == 1 for lengths in documents):  # one document per row: one call for the whole batch
        return attend(query, key, value).transpose(1, 2).contiguous(), None
    out = []
    for row, lengths in enumerate(documents):
        # split, not slicing: its backward is one concatenation instead of a zero-filled copy per slice
        pieces = zip(*(t[row : row + 1].split(lengths, dim=2) for t in (query, key, value)), strict=True)
        out.append(torch.cat([attend(q, k, v) for q, k, v in pieces], dim=2))
    return torch.cat(out).transpose(1, 2).contiguous(), None


_last: tuple[object, tuple[int, int], list[list[int]]] = (None, (0, 0), [])


def _cached_document_lengths(kwargs: dict, rows: int, length: int) -> list[list[int]]:
    """`document_lengths`, read once per forward: every layer gets the same boundary tensor, and reading it back
    to the host is a device sync on a GPU."""
    global _last
    source = kwargs.get("cu_seq_lens_q")
    if source is None:
        source = kwargs.get("position_ids")
    if source is None or source is not _last[0] or (rows, length) != _last[1]:
        _last = (source, (rows, length), document_lengths(kwargs, rows, length))
    return _last[2]


def document_lengths(kwargs: dict, rows: int, length: int) -> list[list[int]]:
    """Each row's document lengths: from `cu_seq_lens_q` (one flattened row), else from where the position ids
    restart at 0, else the whole row."""
    bounds = kwargs.get("cu_seq_lens_q")
    if bounds is not None:
        edges = bounds.tolist()
        if rows != 1 or edges[0] != 0 or edges[-1] != length or sorted(edges) != edges:
            raise ValueError(f"cu_seq_lens_q {edges} does not split one sequence of {length} tokens")
        return [[end - start for start, end in zip(edges, edges[1:], strict=False) if end > start]]
    positions = kwargs.get("position_ids")
    if positions is None:
        return [[length]] * rows
    return [_row_documents(row) for row in positions.expand(rows, -1).tolist()]


def _row_documents(positions: list[int]) -> list[int]:
    """Document lengths of one row of position ids; a trailing run of 0s (TRL's padding) is one segment, whose
    outputs nothing reads, instead of one sdpa call per padded position."""
    end = len(positions)
    while end > 1 and positions[end - 1] == 0 and positions[end - 2] == 0:
        end -= 1
    starts = [0, *(i for i in range(1, end) if positions[i] == 0), len(positions)]
    return [stop - start for start, stop in zip(starts, starts[1:], strict=False)]


def _mask(*args, **kwargs):
    """sdpa's mask where there is padding; none otherwise (the documents are found from the boundaries instead)."""
    from transformers.masking_utils import sdpa_mask

    return None if kwargs.get("attention_mask") is None else sdpa_mask(*args, **kwargs)


def register() -> str:
    """Make `sdpa_varlen` a name transformers accepts; returns the name."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS

    AttentionInterface.register(NAME, sdpa_varlen_forward)
    ALL_MASK_ATTENTION_FUNCTIONS.register(NAME, _mask)
    return NAME
