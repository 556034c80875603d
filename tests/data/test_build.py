"""Data sources and the recipe -> tokenized dataset step."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from finetune.config.load import validate_recipe
from finetune.config.schema import DatasetSource, JsonlSource, TextSource
from finetune.data.holdout import MIN_FILES_PER_LANGUAGE, held_out_records
from finetune.data.ingest.sources import load_documents
from finetune.data.pipeline import prepare_data, split_documents
from finetune.data.tokenize.encoder import SampleEncoder
from finetune.data.types import IGNORE_INDEX, Document
from finetune.errors import UserError


def test_jsonl_source_reads_fields_and_counts_skips(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    rows = [
        {"text": "def f():\n    return 1\n", "file": "pkg/f.py"},
        {"other": 1},
        {"text": "SELECT 1;", "file": "q.sql"},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    docs, report = load_documents([JsonlSource(path=str(path), path_field="file")])
    assert [(d.path, d.language) for d in docs] == [("pkg/f.py", "python"), ("q.sql", "sql")]
    assert report.files_seen == 3 and report.files_kept == 2 and report.skipped["missing_text_field"] == 1


def test_jsonl_errors_name_line_and_field(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "ok"}\n{broken\n')
    with pytest.raises(UserError, match="line 2 is not valid JSON"):
        load_documents([JsonlSource(path=str(path))])
    path.write_text('{"content": "x"}\n')
    with pytest.raises(UserError, match="set text_field"):
        load_documents([JsonlSource(path=str(path))])
    with pytest.raises(UserError, match="not found"):
        load_documents([JsonlSource(path=str(tmp_path / "missing.jsonl"))])


def test_text_and_dataset_sources(tmp_path: Path) -> None:
    from datasets import Dataset

    (tmp_path / "txt").mkdir()
    (tmp_path / "txt" / "a.txt").write_text("alpha\n")
    (tmp_path / "txt" / "b.txt").write_bytes(b"\xff\xfe bad utf8")
    Dataset.from_dict({"content": ["x = 1\n", "", "y = 2\n"]}).save_to_disk(str(tmp_path / "ds"))
    docs, report = load_documents(
        [TextSource(path=str(tmp_path / "txt")), DatasetSource(path=str(tmp_path / "ds"), text_field="content")]
    )
    assert [d.text for d in docs] == ["alpha\n", "x = 1\n", "y = 2\n"]
    assert report.skipped["invalid_utf8"] == 1 and report.skipped["empty"] == 1
    with pytest.raises(UserError, match="no column 'text'"):
        load_documents([DatasetSource(path=str(tmp_path / "ds"))])


def test_split_is_deterministic_stable_and_never_empty() -> None:
    docs = [Document(f"src/m{i}.py", "python", f"x = {i}\n") for i in range(200)]
    train, held = split_documents(docs, 0.1, seed=1)
    assert 5 < len(held) < 40 and len(train) + len(held) == 200
    assert {d.path for d in held}.isdisjoint(d.path for d in train)
    more = [*docs, Document("src/new.py", "python", "z = 0\n")]
    _, held_more = split_documents(more, 0.1, seed=1)
    assert {d.path for d in held} <= {d.path for d in held_more}  # adding a file moves no other file
    _, tiny_held = split_documents(docs[:3], 0.01, seed=1)
    assert len(tiny_held) == 1
    assert split_documents(docs, 0.0, seed=1) == (docs, [])


@pytest.mark.parametrize("seed", range(64))
def test_instruction_records_always_hold_one_out_and_keep_one(seed: int) -> None:
    keys = [f"tasks.jsonl:line {i}" for i in range(1, 13)]
    held = held_out_records(keys, 0.25, seed)
    assert 1 <= sum(held) < len(keys)  # by hash alone, 12 records at 0.25 hold out none about one time in 30
    assert held == held_out_records(keys, 0.25, seed)
    assert held_out_records(keys[:2], 0.01, seed).count(True) == 1 and held_out_records(keys[:2], 0.99, seed).count(True) == 1
    assert held_out_records(keys, 0.0, seed) == [False] * len(keys) and held_out_records(keys[:1], 0.9, seed) == [False]


_EXTENSIONS = {"python": "py", "go": "go", "rust": "rs", "typescript": "ts"}


def _repo_of_languages() -> list[Document]:
    """A repository with `MIN_FILES_PER_LANGUAGE` files in each of four languages, plus two SQL files and a README."""
    docs = [
        Document(f"src/{language}/m{i}.{ext}", language, f"x = {i}\n")
        for language, ext in _EXTENSIONS.items()
        for i in range(MIN_FILES_PER_LANGUAGE)
    ]
    return [*docs, Document("db/a.sql", "sql", "SELECT 1;\n"), Document("db/b.sql", "sql", "SELECT 2;\n"),
            Document("README.md", "markdown", "# r\n")]  # fmt: skip


@pytest.mark.parametrize("seed", range(8))
def test_split_holds_out_code_of_each_language_with_enough_files(seed: int) -> None:
    docs = _repo_of_languages()
    train, held = split_documents(docs, 1e-6, seed)
    assert {d.language for d in held} == set(_EXTENSIONS)  # each gets one; two SQL files and one README are too few
    assert {d.language for d in train} == {d.language for d in docs}  # and training still sees every language
    assert split_documents(docs, 1e-6, seed) == (train, held)
    _, held_all = split_documents(docs, 0.9999, seed)
    assert len(held_all) == len(docs) - 1  # one file always stays for training


@pytest.mark.parametrize("seed", range(8))
def test_split_moves_no_file_when_files_of_other_languages_are_added(seed: int) -> None:
    docs = _repo_of_languages()
    _, held = split_documents(docs, 0.2, seed)
    added = [Document("web/app.js", "javascript", "x\n"), *(Document(f"src/go/n{i}.go", "go", "x\n") for i in range(9))]
    _, held_more = split_documents([*docs, *added], 0.2, seed)
    others = {d.path for d in held if d.language != "go"}
    assert {d.path for d in held_more if d.language not in ("go", "javascript")} == others


def repo_recipe(repo: Path, **data):
    """A recipe over `repo` with random FIM on every file (the data keys given override the defaults here)."""
    section = {"sources": [{"type": "repo", "path": str(repo)}], "fim": {"structured_rate": 0.0, "random_rate": 1.0}}
    return validate_recipe({"output_dir": "x", "model": {"name_or_path": "m"}, "data": {**section, **data}})


def test_prepare_fits_max_length_and_keeps_eos_in_loss(tmp_path: Path, bpe_tokenizer) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "long.py").write_text("".join(f"def f{i}(x):\n    return x * {i}\n\n" for i in range(400)))
    for i in range(6):
        (repo / f"m{i}.py").write_text(f"VALUE_{i} = {i}\nprint(VALUE_{i})\n")
    recipe = repo_recipe(repo, max_length=64, eval_split=0.2)
    tokenizer = bpe_tokenizer("starcoder")
    data = prepare_data(recipe, SampleEncoder(tokenizer, "starcoder"))
    lengths = [len(ids) for ids in data.train["input_ids"]]
    assert max(lengths) <= 64 and len(lengths) > 20  # the long file was cut, not truncated
    for ids, labels in zip(data.train["input_ids"], data.train["labels"], strict=True):
        assert len(ids) == len(labels)
        if ids[-1] == tokenizer.eos_token_id:
            assert labels[-1] == tokenizer.eos_token_id
    assert data.eval is not None and len(data.eval_paths) >= 1
    assert data.stats["fim_samples"] > 0 and data.stats["train_documents"] + data.stats["eval_documents"] == 7
    report = data.report()
    assert report["ingest"]["files_kept"] == 7 and report["eval_paths"] == data.eval_paths


def test_loss_on_middle_masks_context(tmp_path: Path, bpe_tokenizer) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "a.py").write_text("import os\n\nprint(os.getcwd())\n")
    recipe = repo_recipe(repo, eval_split=0, loss_on="middle")
    data = prepare_data(recipe, SampleEncoder(bpe_tokenizer("starcoder"), "starcoder", loss_on="middle"))
    labels = data.train["labels"][0]
    in_loss = [t for t in labels if t != IGNORE_INDEX]
    assert 0 < len(in_loss) < len(labels) and labels[-1] != IGNORE_INDEX


@pytest.mark.parametrize("family", ["starcoder", "deepseek"])
def test_retrieved_context_is_prepended_outside_the_loss(tmp_path: Path, bpe_tokenizer, family: str) -> None:
    repo = tmp_path / "shop"
    repo.mkdir()
    (repo / "pricing.py").write_text("def apply_discount(price, rate):\n    return price * (1 - rate)\n")
    (repo / "cart.py").write_text(
        "from pricing import apply_discount\n\n\ndef total(items, rate):\n"
        "    return sum(apply_discount(p, rate) for p in items)\n"
    )
    recipe = repo_recipe(
        repo, eval_split=0, max_length=512, dedup="none", context={"retrieval": True, "budget_chars": 500}
    )
    tokenizer = bpe_tokenizer(family)
    encoder = SampleEncoder(tokenizer, family)
    data = prepare_data(recipe, encoder)
    assert data.stats["with_context"] == 2  # each file sees the other
    rows = list(zip(data.train["input_ids"], data.train["labels"], strict=True))
    for ids, labels in rows:
        text = tokenizer.decode(ids)
        assert "apply_discount" in text
        if family == "starcoder":
            file_sep = tokenizer.convert_tokens_to_ids("<file_sep>")
            assert ids[0] == tokenizer.convert_tokens_to_ids("<repo_name>") and labels[0] == IGNORE_INDEX
            fim_start = ids.index(encoder.prefix_id)
            assert file_sep in ids[:fim_start] and all(label == IGNORE_INDEX for label in labels[:fim_start])
            assert text.startswith("<repo_name>shop<file_sep>")
        else:  # no repository tokens: the other file arrives as comment lines at the start of the prefix
            assert "# Path: " in text and "<repo_name>" not in text


def test_ordered_neighbours_come_before_each_file_outside_the_loss_and_never_from_held_out_files(
    tmp_path: Path, bpe_tokenizer
) -> None:
    repo = tmp_path / "shop"
    (repo / "shop").mkdir(parents=True)
    (repo / "shop" / "money.py").write_text("CURRENCY_SYMBOL = 'EUR'\n")
    (repo / "shop" / "pricing.py").write_text("from shop.money import CURRENCY_SYMBOL\n\nRATE_CARD = {}\n")
    (repo / "shop" / "cart.py").write_text("from shop.pricing import RATE_CARD\n\nCART_TOTAL = 0\n")
    (repo / "zz_eval.py").write_text("HELD_OUT_MARKER = 1\n")
    paths = ["shop/money.py", "shop/pricing.py", "shop/cart.py", "zz_eval.py"]
    seed = next(s for s in range(500) if split_documents([Document(p, "", "") for p in paths], 0.2, s)[1][0].path == paths[3])
    recipe = repo_recipe(
        repo, eval_split=0.2, max_length=512, dedup="none", context={"neighbors": 2, "order_randomness": 0.0},
        fim={"structured_rate": 0.0, "random_rate": 0.0},
    )
    recipe.seed = seed
    tokenizer = bpe_tokenizer("starcoder")
    data = prepare_data(recipe, SampleEncoder(tokenizer, "starcoder"))
    assert data.eval_paths == ["zz_eval.py"]
    by_path = {}
    for ids, labels in zip(data.train["input_ids"], data.train["labels"], strict=True):
        text = tokenizer.decode(ids)
        assert "HELD_OUT_MARKER" not in text  # a held-out file is never shown as context
        sep = text.rfind("<file_sep>")
        own_start = sep + len("<file_sep>") if sep >= 0 else 0  # the sample's own `path\n` + code follow
        by_path[text[own_start:].split("\n", 1)[0] if sep >= 0 else "first"] = text
        context_tokens = len(tokenizer(text[:own_start], add_special_tokens=False)["input_ids"])
        assert all(label == IGNORE_INDEX for label in labels[:context_tokens])
        assert labels[-1] == tokenizer.eos_token_id
    # dependencies first (money <- pricing <- cart), each file sees the two before it, nearest last
    assert set(by_path) == {"first", "shop/pricing.py", "shop/cart.py"}
    assert "CURRENCY_SYMBOL = 'EUR'" in by_path["first"] and "<file_sep>" not in by_path["first"]
    cart = by_path["shop/cart.py"]
    assert cart.index("<file_sep>shop/money.py") < cart.index("<file_sep>shop/pricing.py") < cart.index("CART_TOTAL")
    assert data.stats["with_context"] == 2
