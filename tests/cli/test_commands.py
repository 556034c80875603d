"""`finetune prepare`, `finetune data fim` and `finetune data inspect` from the command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from finetune.cli.main import main
from finetune.data.ingest.walk import walk_repository
from finetune.data.tokenize.encoder import SampleEncoder, render_text
from finetune.data.types import Sample

SAMPLE_REPO = Path(__file__).resolve().parents[2] / "data" / "sample-repo"


def recipe_file(tmp_path: Path, model_dir: Path, repo: Path, cache: Path, **data) -> Path:
    recipe = {
        "output_dir": str(tmp_path / "out"),
        "model": {"name_or_path": str(model_dir), "family": "starcoder"},
        "data": {"sources": [{"type": "repo", "path": str(repo)}], "max_length": 256, "cache_dir": str(cache), **data},
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def arrow_bytes(entry: Path) -> dict[str, bytes]:
    return {p.relative_to(entry).as_posix(): p.read_bytes() for p in sorted(entry.rglob("*.arrow"))}


def test_prepare_is_deterministic_and_reused(tmp_path: Path, tiny_model_dir: Path, capsys) -> None:
    first = recipe_file(tmp_path, tiny_model_dir, SAMPLE_REPO, tmp_path / "cache-a")
    assert main(["prepare", str(first)]) == 0
    out = capsys.readouterr().out
    kept = len(walk_repository(SAMPLE_REPO)[0])
    assert "wrote" in out and f"kept {kept} of" in out.replace("\n", " ")
    entries = list((tmp_path / "cache-a").iterdir())
    assert len(entries) == 1 and (entries[0] / "report.json").is_file()
    report = json.loads((entries[0] / "report.json").read_text())
    assert report["ingest"]["files_kept"] == kept and report["samples"]["structured_fim"] > 0

    assert main(["prepare", str(first)]) == 0
    assert "reused" in capsys.readouterr().out

    again = recipe_file(tmp_path, tiny_model_dir, SAMPLE_REPO, tmp_path / "cache-b")
    assert main(["prepare", str(again)]) == 0
    [entry_b] = list((tmp_path / "cache-b").iterdir())
    assert entry_b.name == entries[0].name
    assert arrow_bytes(entries[0]) == arrow_bytes(entry_b) != {}  # byte-identical for the same seed

    assert main(["prepare", str(again), "seed=7"]) == 0
    assert len(list((tmp_path / "cache-b").iterdir())) == 2  # another seed, another entry


def test_data_fim_writes_reconstructible_samples(tmp_path: Path) -> None:
    out = tmp_path / "fim.jsonl"
    assert (
        main(
            [
                "data",
                "fim",
                str(SAMPLE_REPO),
                "--mode",
                "mixed",
                "--family",
                "starcoder",
                "--seed",
                "3",
                "--max-chars",
                "1000000",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert len(records) == len(walk_repository(SAMPLE_REPO)[0])
    modes = {r["mode"] for r in records}
    assert modes <= {"structured", "random"} and "structured" in modes
    for record in records:
        original = (SAMPLE_REPO / record["path"]).read_bytes().decode("utf-8")
        assert record["prefix"] + record["middle"] + record["suffix"] == original
        assert record["text"].startswith("<fim_prefix>") and record["text"].endswith("<|endoftext|>")
        assert (record["node_type"] is not None) == (record["mode"] == "structured")
    assert not list(tmp_path.glob(".fim.jsonl*"))  # no temporary file left behind


def test_data_fim_bad_input(tmp_path: Path, capsys) -> None:
    assert main(["data", "fim", str(tmp_path / "missing"), "--out", str(tmp_path / "x.jsonl")]) == 2
    assert "missing not found" in capsys.readouterr().err
    assert not (tmp_path / "x.jsonl").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["data", "fim", str(empty), "--out", str(tmp_path / "x.jsonl")]) == 2
    assert not (tmp_path / "x.jsonl").exists()


def test_data_inspect_shows_samples(tmp_path: Path, tiny_model_dir: Path, capsys) -> None:
    recipe = recipe_file(tmp_path, tiny_model_dir, SAMPLE_REPO, tmp_path / "cache")
    assert main(["data", "inspect", str(recipe), "-n", "2", "--mode", "structured"]) == 0
    out = capsys.readouterr().out
    assert "showed 2 training samples" in out and "structured" in out and "in the loss" in out


@pytest.mark.parametrize("family", ["starcoder", "qwen", "deepseek"])
@pytest.mark.parametrize("spm", [False, True])
def test_render_text_matches_encoded_ids(bpe_tokenizer, family: str, spm: bool) -> None:
    tokenizer = bpe_tokenizer(family)
    encoder = SampleEncoder(tokenizer, family)
    sample = Sample(
        mode="fim",
        path="a.py",
        language="python",
        prefix="def f(x):\n    ",
        middle="return x",
        suffix="\n\nprint(f(1))\n",
        spm=spm,
    )
    ids = encoder.encode(sample)["input_ids"]
    assert tokenizer.decode(ids, clean_up_tokenization_spaces=False) == render_text(sample, family)


SECRETS = {
    "app/settings.py": 'DB_PASSWORD = "hunter2-very-secret"\nAPI_KEY = "AIzaSyA1234567890abcdefghijklmnopqrstuv"\n\n'
    "def connect():\n    return DB_PASSWORD\n",
    ".env": "GITHUB_TOKEN=ghp_abcdefghijklmnopqrstuvwxyz0123456789\nDEBUG=1\n",
    "deploy/config.yaml": "aws_access_key_id: AKIAIOSFODNN7EXAMPLE\npassword: s3cr3t-passw0rd\nport: 8080\n",
}
SECRET_VALUES = [
    "hunter2-very-secret",
    "AIzaSyA1234567890abcdefghijklmnopqrstuv",
    "ghp_abcdefghijklmnopqrstuvwxyz0123456789",
    "AKIAIOSFODNN7EXAMPLE",
    "s3cr3t-passw0rd",
]


def test_planted_secrets_never_reach_samples_or_prepared_data(tmp_path: Path, tiny_model_dir: Path) -> None:
    from transformers import AutoTokenizer

    repo = tmp_path / "repo"
    for rel, text in SECRETS.items():
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        (repo / rel).write_text(text)
    out = tmp_path / "fim.jsonl"
    assert main(["data", "fim", str(repo), "--mode", "random", "--out", str(out)]) == 0
    written = out.read_text(encoding="utf-8")
    assert "def connect()" in written and "<SECRET>" in written
    recipe = recipe_file(tmp_path, tiny_model_dir, repo, tmp_path / "cache", eval_split=0.0)
    assert main(["prepare", str(recipe)]) == 0
    [entry] = list((tmp_path / "cache").iterdir())
    report = json.loads((entry / "report.json").read_text())
    assert report["ingest"]["secrets"]["spans"] >= len(SECRET_VALUES)
    from datasets import load_from_disk

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    decoded = "".join(tokenizer.decode(ids) for ids in load_from_disk(str(entry / "train"))["input_ids"])
    assert "connect" in decoded
    for secret in SECRET_VALUES:
        assert secret not in written and secret not in decoded, secret
        assert secret[4:12] not in decoded  # not even a fragment


def test_cache_list_and_prune_by_last_use(tmp_path: Path, tiny_model_dir: Path, capsys) -> None:
    import os
    import time

    cache = tmp_path / "cache"
    recipe = recipe_file(tmp_path, tiny_model_dir, SAMPLE_REPO, cache)
    assert main(["prepare", str(recipe)]) == 0
    [old] = cache.iterdir()
    assert main(["prepare", str(recipe), "seed=7"]) == 0
    [recent] = set(cache.iterdir()) - {old}
    month_ago = time.time() - 30 * 86400
    os.utime(old / "report.json", (month_ago, month_ago))
    crashed = cache / f".{old.name}.tmp-crashed"  # an interrupted prepare, a month ago
    crashed.mkdir()
    os.utime(crashed, (month_ago, month_ago))
    capsys.readouterr()

    assert main(["cache", "list", "--cache-dir", str(cache)]) == 0
    listing = capsys.readouterr().out
    assert "3 entries" in listing and "incomplete" in listing and "30.0 days ago" in listing
    assert "train tokens" in listing

    assert main(["prepare", str(recipe), "seed=7"]) == 0  # reuse marks the entry as used now
    assert abs((recent / "report.json").stat().st_mtime - time.time()) < 60
    assert main(["cache", "prune", "--cache-dir", str(cache)]) == 2  # says neither what nor how old
    assert "--older-than DAYS or --all" in capsys.readouterr().err
    assert main(["cache", "prune", "--older-than", "-1", "--cache-dir", str(cache)]) == 2
    assert "must be a number, 0 or more" in capsys.readouterr().err
    writing = cache / f".{recent.name}.tmp-writing"  # a prepare running right now
    writing.mkdir()
    assert main(["cache", "prune", "--older-than", "7", "--cache-dir", str(cache)]) == 0
    assert "removed 2 entries" in capsys.readouterr().out
    assert sorted(cache.iterdir()) == sorted([recent, writing])
    assert main(["cache", "prune", "--all", "--cache-dir", str(cache)]) == 0
    assert list(cache.iterdir()) == []
