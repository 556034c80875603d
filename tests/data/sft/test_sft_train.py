"""Instruction data in recipes: mixtures with FIM, decontamination, inspection, and a tiny model that learns."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest

from finetune.cli.main import main
from finetune.config.load import load_recipe, validate_recipe
from finetune.data.cache import cache_key
from finetune.data.pipeline import prepare_data
from finetune.data.sft.chat import ChatEncoder
from finetune.data.sft.mixture import chat_setup
from finetune.data.tokenize.encoder import SampleEncoder
from finetune.data.types import IGNORE_INDEX
from finetune.errors import UserError

ROOT = Path(__file__).resolve().parents[3]
INSTRUCTIONS = ROOT / "data" / "instructions.jsonl"
PLANTED = (
    'def below_limit(values: list, limit: int) -> bool:\n    """Return True when every number in values is below '
    'limit, False when any number reaches it."""\n'
)


@pytest.fixture()
def mixed(tmp_path: Path) -> dict:
    repo = tmp_path / "repo"
    repo.mkdir()
    for i in range(6):
        (repo / f"m{i}.py").write_text(f"def f{i}(x):\n    return x * {i}\n\n\nVALUE_{i} = f{i}(2)\n")
    data = tmp_path / "tasks.jsonl"
    rows = [json.loads(line) for line in INSTRUCTIONS.read_text(encoding="utf-8").splitlines()[:12]]
    rows.append({"instruction": "Complete this function:\n\n" + PLANTED, "output": "    return all(v < limit for v in values)"})
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    bench = tmp_path / "bench.jsonl"
    bench.write_text(json.dumps({"task_id": "B/0", "prompt": PLANTED}) + "\n")
    return {
        "output_dir": str(tmp_path / "out"),
        "seed": 3,
        "model": {"name_or_path": "unused", "family": "starcoder"},
        "data": {
            "sources": [
                {"type": "instructions", "path": str(data), "weight": 2.0},
                {"type": "repo", "path": str(repo), "weight": 0.5},
            ],
            "max_length": 256,
            "eval_split": 0.0,
            "dedup": "none",
            "sft": {"template": "chatml", "decontaminate": {"benchmarks": [str(bench)], "ngram": 5}},
        },
    }


def encoder(recipe, tokenizer) -> tuple[SampleEncoder, ChatEncoder]:
    """The FIM encoder and the chat encoder of a copy of `tokenizer`, set up as training sets them up."""
    tokenizer = copy.deepcopy(tokenizer)
    chat, _ = chat_setup(tokenizer, recipe.data, "starcoder")
    return SampleEncoder(tokenizer, "starcoder"), chat


def test_mixed_recipe_has_both_kinds_weighted_decontaminated_and_deterministic(mixed: dict, bpe_tokenizer) -> None:
    recipe = validate_recipe(mixed)
    enc, chat = encoder(recipe, bpe_tokenizer("starcoder"))
    data = prepare_data(recipe, enc, chat)
    tokenizer = enc.tokenizer
    texts = [tokenizer.decode(ids) for ids in data.train["input_ids"]]
    chats = [i for i, t in enumerate(texts) if t.startswith("<|im_start|>")]
    assert len(chats) == 24 and data.stats["chat_samples"] == 24  # 12 clean records, weight 2
    assert data.stats["train_documents"] == 3 and data.ingest["skipped"]["mixture_weight"] == 3  # weight 0.5 of 6
    assert len(texts) - len(chats) == data.stats.get("fim_samples", 0) + data.stats.get("plain_samples", 0) > 0
    assert all("below_limit" not in t for t in texts)  # the planted benchmark record was dropped ...
    sft = data.ingest["instructions"]
    assert sft["skipped"] == {"benchmark_overlap": 1} and sft["skipped_examples"]["benchmark_overlap"] == [
        "tasks.jsonl:line 13"
    ]  # ... and counted
    assert any("benchmark_overlap 1" in line for line in data.ingest_lines)
    assert chats != list(range(24)) and chats != list(range(len(texts) - 24, len(texts)))  # shuffled together
    for index in chats:
        ids, labels = data.train["input_ids"][index], data.train["labels"][index]
        learned = tokenizer.decode([t for t, label in zip(ids, labels, strict=True) if label != IGNORE_INDEX])
        assert learned.endswith("<|im_end|>") and "<|im_start|>" not in learned
        assert labels[ids.index(tokenizer.convert_tokens_to_ids("<|im_start|>"))] == IGNORE_INDEX
    again = prepare_data(validate_recipe(mixed), *encoder(recipe, bpe_tokenizer("starcoder")))
    assert again.train["input_ids"] == data.train["input_ids"] and again.train["labels"] == data.train["labels"]


def test_fixed_counts_eval_split_and_instruction_only_recipes(mixed: dict, bpe_tokenizer) -> None:
    mixed["data"]["sources"] = [{"type": "instructions", "path": mixed["data"]["sources"][0]["path"], "samples": 30}]
    mixed["data"]["eval_split"] = 0.25
    recipe = validate_recipe(mixed)
    data = prepare_data(recipe, *encoder(recipe, bpe_tokenizer("starcoder")))
    report = data.ingest["instructions"]
    assert len(data.train) == 30 and report["train_records"] == 30  # repeats: fewer records than asked for
    assert data.eval is not None and len(data.eval) == report["eval_records"] > 0
    assert report["records_kept"] == 12 and data.stats["train_documents"] == 0
    moved = Path(mixed["output_dir"]).parent / "elsewhere" / "tasks.jsonl"
    moved.parent.mkdir()
    shutil.copy(mixed["data"]["sources"][0]["path"], moved)
    mixed["data"]["sources"][0]["path"] = str(moved)
    again = prepare_data(validate_recipe(mixed), *encoder(recipe, bpe_tokenizer("starcoder")))
    assert again.eval["input_ids"] == data.eval["input_ids"]  # the split follows the records, not the folder


def test_cache_key_follows_the_template_and_the_benchmarks(mixed: dict, bpe_tokenizer, tmp_path: Path) -> None:
    recipe = validate_recipe(mixed)
    first = cache_key(recipe, "starcoder", encoder(recipe, bpe_tokenizer("starcoder"))[0].tokenizer)
    mixed["data"]["sft"]["template"] = "alpaca"
    other = validate_recipe(mixed)
    assert cache_key(other, "starcoder", encoder(other, bpe_tokenizer("starcoder"))[0].tokenizer) != first
    Path(recipe.data.sft.decontaminate.benchmarks[0]).write_text(json.dumps({"prompt": "something else"}) + "\n")
    assert cache_key(recipe, "starcoder", encoder(recipe, bpe_tokenizer("starcoder"))[0].tokenizer) != first


def test_inspect_shows_both_kinds(mixed: dict, tiny_model_dir: Path, tmp_path: Path, capsys) -> None:
    import yaml

    mixed["model"]["name_or_path"] = str(tiny_model_dir)
    mixed["data"]["cache_dir"] = str(tmp_path / "cache")
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(mixed, allow_unicode=True))
    assert main(["data", "inspect", str(path), "-n", "40"]) == 0
    out = capsys.readouterr().out
    assert "(chat, evol" in out and "<|im_start|>" in out
    assert "(structured" in out or "(plain" in out or "(random" in out
    assert main(["data", "inspect", str(path), "-n", "3", "--mode", "chat"]) == 0
    out = capsys.readouterr().out
    assert out.count("(chat, ") == 3 and "(plain" not in out and "(structured" not in out


def test_bad_instruction_source_is_a_one_line_error(mixed: dict, tiny_model_dir: Path, tmp_path: Path, capsys) -> None:
    import yaml

    mixed["model"]["name_or_path"] = str(tiny_model_dir)
    mixed["data"]["sources"][0]["path"] = str(tmp_path / "nope.jsonl")
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(mixed))
    assert main(["prepare", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: data.sources.0.path: instructions source") and "does not exist" in err
    assert len(err.strip().splitlines()) == 1
    with pytest.raises(UserError, match="weight above 1 would repeat files"):
        load_recipe(path, ["data.sources.1.weight=2"])


def test_quickstart_sft_trains_the_tiny_model_and_saves_the_template(tmp_path: Path, monkeypatch) -> None:
    from transformers import AutoTokenizer

    from finetune.training.trainer import run

    monkeypatch.chdir(ROOT)
    out = tmp_path / "run"
    recipe = load_recipe(
        "recipes/quickstart-sft.yaml",
        [f"output_dir={out}", f"data.cache_dir={tmp_path / 'cache'}", "training.max_steps=24", "data.max_length=192",
         "training.batch_size=4", "training.gradient_accumulation_steps=1", "training.logging_steps=1",
         "training.warmup=0", "training.learning_rate=5e-3", "data.eval_split=0",
         "data.sources.0.samples=8", "data.sources.1.samples=2",  # a small mixture, seen several times
         "data.packing=false"],  # packing is tested elsewhere; unpacked batches are several times faster on CPU
    )
    summary = run(recipe)
    losses = [r["loss"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if "loss" in r]
    assert len(losses) == 24
    assert sum(losses[-4:]) / 4 < sum(losses[:4]) / 4 - 1.0, losses  # the loss falls
    assert summary.data["chat_samples"] == 8 and summary.data.get("fim_samples", 0) + summary.data.get("plain_samples", 0) > 0
    saved = AutoTokenizer.from_pretrained(out)
    prompt = saved.apply_chat_template([{"role": "user", "content": "Reverse a list"}], tokenize=False,
                                       add_generation_prompt=True)
    assert prompt == ("<|im_start|>system\nYou are a helpful coding assistant.<|im_end|>\n"
                      "<|im_start|>user\nReverse a list<|im_end|>\n<|im_start|>assistant\n")
    ids = saved(prompt, add_special_tokens=False)["input_ids"]
    assert saved.convert_tokens_to_ids("<|im_end|>") in ids and len(saved) == len(AutoTokenizer.from_pretrained(
        ROOT / "data" / "tiny-coder")) + 2
    shutil.rmtree(out)


def test_cache_key_follows_the_data_code(mixed: dict, bpe_tokenizer, tmp_path: Path, monkeypatch) -> None:
    """An edit of the data code between releases (a new split rule) must not be served the old samples."""
    import finetune.data.cache as cache_module

    code = tmp_path / "code" / "data"
    shutil.copytree(Path(cache_module.__file__).parent, code, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(cache_module, "__file__", str(code / "cache.py"))
    recipe = validate_recipe(mixed)
    tokenizer = encoder(recipe, bpe_tokenizer("starcoder"))[0].tokenizer
    cache_module._data_code_hash.cache_clear()
    first = cache_key(recipe, "starcoder", tokenizer)
    with (code / "holdout.py").open("a", encoding="utf-8") as file:
        file.write("\n# a changed rule\n")
    cache_module._data_code_hash.cache_clear()
    assert cache_key(recipe, "starcoder", tokenizer) != first
    cache_module._data_code_hash.cache_clear()
