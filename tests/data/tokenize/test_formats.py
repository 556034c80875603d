"""Exact-id tests of the prompt formats, for every family with both kinds of tokenizer.

Expected ids are built by hand from each family's published inference code (cited per reference function) out of
special-token ids and separately encoded text pieces, never by calling the code under test.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from finetune.data.tokenize.encoder import SampleEncoder
from finetune.data.tokenize.families import FAMILIES, aixcoder_header, detect_family, ensure_fim_tokens
from finetune.data.types import IGNORE_INDEX, Sample
from finetune.dev.tiny import build_tiny_model, build_tokenizer
from finetune.errors import UserError

FAMILY_NAMES = sorted(FAMILIES)
KINDS = ("bpe", "sentencepiece")
SENTINEL = "☺"

PREFIX = "def add(a, b):\n    "
MIDDLE = "return a + b"
SUFFIX = "\n\nprint(add(1, 2))\n"


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def make_tokenizer(request: pytest.FixtureRequest, kind: str) -> Callable[[str], PreTrainedTokenizerFast]:
    return request.getfixturevalue("bpe_tokenizer" if kind == "bpe" else "sp_tokenizer")


# --- hand-built references --------------------------------------------------------------------------------------


def tid(tok: PreTrainedTokenizerFast, token: str) -> int:
    """The single id of a token string."""
    ids = tok.convert_tokens_to_ids([token])
    assert ids[0] is not None and ids[0] != tok.unk_token_id, token
    return ids[0]


def whole(tok: PreTrainedTokenizerFast, text: str) -> list[int]:
    """`text` encoded as a string of its own, special-token text kept as text (SentencePiece adds its `▁` here)."""
    return tok(text, add_special_tokens=False, split_special_tokens=True)["input_ids"] if text else []


def infilling(tok: PreTrainedTokenizerFast, kind: str, text: str) -> list[int]:
    """CodeLlama's `encode_infilling` (sentinel in front, its tokens dropped) for SentencePiece; plain for BPE."""
    if kind == "bpe" or not text:
        return whole(tok, text)
    sentinel = whole(tok, SENTINEL)
    ids = whole(tok, SENTINEL + text)
    assert ids[: len(sentinel)] == sentinel
    return ids[len(sentinel) :]


def reference_prompt(
    tok: PreTrainedTokenizerFast, kind: str, family: str, prefix: str, suffix: str, spm: bool, header: str = ""
) -> list[int]:
    """What each family's own inference code sends for a fill-in-the-middle request."""
    fam = FAMILIES[family]
    pre, suf, mid = tid(tok, fam.prefix), tid(tok, fam.suffix), tid(tok, fam.middle)
    if family in ("aixcoder", "codellama"):
        # meta-llama/codellama `infilling_prompt_tokens` and aiXcoder sess_megatron.py `Tokenizer.encode`:
        # the prefix (aiXcoder: header + prefix) is encoded as a whole string, the suffix with `encode_infilling`.
        bos = [tok.bos_token_id]
        if spm:
            return bos + [pre, suf] + infilling(tok, kind, suffix) + [mid] + whole(tok, header + prefix)
        return bos + [pre] + whole(tok, header + prefix) + [suf] + infilling(tok, kind, suffix) + [mid]
    # StarCoder / DeepSeek-Coder / Qwen2.5-Coder: the prompt is one string given to the tokenizer, which adds its own
    # BOS (DeepSeek) or none; SPM follows bigcode's `PRE SUF suffix MID prefix`.
    if spm:
        text = f"{fam.prefix}{fam.suffix}{suffix}{fam.middle}{prefix}"
    else:
        text = f"{fam.prefix}{prefix}{fam.suffix}{suffix}{fam.middle}"
    return tok(text)["input_ids"]


def reference_target(tok: PreTrainedTokenizerFast, kind: str, family: str, middle: str) -> list[int]:
    """The middle as the model generates it after the prompt, then the family's end token."""
    fam = FAMILIES[family]
    end = tid(tok, fam.end) if fam.end else tok.eos_token_id
    return infilling(tok, kind, middle) + [end]


def piece_text(tok: PreTrainedTokenizerFast, ids: list[int]) -> str:
    """The exact text of some ids, with any leading space kept (decoding behind an `a` token defeats `Strip`)."""
    return tok.decode([tid(tok, "a"), *ids])[1:]


def fim(prefix: str = PREFIX, middle: str = MIDDLE, suffix: str = SUFFIX, spm: bool = False, **kw: str) -> Sample:
    return Sample("fim", prefix=prefix, middle=middle, suffix=suffix, spm=spm, **kw)


# --- layouts ------------------------------------------------------------------------------------------------------


def test_family_tokens_are_the_published_strings() -> None:
    """The exact token strings of DESIGN.md's table (U+2581 `▁`, full-width `｜` U+FF5C included)."""
    table = {name: (f.prefix, f.suffix, f.middle, f.end) for name, f in FAMILIES.items()}
    assert table == {
        "aixcoder": ("\u2581<AIX-SPAN-PRE>", "\u2581<AIX-SPAN-POST>", "\u2581<AIX-SPAN-MIDDLE>", None),
        "starcoder": ("<fim_prefix>", "<fim_suffix>", "<fim_middle>", None),
        "codellama": ("\u2581<PRE>", "\u2581<SUF>", "\u2581<MID>", "\u2581<EOT>"),
        "deepseek": ("<\uff5cfim\u2581begin\uff5c>", "<\uff5cfim\u2581hole\uff5c>", "<\uff5cfim\u2581end\uff5c>", None),
        "qwen": ("<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>", None),
    }
    repo = {name: (f.repo_name, f.file_sep, f.pad) for name, f in FAMILIES.items() if f.repo_name}
    assert repo == {
        "starcoder": ("<repo_name>", "<file_sep>", "<fim_pad>"),
        "qwen": ("<|repo_name|>", "<|file_sep|>", "<|fim_pad|>"),
    }
    assert [n for n, f in FAMILIES.items() if f.uses_bos] == ["aixcoder", "codellama", "deepseek"]
    assert [n for n, f in FAMILIES.items() if f.header] == ["aixcoder"]


@pytest.mark.parametrize("spm", [False, True], ids=["psm", "spm"])
@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_fim_ids_match_family_reference(make_tokenizer, kind: str, family: str, spm: bool) -> None:
    tok = make_tokenizer(family)
    out = SampleEncoder(tok, family).encode(fim(spm=spm))
    expected = reference_prompt(tok, kind, family, PREFIX, SUFFIX, spm) + reference_target(tok, kind, family, MIDDLE)
    assert out["input_ids"] == expected


@pytest.mark.parametrize("spm", [False, True], ids=["psm", "spm"])
@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_training_ids_start_with_inference_prompt(make_tokenizer, kind: str, family: str, spm: bool) -> None:
    tok = make_tokenizer(family)
    enc = SampleEncoder(tok, family)
    sample = fim(
        prefix="x = 1\nif x:\n", middle="    y = 2\n", suffix="    return y\n", spm=spm, path="m.py", language="python"
    )
    prompt = enc.infill_prompt_ids(sample.prefix, sample.suffix, sample.path, sample.language, spm=spm)
    ids = enc.encode(sample)["input_ids"]
    assert ids[: len(prompt)] == prompt
    assert ids[len(prompt) :] == reference_target(tok, kind, family, sample.middle)


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_default_order_is_the_familys_inference_order(bpe_tokenizer, family: str) -> None:
    enc = SampleEncoder(bpe_tokenizer(family), family)
    default = enc.infill_prompt_ids(PREFIX, SUFFIX)
    spm_default = family == "aixcoder"
    assert default == enc.infill_prompt_ids(PREFIX, SUFFIX, spm=spm_default)
    assert default != enc.infill_prompt_ids(PREFIX, SUFFIX, spm=not spm_default)


def test_aixcoder_spm_layout_by_hand(sp_tokenizer) -> None:
    """aiXcoder's inference: `<s> PRE SUF suffix MID header prefix`, then the middle and `</s>`."""
    tok = sp_tokenizer("aixcoder")
    header = "# the file path is: pkg/m.py\n# the code file is written by Python\n"
    out = SampleEncoder(tok, "aixcoder").encode(fim(spm=True, path="pkg/m.py", language="python"))
    expected = (
        [tid(tok, "<s>"), tid(tok, "▁<AIX-SPAN-PRE>"), tid(tok, "▁<AIX-SPAN-POST>")]
        + infilling(tok, "sentencepiece", SUFFIX)
        + [tid(tok, "▁<AIX-SPAN-MIDDLE>")]
        + whole(tok, header + PREFIX)
        + infilling(tok, "sentencepiece", MIDDLE)
        + [tid(tok, "</s>")]
    )
    assert out["input_ids"] == expected


@pytest.mark.parametrize("family", ["starcoder", "qwen", "deepseek", "aixcoder"])
def test_bpe_ids_equal_whole_string_tokenization(bpe_tokenizer, family: str) -> None:
    """With byte-level BPE, piecewise encoding must equal tokenizing the published prompt string in one go."""
    tok = bpe_tokenizer(family)
    fam = FAMILIES[family]
    header = aixcoder_header("a.py", "python") if fam.header else ""
    out = SampleEncoder(tok, family).encode(fim(path="a.py", language="python"))
    bos = tok.bos_token if fam.uses_bos else ""
    text = f"{bos}{fam.prefix}{header}{PREFIX}{fam.suffix}{SUFFIX}{fam.middle}{MIDDLE}{tok.eos_token}"
    assert out["input_ids"] == tok(text, add_special_tokens=False)["input_ids"]


# --- the SentencePiece leading-space trap -------------------------------------------------------------------------


@pytest.mark.parametrize("spm", [False, True], ids=["psm", "spm"])
@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_no_spurious_leading_space_in_suffix_and_middle(sp_tokenizer, family: str, spm: bool) -> None:
    tok = sp_tokenizer(family)
    fam = FAMILIES[family]
    suffix, middle = "    return x\n", "y = 1"
    # The trap is real for this tokenizer: encoded on its own, the middle starts with a `▁` that is not in it.
    assert tok.convert_ids_to_tokens(whole(tok, middle))[0].startswith("▁")
    enc = SampleEncoder(tok, family)
    ids = enc.encode(fim(prefix="def f(x):\n", middle=middle, suffix=suffix, spm=spm))["input_ids"]
    prompt = enc.infill_prompt_ids("def f(x):\n", suffix, spm=spm)
    suffix_ids = ids[ids.index(tid(tok, fam.suffix)) + 1 : ids.index(tid(tok, fam.middle))]
    middle_ids = ids[len(prompt) : -1]
    assert piece_text(tok, suffix_ids) == suffix
    assert piece_text(tok, middle_ids) == middle
    assert not tok.convert_ids_to_tokens(middle_ids)[0].startswith("▁")
    assert tok.convert_ids_to_tokens(suffix_ids).count("▁") == 3  # four spaces: three lone `▁` and `▁return`


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_prefix_leading_space_only_where_the_family_sends_it(sp_tokenizer, family: str) -> None:
    """CodeLlama (`<PRE> {pre}`) and aiXcoder encode the prefix as a string start; the others as a continuation."""
    tok = sp_tokenizer(family)
    fam = FAMILIES[family]
    ids = SampleEncoder(tok, family).infill_prompt_ids("def f():", "", spm=False)
    first_prefix_token = tok.convert_ids_to_tokens(ids[ids.index(tid(tok, fam.prefix)) + 1])
    assert first_prefix_token.startswith("▁") == (family in ("codellama", "aixcoder"))


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_byte_level_bpe_never_gets_a_sentinel(bpe_tokenizer, family: str) -> None:
    tok = bpe_tokenizer(family)
    enc = SampleEncoder(tok, family)
    assert enc.pieces.adds_dummy_prefix is False
    for text in ("(x)", " y = 1", "    return x\n", ".attr", "☺"):
        assert enc.pieces.continuation(text) == whole(tok, text)


def test_sentencepiece_kind_is_detected(sp_tokenizer) -> None:
    assert SampleEncoder(sp_tokenizer("starcoder"), "starcoder").pieces.adds_dummy_prefix is True


def _legacy_llama_style(tok: PreTrainedTokenizerFast) -> PreTrainedTokenizerFast:
    """The same vocabulary in the older Llama `tokenizer.json` shape: a `Prepend("▁")` normalizer, no pre-tokenizer."""
    backend = Tokenizer.from_str(tok.backend_tokenizer.to_str())
    backend.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    backend.pre_tokenizer = None
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>"
    )


@pytest.mark.parametrize("spm", [False, True], ids=["psm", "spm"])
def test_legacy_prepend_normalizer_is_handled(sp_tokenizer, spm: bool) -> None:
    """A `▁` added by the normalizer instead of the pre-tokenizer is detected and avoided the same way."""
    tok = _legacy_llama_style(sp_tokenizer("codellama"))
    assert tok.convert_ids_to_tokens(whole(tok, "y = 1"))[0].startswith("▁")
    enc = SampleEncoder(tok, "codellama")
    assert enc.pieces.adds_dummy_prefix is True
    suffix, middle = "    return x\n", "y = 1"
    out = enc.encode(fim(prefix="def f(x):\n", middle=middle, suffix=suffix, spm=spm))["input_ids"]
    expected = reference_prompt(tok, "sentencepiece", "codellama", "def f(x):\n", suffix, spm)
    assert out == expected + reference_target(tok, "sentencepiece", "codellama", middle)
    suffix_ids = out[out.index(tid(tok, "▁<SUF>")) + 1 : out.index(tid(tok, "▁<MID>"))]
    assert piece_text(tok, suffix_ids) == suffix
    assert piece_text(tok, out[len(expected) : -1]) == middle


# --- loss masks ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("spm", [False, True], ids=["psm", "spm"])
@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_loss_mask_all(make_tokenizer, kind: str, family: str, spm: bool) -> None:
    tok = make_tokenizer(family)
    out = SampleEncoder(tok, family, loss_on="all").encode(fim(spm=spm))
    ids, labels = out["input_ids"], out["labels"]
    assert len(labels) == len(ids)
    n_bos = 1 if FAMILIES[family].uses_bos else 0
    assert labels[:n_bos] == [IGNORE_INDEX] * n_bos
    assert labels[n_bos:] == ids[n_bos:]
    assert labels[-1] == reference_target(tok, kind, family, MIDDLE)[-1]


@pytest.mark.parametrize("spm", [False, True], ids=["psm", "spm"])
@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_loss_mask_middle(make_tokenizer, kind: str, family: str, spm: bool) -> None:
    tok = make_tokenizer(family)
    out = SampleEncoder(tok, family, loss_on="middle").encode(fim(spm=spm))
    target = reference_target(tok, kind, family, MIDDLE)
    n_prompt = len(out["input_ids"]) - len(target)
    assert out["labels"][:n_prompt] == [IGNORE_INDEX] * n_prompt
    assert out["labels"][n_prompt:] == target  # the middle and the END token, END included
    assert out["input_ids"][n_prompt:] == target


def test_loss_on_is_validated(bpe_tokenizer) -> None:
    with pytest.raises(UserError, match="'all' or 'middle'"):
        SampleEncoder(bpe_tokenizer("starcoder"), "starcoder", loss_on="prompt")  # type: ignore[arg-type]


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_plain_sample(make_tokenizer, kind: str, family: str) -> None:
    tok = make_tokenizer(family)
    text = "import os\nprint(os.sep)\n"
    out = SampleEncoder(tok, family, loss_on="middle").encode(
        Sample("plain", path="x.py", language="python", text=text)
    )
    fam = FAMILIES[family]
    header = "# the file path is: x.py\n# the code file is written by Python\n" if family == "aixcoder" else ""
    bos = [tok.bos_token_id] if fam.uses_bos else []
    assert out["input_ids"] == bos + whole(tok, header + text) + [tok.eos_token_id]
    assert out["labels"] == [IGNORE_INDEX] * len(bos) + out["input_ids"][len(bos) :]


# --- aiXcoder header ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "language", "expected"),
    [
        ("src/app.py", "python", "# the file path is: src/app.py\n# the code file is written by Python\n"),
        ("Main.java", "java", "// the file path is: Main.java\n// the code file is written by Java\n"),
        ("q.sql", "sql", "-- the file path is: q.sql\n-- the code file is written by SQL\n"),
        ("index.html", "html", "<!--the file path is: index.html-->\n<!--the code file is written by HTML-->\n"),
        ("notes.xyz", "klingon", ""),
        ("", "python", ""),
    ],
)
def test_aixcoder_header(path: str, language: str, expected: str) -> None:
    assert aixcoder_header(path, language) == expected


def test_header_only_for_aixcoder(bpe_tokenizer) -> None:
    sample = fim(path="src/app.py", language="python")
    for family in FAMILY_NAMES:
        tok = bpe_tokenizer(family)
        text = tok.decode(SampleEncoder(tok, family).encode(sample)["input_ids"])
        assert ("# the file path is: src/app.py\n# the code file is written by Python\n" in text) == (
            family == "aixcoder"
        )


def test_aixcoder_prompt_without_known_language_has_no_header(sp_tokenizer) -> None:
    tok = sp_tokenizer("aixcoder")
    enc = SampleEncoder(tok, "aixcoder")
    prompt = enc.infill_prompt_ids(PREFIX, SUFFIX, path="notes.xyz", language="klingon")
    assert prompt == reference_prompt(tok, "sentencepiece", "aixcoder", PREFIX, SUFFIX, spm=True)
    assert prompt != enc.infill_prompt_ids(PREFIX, SUFFIX, path="notes.py", language="python")


# --- special-token text in user code ------------------------------------------------------------------------------

ALL_SPECIAL_TEXT = "".join(
    t for fam in FAMILIES.values() for t in (*fam.fim_tokens, fam.eos, fam.bos, fam.pad, fam.file_sep) if t
)


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_special_token_text_in_code_stays_text(make_tokenizer, kind: str, family: str) -> None:
    tok = make_tokenizer(family)
    fam = FAMILIES[family]
    code = f"s = '{ALL_SPECIAL_TEXT}'\n"
    out = SampleEncoder(tok, family).encode(fim(prefix=code, middle=code, suffix=code))
    ids = out["input_ids"]
    for token in (fam.prefix, fam.suffix, fam.middle):
        assert ids.count(tid(tok, token)) == 1, token
    specials = set(tok.all_special_ids) | {tid(tok, t) for t in fam.fim_tokens}
    n_bos = 1 if fam.uses_bos else 0
    assert sum(i in specials for i in ids) == n_bos + 4  # [BOS] PRE SUF MID END, nothing from the code
    mid_at = ids.index(tid(tok, fam.middle))
    # SentencePiece writes spaces as `▁`, so a literal `▁` in code decodes as a space: a property of that kind.
    assert piece_text(tok, ids[mid_at + 1 : -1]) == (code if kind == "bpe" else code.replace("▁", " "))
    plain = SampleEncoder(tok, family).encode(Sample("plain", text=code))["input_ids"]
    assert sum(i in specials for i in plain) == n_bos + 1  # [BOS] ... EOS


# --- round trip of non-ASCII code ---------------------------------------------------------------------------------

NON_ASCII = "# 快速排序算法 — naïve café 🚀\nname = 'Größe ñandú'\n"


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_non_ascii_round_trip(make_tokenizer, family: str) -> None:
    tok = make_tokenizer(family)
    enc = SampleEncoder(tok, family)
    plain = enc.encode(Sample("plain", text=NON_ASCII))["input_ids"]
    assert tok.decode(plain, skip_special_tokens=True) == NON_ASCII
    middle = "s = '日本語 🚀 ü'"
    ids = enc.encode(fim(prefix=NON_ASCII, middle=middle, suffix=NON_ASCII))["input_ids"]
    mid_at = ids.index(tid(tok, FAMILIES[family].middle))
    assert piece_text(tok, ids[mid_at + 1 : -1]) == middle
    assert NON_ASCII in tok.decode(ids, skip_special_tokens=True)


# --- family detection and FIM tokens ------------------------------------------------------------------------------


def _plain_tokenizer(corpus: list[str]) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer with no FIM tokens at all."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=400, special_tokens=["<eos>"], show_progress=False))
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>")


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_detect_family(make_tokenizer, family: str) -> None:
    assert detect_family(make_tokenizer(family)) == family


def test_detect_family_without_fim_tokens_names_the_key(corpus_texts) -> None:
    with pytest.raises(UserError, match="model.family"):
        detect_family(_plain_tokenizer(corpus_texts))


def test_detect_family_ambiguous(corpus_texts) -> None:
    tok = build_tokenizer("bpe", "starcoder", corpus_texts, vocab_size=400)
    ensure_fim_tokens(tok, "qwen", add=True)
    with pytest.raises(UserError, match="several.*model.family"):
        detect_family(tok)


def test_ensure_fim_tokens_error_names_the_fix(corpus_texts) -> None:
    tok = _plain_tokenizer(corpus_texts)
    with pytest.raises(UserError, match="model.add_fim_tokens=true") as err:
        ensure_fim_tokens(tok, "codellama", add=False)
    assert "model.family" in str(err.value)
    with pytest.raises(UserError, match="model.add_fim_tokens"):
        SampleEncoder(tok, "starcoder")


def test_ensure_fim_tokens_adds_special_tokens(corpus_texts) -> None:
    tok = _plain_tokenizer(corpus_texts)
    size = len(tok)
    assert ensure_fim_tokens(tok, "codellama", add=True) == 4  # PRE, SUF, MID and EOT
    assert len(tok) == size + 4
    assert ensure_fim_tokens(tok, "codellama", add=True) == 0
    assert ensure_fim_tokens(tok, "codellama", add=False) == 0
    assert detect_family(tok) == "codellama"
    for token in FAMILIES["codellama"].fim_tokens:
        assert tok(token, add_special_tokens=False)["input_ids"] == [tid(tok, token)]


def test_ensure_fim_tokens_present_adds_nothing(bpe_tokenizer) -> None:
    tok = bpe_tokenizer("qwen")
    size = len(tok)
    assert ensure_fim_tokens(tok, "qwen", add=False) == 0
    assert len(tok) == size


def test_unknown_family_names_the_key(bpe_tokenizer) -> None:
    with pytest.raises(UserError, match="model.family"):
        SampleEncoder(bpe_tokenizer("starcoder"), "santacoder")


# --- stop tokens --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_stop_token_ids(bpe_tokenizer, family: str) -> None:
    tok = bpe_tokenizer(family)
    fam = FAMILIES[family]
    stops = SampleEncoder(tok, family).stop_token_ids
    assert stops[0] == tok.eos_token_id
    assert {tid(tok, t) for t in fam.fim_tokens} <= set(stops)
    assert len(stops) == len(set(stops))
    if fam.file_sep:
        assert tid(tok, fam.file_sep) in stops


# --- tiny models and tokenizers as saved on disk ------------------------------------------------------------------


@pytest.mark.parametrize(("fixture", "family"), [("tiny_model_dir", "starcoder"), ("sp_model_dir", "aixcoder")])
def test_saved_tokenizer_encodes_the_same(request: pytest.FixtureRequest, fixture: str, family: str) -> None:
    directory = request.getfixturevalue(fixture)
    loaded = AutoTokenizer.from_pretrained(directory)
    built = request.getfixturevalue("bpe_tokenizer" if family == "starcoder" else "sp_tokenizer")(family)
    sample = fim(spm=True, path="a.py", language="python")
    assert SampleEncoder(loaded, family).encode(sample) == SampleEncoder(built, family).encode(sample)
    assert (loaded.bos_token_id, loaded.eos_token_id, loaded.pad_token_id) == (
        built.bos_token_id,
        built.eos_token_id,
        built.pad_token_id,
    )
    assert loaded.pad_token_id != loaded.eos_token_id


def test_tiny_model_is_deterministic(bpe_tokenizer) -> None:
    tok = bpe_tokenizer("starcoder")
    a, b, c = (build_tiny_model(tok, seed=s, hidden_size=32, num_layers=1) for s in (0, 0, 1))
    weight = "model.embed_tokens.weight"
    assert a.state_dict()[weight].equal(b.state_dict()[weight])
    assert not a.state_dict()[weight].equal(c.state_dict()[weight])
    assert a.config.vocab_size == len(tok)
    assert a.generation_config.pad_token_id == tok.pad_token_id
