"""Tiny tokenizers and Llama models, built offline in seconds.

Tests need tokenizers that behave like the real families' (byte-level BPE like StarCoder/DeepSeek/Qwen, or a
SentencePiece-style `▁` tokenizer like Llama/CodeLlama/aiXcoder) without downloading anything, and the quickstart
needs a model small enough to fine-tune on a laptop CPU. `python -m finetune.dev.tiny --out DIR` builds the latter.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import sysconfig
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Literal

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
from transformers.utils import logging as hf_logging

from finetune.data.tokenize.families import FimFamily, get_family
from finetune.runtime import seeded_random_model

TokenizerKind = Literal["bpe", "sentencepiece"]
UNK = "<unk>"
GENERIC_PAD = "<pad>"


def _special_tokens(kind: TokenizerKind, fam: FimFamily) -> list[str]:
    """The family's special tokens, in id order: unk (SentencePiece only), bos, eos, pad, FIM and repo tokens."""
    tokens = [UNK] if kind == "sentencepiece" else []
    tokens += [fam.bos, fam.eos, fam.pad or GENERIC_PAD, *fam.fim_tokens, fam.repo_name, fam.file_sep]
    return list(dict.fromkeys(t for t in tokens if t))


def _bare_tokenizer(kind: TokenizerKind) -> Tokenizer:
    """An untrained tokenizer of the requested kind."""
    if kind == "bpe":
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        tok.decoder = decoders.ByteLevel()
        return tok
    if kind == "sentencepiece":
        tok = Tokenizer(models.BPE(unk_token=UNK, byte_fallback=True))
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=True)
        tok.decoder = decoders.Sequence(
            [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
        )
        return tok
    raise ValueError(f"unknown tokenizer kind {kind!r}: use 'bpe' or 'sentencepiece'")


def _with_byte_fallback(tok: Tokenizer) -> Tokenizer:
    """Append the 256 `<0xNN>` byte tokens so characters outside the vocabulary fall back to bytes (Llama-style)."""
    spec = json.loads(tok.to_str())
    vocab = spec["model"]["vocab"]
    for byte in range(256):
        vocab.setdefault(f"<0x{byte:02X}>", len(vocab))
    spec["model"]["byte_fallback"] = True
    return Tokenizer.from_str(json.dumps(spec))


def build_tokenizer(
    kind: TokenizerKind, family: str, corpus: Iterable[str], vocab_size: int = 1024
) -> PreTrainedTokenizerFast:
    """Train a small tokenizer of `kind` on `corpus`, with `family`'s special tokens as single ids.

    `vocab_size` counts everything: special tokens and, for the SentencePiece kind, its 256 byte tokens.
    """
    fam = get_family(family)
    specials = _special_tokens(kind, fam)
    tok = _bare_tokenizer(kind)
    alphabet = pre_tokenizers.ByteLevel.alphabet() if kind == "bpe" else []
    learned = vocab_size if kind == "bpe" else vocab_size - 256  # the 256 byte-fallback tokens count too
    trainer = trainers.BpeTrainer(
        vocab_size=learned, special_tokens=specials, initial_alphabet=alphabet, show_progress=False
    )
    tok.train_from_iterator(corpus, trainer)
    if kind == "sentencepiece":
        tok = _with_byte_fallback(tok)
    if fam.uses_bos and fam.bos:
        # Like the real tokenizers of BOS families: a plain `tokenizer(text)` starts with BOS.
        tok.post_processor = processors.TemplateProcessing(
            single=f"{fam.bos} $A", pair=f"{fam.bos} $A $B", special_tokens=[(fam.bos, tok.token_to_id(fam.bos))]
        )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=fam.bos,
        eos_token=fam.eos,
        pad_token=fam.pad or GENERIC_PAD,
        unk_token=UNK if kind == "sentencepiece" else None,
    )


def tiny_llama_config(
    tokenizer: PreTrainedTokenizerFast,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    intermediate_size: int = 128,
    max_position_embeddings: int = 2048,
    initializer_range: float | None = None,
) -> LlamaConfig:
    """A Llama config sized for tests, with the tokenizer's vocabulary and special ids.

    The default init scale is 1/sqrt(hidden_size), not Llama's 0.02: at hidden size 64 a 0.02 LM head caps every
    logit near zero, and a LoRA on the random model could then barely move the loss.
    """
    return LlamaConfig(
        initializer_range=initializer_range or hidden_size**-0.5,
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        intermediate_size=intermediate_size,
        max_position_embeddings=max_position_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def build_tiny_model(tokenizer: PreTrainedTokenizerFast, seed: int = 0, **config_kwargs: int) -> LlamaForCausalLM:
    """A randomly initialised tiny Llama; the same seed gives the same weights, without touching global RNG state."""
    config = tiny_llama_config(tokenizer, **config_kwargs)
    with torch.random.fork_rng(devices=[]):
        model = seeded_random_model(config, seed)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id
    )
    return model


# --- the built-in model -------------------------------------------------------------------------------------------

CODER = {"hidden_size": 256, "num_layers": 6, "num_heads": 4, "num_kv_heads": 2, "intermediate_size": 688}
CODER_VOCAB = 8192
MAX_FILE_BYTES = 256 * 1024
PRETRAIN_RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "pretrain" / "tiny-coder.yaml"
# Standard-library packages never seen in pre-training: fine-tuning experiments train and evaluate on them.
HELD_OUT_PACKAGES = ("asyncio", "email")
# Not pre-training material: tests, third-party code, generated tables and data, and the held-out packages.
EXCLUDED_DIRS = (
    "test", "tests", "site-packages", "idlelib", "lib2to3", "pydoc_data", "encodings", "ensurepip", "__pycache__",
    "lib-dynload", "config-*", *HELD_OUT_PACKAGES,
)  # fmt: skip


def stdlib_dir() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def pretraining_files(root: Path | None = None) -> list[Path]:
    """The standard library's Python modules that pre-training reads (the recipe's `exclude` list, mirrored)."""
    root = root or stdlib_dir()
    skip = [pattern.rstrip("*") for pattern in EXCLUDED_DIRS]
    return sorted(
        path
        for path in root.rglob("*.py")
        if not any(part.startswith(tuple(skip)) if "*" in pattern else part == pattern
                   for part in path.relative_to(root).parts[:-1] for pattern in EXCLUDED_DIRS)
        and path.stat().st_size <= MAX_FILE_BYTES
    )


def _read_texts(paths: Iterable[Path]) -> Iterator[str]:
    """The UTF-8 text of each file that decodes; others are skipped."""
    for path in paths:
        try:
            yield path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue


def _replace_dir(src: Path, dst: Path) -> None:
    """Move the finished `src` to `dst`, replacing an older `dst` only once the new one is complete."""
    old = dst.with_name(f".{dst.name}.old")
    if old.exists():
        shutil.rmtree(old)
    if dst.exists():
        dst.rename(old)
    src.rename(dst)
    if old.exists():
        shutil.rmtree(old)


def initial_model(work: Path) -> Path:
    """The random model and its tokenizer (trained on the pre-training files), made once per work folder."""
    init = work / "init"
    if (init / "config.json").is_file():
        return init
    texts = list(_read_texts(pretraining_files()))
    tokenizer = build_tokenizer("bpe", "starcoder", texts, vocab_size=CODER_VOCAB)
    model = build_tiny_model(tokenizer, seed=0, max_position_embeddings=4096, **CODER)
    tmp = Path(tempfile.mkdtemp(prefix=".init.tmp-", dir=work))
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    tmp.rename(init)
    return init


def pretrain(work: Path, overrides: list[str]) -> Path:
    """Full training with this toolkit's own `finetune train` on `recipes/pretrain/tiny-coder.yaml`; a rerun with
    the same work folder resumes from the newest complete checkpoint."""
    from finetune.cli.common import make_console
    from finetune.config.load import load_recipe
    from finetune.training.trainer import run

    init = initial_model(work)
    recipe = load_recipe(
        PRETRAIN_RECIPE,
        [f"model.name_or_path={init}", f"output_dir={work / 'run'}", f"data.sources.0.path={stdlib_dir()}",
         *overrides],
    )  # fmt: skip
    summary = run(recipe, console=make_console())
    if summary is None:
        raise SystemExit("error: pre-training did not finish on this process")
    return summary.output_dir


def export_model(trained: Path, out: Path) -> str:
    """The trained model in bf16 with its tokenizer and a record of what it held out, written atomically to `out`."""
    from transformers import AutoTokenizer

    model = LlamaForCausalLM.from_pretrained(trained, dtype=torch.float32).to(torch.bfloat16)
    tokenizer = AutoTokenizer.from_pretrained(trained)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; the result is shared project data
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        held_out = {
            "python": sys.version.split()[0],
            "held_out_stdlib_packages": list(HELD_OUT_PACKAGES),
            "excluded_from_pretraining": list(EXCLUDED_DIRS),
            "pretraining_files": len(pretraining_files()),
        }
        (tmp / "held_out.json").write_text(json.dumps(held_out, indent=2) + "\n", encoding="utf-8")
        if (out / "README.md").is_file():  # the model card is written by hand: keep it across rebuilds
            shutil.copy(out / "README.md", tmp / "README.md")
        for path in tmp.iterdir():
            path.chmod(0o644)  # some writers create private files
        _replace_dir(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    params = sum(p.numel() for p in model.parameters())
    return f"tiny-coder: {params / 1e6:.2f}M params, vocab {len(tokenizer)} -> {out}"


def main(argv: list[str] | None = None) -> int:
    """`python -m finetune.dev.tiny --out DIR [--work DIR] [key=value ...]`."""
    parser = argparse.ArgumentParser(prog="python -m finetune.dev.tiny", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="directory to write the finished model to")
    parser.add_argument(
        "--work", type=Path, default=Path("runs/pretrain-tiny-coder"), help="checkpoints (a rerun resumes from them)"
    )
    parser.add_argument("--random", action="store_true", help="write the random initial model, no pre-training")
    parser.add_argument("overrides", nargs="*", help="recipe overrides, e.g. training.max_steps=100")
    args = parser.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    hf_logging.disable_progress_bar()
    args.work.mkdir(parents=True, exist_ok=True)
    trained = initial_model(args.work) if args.random else pretrain(args.work, args.overrides)
    print(export_model(trained, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
