"""Shared fixtures: tiny tokenizers and models trained locally in well under a second each, no network."""

from __future__ import annotations

import shutil
import sysconfig
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from transformers import PreTrainedTokenizerFast

from finetune.dev.tiny import build_tiny_model, build_tokenizer

_STDLIB_MODULES = ("textwrap.py", "bisect.py", "colorsys.py", "fnmatch.py")
_STDLIB_CHARS = 2500

_INLINE_TEXTS = (
    "# 快速排序算法\ndef quick_sort(xs):\n    return xs if len(xs) < 2 else quick_sort(xs[1:])\n",
    "naïve = 'café'  # résumé, Größe, ñandú, Ελληνικά, русский, emoji 🚀✨\n",
    'public class Main {\n    public static void main(String[] args) {\n        System.out.println("hi");\n    }\n}\n',
    "SELECT id, name FROM users WHERE age > 21 ORDER BY name;\n-- a comment\n",
    '<!DOCTYPE html>\n<html>\n  <body><p class="x">Hello</p></body>\n</html>\n',
    "fn main() {\n    let v: Vec<i32> = (0..10).map(|x| x * 2).collect();\n}\n",
    "def f(x):\n    y = 1\n    return x + y\n\n\nclass A:\n    pass\n",
)


@pytest.fixture(scope="session")
def corpus_texts() -> list[str]:
    """A few KB of varied code: standard-library Python, other languages inline, and non-ASCII text."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    texts = [(stdlib / name).read_text(encoding="utf-8")[:_STDLIB_CHARS] for name in _STDLIB_MODULES]
    return texts + list(_INLINE_TEXTS)


TokenizerFactory = Callable[[str], PreTrainedTokenizerFast]


def _cached_factory(kind: str, corpus: list[str]) -> TokenizerFactory:
    """A `family -> tokenizer` function that trains each family's tokenizer once per session."""
    cache: dict[str, PreTrainedTokenizerFast] = {}

    def make(family: str) -> PreTrainedTokenizerFast:
        if family not in cache:
            cache[family] = build_tokenizer(kind, family, corpus, vocab_size=1024)  # type: ignore[arg-type]
        return cache[family]

    return make


@pytest.fixture(scope="session")
def bpe_tokenizer(corpus_texts: list[str]) -> TokenizerFactory:
    """`bpe_tokenizer(family)`: a byte-level BPE tokenizer (StarCoder/DeepSeek/Qwen-like) with the family's tokens."""
    return _cached_factory("bpe", corpus_texts)


@pytest.fixture(scope="session")
def sp_tokenizer(corpus_texts: list[str]) -> TokenizerFactory:
    """`sp_tokenizer(family)`: a SentencePiece-style `▁` tokenizer (Llama/CodeLlama/aiXcoder-like)."""
    return _cached_factory("sentencepiece", corpus_texts)


def _save_tiny(directory: Path, tokenizer: PreTrainedTokenizerFast) -> Path:
    """Save a tiny model (hidden 64, 2 layers) and its tokenizer where `from_pretrained` can load both."""
    model = build_tiny_model(tokenizer, seed=0, hidden_size=64, num_layers=2)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory, bpe_tokenizer: TokenizerFactory) -> Path:
    """A saved tiny Llama with a `starcoder`-family byte-level BPE tokenizer."""
    return _save_tiny(tmp_path_factory.mktemp("tiny-starcoder"), bpe_tokenizer("starcoder"))


@pytest.fixture(scope="session")
def sp_model_dir(tmp_path_factory: pytest.TempPathFactory, sp_tokenizer: TokenizerFactory) -> Path:
    """A saved tiny Llama with an `aixcoder`-family SentencePiece-style tokenizer."""
    return _save_tiny(tmp_path_factory.mktemp("tiny-aixcoder"), sp_tokenizer("aixcoder"))


@pytest.fixture(scope="session", autouse=True)
def isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Prepared-dataset cache in a temporary folder, never the user's ~/.cache; the environment is restored after."""
    path = tmp_path_factory.mktemp("finetune-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FINETUNE_CACHE", str(path))
        yield path


@pytest.fixture(scope="session")
def code_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small fixed set of real Python code (four standard-library modules) that a tiny model can fit quickly."""
    root = tmp_path_factory.mktemp("repo")
    for name in ["colorsys.py", "bisect.py", "fnmatch.py", "glob.py"]:
        shutil.copy(Path(sysconfig.get_paths()["stdlib"]) / name, root / name)
    return root


def train_recipe(out: Path, model_dir: Path, repo: Path, method: str = "lora", **training) -> dict:
    """A training recipe for the tiny model over `repo` (the `training` keys given override the defaults here)."""
    return {
        "output_dir": str(out),
        "method": method,
        "model": {"name_or_path": str(model_dir), "family": "starcoder"},
        "adapter": {"r": 8, "alpha": 16, "dropout": 0.0},
        "data": {"sources": [{"type": "repo", "path": str(repo)}], "max_length": 128, "eval_split": 0.2},
        "training": {
            "batch_size": 4,
            "learning_rate": 5e-3 if method == "full" else 3e-2,
            "max_steps": 12,
            "logging_steps": 1,
            "save_steps": 1000,
            "warmup": 0,
            **training,
        },
    }
