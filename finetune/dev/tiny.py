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


# --- the quickstart model -----------------------------------------------------------------------------------------

QUICKSTART = {"hidden_size": 192, "num_layers": 4, "num_heads": 4, "num_kv_heads": 2, "intermediate_size": 512}
QUICKSTART_VOCAB = 4096
STDLIB_FILES = 200
MAX_FILE_BYTES = 256 * 1024
_SKIP_STDLIB_DIRS = {"test", "tests", "site-packages", "idlelib", "lib2to3"}


def _stdlib_files(limit: int = STDLIB_FILES) -> list[Path]:
    """`limit` standard-library modules, top level first, by name: real code that exists on every machine."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    nested = [p for p in sorted(stdlib.glob("*/*.py")) if p.parent.name not in _SKIP_STDLIB_DIRS]
    return (sorted(stdlib.glob("*.py")) + nested)[:limit]


def _text_files(root: Path) -> list[Path]:
    """Every file under `root` (sorted, hidden directories skipped); non-text files are dropped when read."""
    return sorted(p for p in root.rglob("*") if p.is_file() and not any(part.startswith(".") for part in p.parts))


def _read_texts(paths: Iterable[Path]) -> Iterator[str]:
    """The UTF-8 text of each file that is small and decodes; binary files are skipped."""
    for path in paths:
        if path.stat().st_size > MAX_FILE_BYTES:
            continue
        data = path.read_bytes()
        if b"\0" in data:
            continue
        try:
            yield data.decode("utf-8")
        except UnicodeDecodeError:
            continue


def _corpus_files(corpus_dirs: list[Path] | None) -> list[Path]:
    """The quickstart corpus: the given dirs, or data/sample-repo (if present) plus standard-library modules."""
    if corpus_dirs:
        missing = [d for d in corpus_dirs if not d.is_dir()]
        if missing:
            raise SystemExit(f"error: corpus directory {missing[0]} does not exist: pass existing --corpus dirs")
        return [p for d in corpus_dirs for p in _text_files(d)]
    sample_repo = Path("data/sample-repo")
    files = _text_files(sample_repo) if sample_repo.is_dir() else []
    return files + _stdlib_files()


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


PRETRAIN = {"max_length": 256, "batch_size": 16, "learning_rate": 2e-3}


def pretrain(model_dir: Path, texts: list[str], steps: int, work: Path) -> Path:
    """Full training of the random model on `texts` with this toolkit's own `finetune train` (plain + FIM samples).

    A model that has seen some Python makes the quickstart meaningful: its LoRA adapts a model that already knows
    the language to the sample repository, instead of learning token statistics from scratch.
    """
    from finetune.config.load import validate_recipe
    from finetune.training.trainer import run

    corpus = work / "pretrain.jsonl"
    corpus.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    recipe = validate_recipe(
        {
            "output_dir": str(work / "pretrained"),
            "method": "full",
            "seed": 0,
            "model": {"name_or_path": str(model_dir), "family": "starcoder", "dtype": "fp32"},
            "data": {
                "sources": [{"type": "jsonl", "path": str(corpus)}],
                "max_length": PRETRAIN["max_length"],
                "packing": False,
                "eval_split": 0.0,
                "fim": {"rate": 0.5, "spm_rate": 0.5},
            },
            "training": {
                "batch_size": PRETRAIN["batch_size"],
                "learning_rate": PRETRAIN["learning_rate"],
                "max_steps": steps,
                "warmup": 0.05,
                "logging_steps": 25,
                "save_steps": steps + 1,
                "weight_decay": 0.01,
            },
        }
    )
    summary = run(recipe)
    print(f"pretrained {steps} steps: loss {summary.first_loss:.3f} -> {summary.last_loss:.3f}", file=sys.stderr)
    return summary.output_dir


def build_quickstart(out: Path, corpus_dirs: list[Path] | None = None, pretrain_steps: int = 0) -> str:
    """Build the quickstart model + tokenizer into `out` (via a temporary sibling dir); returns a summary line.

    The tokenizer learns from the whole corpus; pretraining (if asked) uses only the standard-library part, so the
    sample repository stays new to the model and the quickstart shows real adaptation.
    """
    files = _corpus_files(corpus_dirs)
    texts = list(_read_texts(files))
    if not texts:
        raise SystemExit("error: the corpus has no readable text files: pass --corpus dirs with source code")
    tokenizer = build_tokenizer("bpe", "starcoder", texts, vocab_size=QUICKSTART_VOCAB)
    model = build_tiny_model(tokenizer, seed=0, **QUICKSTART).to(torch.bfloat16)
    params = sum(p.numel() for p in model.parameters())
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; the result is shared project data
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if pretrain_steps > 0:
            stdlib_texts = list(_read_texts(_stdlib_files())) if not corpus_dirs else texts
            with tempfile.TemporaryDirectory(prefix="tiny-pretrain-") as work:
                trained = pretrain(tmp, stdlib_texts, pretrain_steps, Path(work))
                model = LlamaForCausalLM.from_pretrained(trained, dtype=torch.float32).to(torch.bfloat16)
                model.save_pretrained(tmp)
        for path in tmp.iterdir():
            path.chmod(0o644)  # some writers create private files
        _replace_dir(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    trained = f", pretrained {pretrain_steps} steps" if pretrain_steps else ", random weights"
    return (
        f"tiny-llama: {params / 1e6:.2f}M params, vocab {len(tokenizer)}, {len(texts)} corpus files{trained} -> {out}"
    )


def main(argv: list[str] | None = None) -> int:
    """`python -m finetune.dev.tiny --out DIR [--corpus DIR ...]`."""
    parser = argparse.ArgumentParser(prog="python -m finetune.dev.tiny", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="directory to write the model and tokenizer to")
    parser.add_argument(
        "--corpus", type=Path, nargs="+", action="extend", help="directories of text files to train the tokenizer on"
    )
    parser.add_argument(
        "--pretrain-steps",
        type=int,
        default=400,
        help="full-training steps on the standard-library corpus before saving (0 = random weights; ~1 s/step on CPU)",
    )
    args = parser.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    hf_logging.disable_progress_bar()
    print(build_quickstart(args.out, args.corpus, args.pretrain_steps))
    return 0


if __name__ == "__main__":
    sys.exit(main())
