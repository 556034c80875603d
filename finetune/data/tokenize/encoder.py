"""Samples to ids in one family's prompt format.

A `Sample` arrives as text segments; `SampleEncoder` turns it into `input_ids` + `labels` laid out exactly as the
family's own inference code lays out a completion request, so that what the model is trained on is what it is
asked at serving time. Special tokens are always their single ids; text pieces are tokenized on their own with
special-token parsing switched off, so user code that contains e.g. `<fim_prefix>` stays plain text.

The SentencePiece trap (a spurious leading `▁` on every piece encoded on its own) is handled by
`pieces.PieceEncoder`, and only where the family's inference code avoids it too: suffix and middle everywhere; the
prefix keeps its leading `▁` for CodeLlama and aiXcoder, whose inference encodes it as the start of a string.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any, Literal

from finetune.data.tokenize.families import aixcoder_header, get_family, vocab_of
from finetune.data.tokenize.pieces import PieceEncoder
from finetune.data.types import IGNORE_INDEX, Sample
from finetune.errors import UserError

LossOn = Literal["all", "middle"]


class SampleEncoder:
    """Turns `Sample`s into `input_ids` + `labels` in one family's layout.

    Layouts (P/S/M = the family's prefix/suffix/middle tokens, E = its end token, H = aiXcoder's header):
    plain `[BOS] H text EOS`; PSM `[BOS] P H prefix S suffix M middle E`; SPM `[BOS] P S suffix M H prefix
    middle E` (aiXcoder's and CodeLlama's inference order, and StarCoder's training SPM; used for all families).
    BOS is never in the loss: nothing predicts it, and under packing it would teach "BOS follows EOS".
    `loss_on="middle"` keeps only the middle and E in the loss of FIM samples; plain samples are always whole.
    """

    def __init__(self, tokenizer: Any, family: str, loss_on: LossOn = "all") -> None:
        if loss_on not in ("all", "middle"):
            raise UserError(f"loss_on is {loss_on!r}: set it to 'all' or 'middle'")
        self.tokenizer = tokenizer
        self.family = get_family(family)
        self.loss_on = loss_on
        self.pieces = PieceEncoder(tokenizer)
        vocab = vocab_of(tokenizer)
        fam = self.family
        self.prefix_id, self.suffix_id, self.middle_id = (
            self._require(vocab, t) for t in (fam.prefix, fam.suffix, fam.middle)
        )
        self.eos_id = self._special_id(vocab, tokenizer.eos_token_id, fam.eos, "EOS")
        self.bos_id = self._special_id(vocab, tokenizer.bos_token_id, fam.bos, "BOS") if fam.uses_bos else None
        self.end_id = self._require(vocab, fam.end) if fam.end else self.eos_id
        extra = [vocab[t] for t in (fam.pad, fam.repo_name, fam.file_sep) if t and t in vocab]
        ids = [self.eos_id, self.end_id, self.prefix_id, self.suffix_id, self.middle_id, *extra]
        self._stop_ids = list(dict.fromkeys(ids))
        self.has_repo_tokens = bool(fam.repo_name and fam.file_sep and {fam.repo_name, fam.file_sep} <= vocab.keys())

    def _require(self, vocab: dict[str, int], token: str) -> int:
        """The id of one of the family's tokens; a UserError pointing at the fix when the tokenizer lacks it."""
        if token not in vocab:
            raise UserError(
                f"the tokenizer lacks the {self.family.name} token {token!r}: set model.add_fim_tokens=true to add "
                "it, or set model.family to the family this model was trained with"
            )
        return vocab[token]

    def _special_id(self, vocab: dict[str, int], own: int | None, usual: str | None, what: str) -> int:
        """The tokenizer's own BOS/EOS id, or the family's usual token when the tokenizer names none."""
        if own is not None:
            return own
        if usual is None or usual not in vocab:
            raise UserError(f"the tokenizer has no {what} token: set it in the tokenizer config (e.g. {usual!r})")
        return vocab[usual]

    @property
    def stop_token_ids(self) -> list[int]:
        """Ids that end a completion: EOS, the end token, every FIM token, and the family's pad/repo tokens."""
        return list(self._stop_ids)

    def _bos(self) -> list[int]:
        return [self.bos_id] if self.bos_id is not None else []

    def _header(self, path: str, language: str) -> str:
        return aixcoder_header(path, language) if self.family.header else ""

    def _prefix_ids(self, text: str) -> list[int]:
        """The prefix (with any header) as the family's inference encodes it."""
        return self.pieces.raw(text) if self.family.prefix_space else self.pieces.continuation(text)

    def infill_prompt_ids(
        self, prefix: str, suffix: str, path: str = "", language: str = "", spm: bool | None = None
    ) -> list[int]:
        """The ids the family's inference code sends to fill the gap between `prefix` and `suffix`."""
        spm = self.family.default_spm if spm is None else spm
        pre = self._prefix_ids(self._header(path, language) + prefix)
        suf = self.pieces.continuation(suffix)
        if spm:
            return [*self._bos(), self.prefix_id, self.suffix_id, *suf, self.middle_id, *pre]
        return [*self._bos(), self.prefix_id, *pre, self.suffix_id, *suf, self.middle_id]

    def middle_target_ids(self, middle: str) -> list[int]:
        """What follows the infill prompt in a FIM sample, and is in its loss: the middle, then the end token."""
        return [*self.pieces.continuation(middle), self.end_id]

    def encode(self, sample: Sample) -> dict[str, list[int]]:
        """`input_ids` and `labels` (-100 outside the loss) for one sample."""
        if sample.mode == "plain":
            return self._encode_plain(sample)
        if sample.mode == "fim":
            return self._encode_fim(sample)
        raise ValueError(f"unknown sample mode {sample.mode!r}")

    def encode_in_context(self, sample: Sample, segments: Sequence[tuple[str, str]], lead: str) -> dict[str, list[int]]:
        """`sample` behind repository context (see `finetune.data.context.layout`).

        `segments` go right after any BOS, before the FIM block: "repo_name"/"file_sep" as the family's special
        ids, "text" as text; they are never in the loss. `lead` starts the prefix (the text of a plain sample), so
        it is encoded exactly as inference encodes a prefix that begins with it.
        """
        if lead:
            sample = replace(sample, prefix=lead + sample.prefix, text=lead + sample.text if sample.text else "")
        row = self.encode(sample)
        context: list[int] = []
        for kind, text in segments:
            if kind == "text":
                context += self.pieces.continuation(text) if context else self.pieces.raw(text)
            else:
                token = self.family.repo_name if kind == "repo_name" else self.family.file_sep
                context.append(self._require(vocab_of(self.tokenizer), token))
        n_bos = len(self._bos())
        return {
            "input_ids": row["input_ids"][:n_bos] + context + row["input_ids"][n_bos:],
            "labels": row["labels"][:n_bos] + [IGNORE_INDEX] * len(context) + row["labels"][n_bos:],
        }

    def _encode_plain(self, sample: Sample) -> dict[str, list[int]]:
        body = [*self.pieces.raw(self._header(sample.path, sample.language) + sample.text), self.eos_id]
        bos = self._bos()
        return {"input_ids": bos + body, "labels": [IGNORE_INDEX] * len(bos) + body}

    def _encode_fim(self, sample: Sample) -> dict[str, list[int]]:
        prompt = self.infill_prompt_ids(sample.prefix, sample.suffix, sample.path, sample.language, sample.spm)
        target = self.middle_target_ids(sample.middle)
        if self.loss_on == "middle":
            prompt_labels = [IGNORE_INDEX] * len(prompt)
        else:
            n_bos = len(self._bos())
            prompt_labels = [IGNORE_INDEX] * n_bos + prompt[n_bos:]
        return {"input_ids": prompt + target, "labels": prompt_labels + target}


def render_text(sample: Sample, family: str) -> str:
    """The sample laid out as text with the family's special-token strings, for people to read.

    Training uses `SampleEncoder`'s ids; this string is what those ids decode to for a byte-level BPE tokenizer.
    """
    fam = get_family(family)
    bos = fam.bos if fam.uses_bos and fam.bos else ""
    header = aixcoder_header(sample.path, sample.language) if fam.header else ""
    if sample.mode == "plain":
        return f"{bos}{header}{sample.text}{fam.eos}"
    end = fam.end or fam.eos
    if sample.spm:
        return f"{bos}{fam.prefix}{fam.suffix}{sample.suffix}{fam.middle}{header}{sample.prefix}{sample.middle}{end}"
    return f"{bos}{fam.prefix}{header}{sample.prefix}{fam.suffix}{sample.suffix}{fam.middle}{sample.middle}{end}"
