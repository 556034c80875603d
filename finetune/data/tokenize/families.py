"""Model families: the one place that knows each family's special tokens, header and layout rules.

Adding a family is one `FimFamily` entry in `FAMILIES`; `encoder.py` lays samples out from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tokenizers import AddedToken

from finetune.data.ingest.languages import LANGUAGES, comment_line
from finetune.errors import UserError


@dataclass(frozen=True)
class RepoLayout:
    """How a family with repository tokens lays out other files in front of a sample (sources: the docstring of
    data/context/layout.py)."""

    newline_after_repo_name: bool
    newline_after_file: bool
    path_in_prefix: bool


@dataclass(frozen=True)
class FimFamily:
    """A model family's FIM tokens and layout rules.

    `end` is the token that closes the middle (None: the tokenizer's EOS). `bos`/`eos` are the family's usual
    strings, used when a tokenizer does not name its own and to build look-alike test tokenizers. `uses_bos`:
    the family's inference starts every sequence with BOS. `header`: aiXcoder's path/language comment header goes
    in front of the prefix. `prefix_space`: the family's inference encodes the prefix as the start of a string
    (SentencePiece tokenizers then give it a leading `▁`). `default_spm`: the order the family's inference uses.
    """

    name: str
    prefix: str
    suffix: str
    middle: str
    eos: str
    bos: str | None = None
    end: str | None = None
    uses_bos: bool = False
    header: bool = False
    prefix_space: bool = False
    default_spm: bool = False
    pad: str | None = None
    repo_name: str | None = None
    file_sep: str | None = None
    repo_layout: RepoLayout | None = None  # None: retrieved context becomes comments in the sample's language

    @property
    def fim_tokens(self) -> tuple[str, ...]:
        """The tokens a tokenizer must have for this family's FIM layout."""
        return (self.prefix, self.suffix, self.middle) + ((self.end,) if self.end else ())


FAMILIES: dict[str, FimFamily] = {
    # aiXcoder-7B: sess_megatron.py `Tokenizer.encode` (suffix behind `☺`, header + prefix as a string start) and
    # hf_mini/utils.py `input_wrapper`; SPM is its inference order, finetune.py trains PSM and SPM.
    "aixcoder": FimFamily(
        name="aixcoder",
        prefix="▁<AIX-SPAN-PRE>",
        suffix="▁<AIX-SPAN-POST>",
        middle="▁<AIX-SPAN-MIDDLE>",
        eos="</s>",
        bos="<s>",
        uses_bos=True,
        header=True,
        prefix_space=True,
        default_spm=True,
    ),
    # StarCoder / StarCoder2 (bigcode Megatron-LM FIM): no BOS, EOS `<|endoftext|>` ends the middle.
    "starcoder": FimFamily(
        name="starcoder",
        prefix="<fim_prefix>",
        suffix="<fim_suffix>",
        middle="<fim_middle>",
        eos="<|endoftext|>",
        bos="<|endoftext|>",
        pad="<fim_pad>",
        repo_name="<repo_name>",
        file_sep="<file_sep>",
        repo_layout=RepoLayout(newline_after_repo_name=False, newline_after_file=False, path_in_prefix=True),
    ),
    # CodeLlama (meta-llama/codellama `infilling_prompt_tokens`): `<s> ▁<PRE> {pre} ▁<SUF>{suf} ▁<MID>`, ends with EOT.
    "codellama": FimFamily(
        name="codellama",
        prefix="▁<PRE>",
        suffix="▁<SUF>",
        middle="▁<MID>",
        eos="</s>",
        bos="<s>",
        end="▁<EOT>",
        uses_bos=True,
        prefix_space=True,
    ),
    # DeepSeek-Coder: `<｜fim▁begin｜>{pre}<｜fim▁hole｜>{suf}<｜fim▁end｜>`, BOS added by its tokenizer.
    "deepseek": FimFamily(
        name="deepseek",
        prefix="<｜fim▁begin｜>",
        suffix="<｜fim▁hole｜>",
        middle="<｜fim▁end｜>",
        eos="<｜end▁of▁sentence｜>",
        bos="<｜begin▁of▁sentence｜>",
        uses_bos=True,
    ),
    # Qwen2.5-Coder: `<|fim_prefix|>{pre}<|fim_suffix|>{suf}<|fim_middle|>`, no BOS.
    "qwen": FimFamily(
        name="qwen",
        prefix="<|fim_prefix|>",
        suffix="<|fim_suffix|>",
        middle="<|fim_middle|>",
        eos="<|endoftext|>",
        pad="<|fim_pad|>",
        repo_name="<|repo_name|>",
        file_sep="<|file_sep|>",
        repo_layout=RepoLayout(newline_after_repo_name=True, newline_after_file=True, path_in_prefix=False),
    ),
}


def get_family(name: str) -> FimFamily:
    """The family called `name`; a UserError that lists the valid names otherwise."""
    if name not in FAMILIES:
        raise UserError(f"unknown model family {name!r}: set model.family to one of {', '.join(FAMILIES)}")
    return FAMILIES[name]


def vocab_of(tokenizer: Any) -> dict[str, int]:
    """Token string -> id, added tokens included."""
    return tokenizer.get_vocab()


def detect_family(tokenizer: Any) -> str:
    """The family whose FIM tokens the tokenizer has, so recipes need not name it."""
    vocab = vocab_of(tokenizer)
    found = [name for name, fam in FAMILIES.items() if all(t in vocab for t in (fam.prefix, fam.suffix, fam.middle))]
    if len(found) == 1:
        return found[0]
    if not found:
        raise UserError(
            "the tokenizer has none of the known FIM tokens: set model.family to one of "
            f"{', '.join(FAMILIES)} (and model.add_fim_tokens=true if the model was not trained with them)"
        )
    raise UserError(f"the tokenizer has the FIM tokens of several families ({', '.join(found)}): set model.family")


def ensure_fim_tokens(tokenizer: Any, family: str, add: bool) -> int:
    """Check the tokenizer has `family`'s FIM tokens; add the missing ones as special tokens when `add`.

    Returns how many tokens were added; the caller must then resize the model's embeddings.
    """
    fam = get_family(family)
    vocab = vocab_of(tokenizer)
    missing = [t for t in fam.fim_tokens if t not in vocab]
    if not missing:
        return 0
    if not add:
        raise UserError(
            f"the tokenizer lacks the {family} FIM tokens {', '.join(missing)}: set model.add_fim_tokens=true to add "
            "them and resize the embeddings, or set model.family to the family this model was trained with"
        )
    tokens = [AddedToken(t, special=True, normalized=False, lstrip=False, rstrip=False) for t in missing]
    return tokenizer.add_tokens(tokens, special_tokens=True)


def aixcoder_header(path: str, language: str) -> str:
    """The lines aiXcoder's inference puts in front of the code: path line, then language line.

    Like aiXcoder's `input_wrapper`, there is no header without a path or for a language it does not know.
    """
    spec = LANGUAGES.get(language)
    if not path or spec is None:
        return ""
    return comment_line(language, f"the file path is: {path}") + comment_line(
        language, f"the code file is written by {spec.display}"
    )
