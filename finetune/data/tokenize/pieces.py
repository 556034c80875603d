"""Text pieces to token ids and back, with or without a SentencePiece tokenizer's start-of-string `▁`.

The SentencePiece trap: a tokenizer with a `▁` dummy prefix (Llama, CodeLlama, aiXcoder) adds a spurious leading
`▁` to every piece encoded on its own, and its decoder drops the first `▁` of what it decodes. CodeLlama's
`encode_infilling` and aiXcoder's inference code avoid the first by encoding such a piece behind a sentinel
character (`☺`) and dropping the sentinel's tokens. FIM samples, chat samples and completion decoding must all
follow one rule, or training and inference see different ids for the same text; this class is that rule. Whether
a tokenizer adds a dummy prefix is measured, not guessed from its class: byte-level BPE tokenizers show no
difference and never get a sentinel.
"""

from __future__ import annotations

from typing import Any

# CodeLlama's `encode_infilling` and aiXcoder's `sess_megatron.py` both use the first; the others are fallbacks
# for a tokenizer that would merge it with the text that follows.
SENTINELS = ("☺", "¤", "§")
_PROBE = "x"


class PieceEncoder:
    """Encodes text pieces as a whole string (`raw`) or as the continuation of a sequence (`continuation`).

    `parse_special=False` (FIM samples) keeps a user's `<fim_prefix>` in code as plain text; `True` (rendered chat
    templates) turns special-token strings into their single ids, as `apply_chat_template` does.
    """

    def __init__(self, tokenizer: Any, parse_special: bool = False) -> None:
        self._tokenizer = tokenizer
        self._parse_special = parse_special
        self._special = tuple(
            sorted({*tokenizer.all_special_tokens, *tokenizer.get_added_vocab()}, key=len, reverse=True)
        )
        self._sentinel_ids = {s: self.raw(s) for s in SENTINELS}
        self.adds_dummy_prefix = self._behind_sentinel(_PROBE) != self.raw(_PROBE)

    def raw(self, text: str) -> list[int]:
        """`text` as the tokenizer encodes a whole string: a SentencePiece one adds its dummy `▁` here."""
        if not text:
            return []
        out = self._tokenizer(text, add_special_tokens=False, split_special_tokens=not self._parse_special)
        return list(out["input_ids"])

    def continuation(self, text: str) -> list[int]:
        """`text` as it continues what came before: no dummy `▁`, via the sentinel only if the tokenizer needs it."""
        if not text or not self.adds_dummy_prefix:
            return self.raw(text)
        if self._parse_special and text.startswith(self._special):
            return self.raw(text)  # a special token first: the tokenizer adds no dummy prefix in front of it
        return self._behind_sentinel(text)

    def decode_continuation(self, ids: list[int]) -> str:
        """Decode ids that continue a prompt: behind the sentinel, so a `▁`-decoder keeps their first space."""
        kwargs = {"skip_special_tokens": False, "clean_up_tokenization_spaces": False}
        if not ids or not self.adds_dummy_prefix:
            return self._tokenizer.decode(ids, **kwargs)
        sentinel_ids = self._sentinel_ids[SENTINELS[0]]
        text = self._tokenizer.decode(sentinel_ids + list(ids), **kwargs)
        head = self._tokenizer.decode(sentinel_ids, **kwargs)
        return text[len(head) :] if text.startswith(head) else text

    def _behind_sentinel(self, text: str) -> list[int]:
        """Encode sentinel + text and drop the sentinel's ids (CodeLlama's `encode_infilling`)."""
        for sentinel, sentinel_ids in self._sentinel_ids.items():
            ids = self.raw(sentinel + text)
            if ids[: len(sentinel_ids)] == sentinel_ids:
                return ids[len(sentinel_ids) :]
        raise RuntimeError(f"cannot encode {text[:40]!r} without a leading space: every sentinel merged with it")
