"""The HumanEval-infilling files shipped in data/benchmarks are found by short name from any directory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from finetune.cli.main import main
from finetune.evaluate.benchmark import SHIPPED, benchmark_path
from finetune.evaluate.humaneval import load_tasks

TASKS = {"humaneval-single-line": 1033, "humaneval-multi-line": 5815, "humaneval-random-span-light": 164}


@pytest.mark.parametrize("name", sorted(TASKS))
def test_short_names_resolve_to_the_shipped_files(name: str, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # not the checkout: names resolve against the package, not the working directory
    path = benchmark_path(name)
    assert path.is_absolute() and path.is_file() and path.name == SHIPPED[name]
    tasks = load_tasks(path)
    assert len(tasks) == TASKS[name] and len({t.task_id for t in tasks}) == TASKS[name]
    assert (path.parent / "LICENSE").read_text().startswith("The MIT License")


def test_a_file_path_still_works(tmp_path: Path) -> None:
    copy = tmp_path / "humaneval-single-line"  # a file wins over the name it shares
    copy.write_bytes(benchmark_path("humaneval-single-line").read_bytes())
    assert benchmark_path(str(copy)) == copy


def test_oracle_on_a_short_name_passes(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    args = ["eval", "--benchmark", "humaneval-random-span-light", "--oracle", "--limit", "3", "--out", "o"]
    assert main(args) == 0
    results = json.loads((tmp_path / "o" / "results.json").read_text())
    assert results["pass@1"] == 1.0 and results["tasks"] == 3
    assert results["benchmark"].endswith("data/benchmarks/HumanEval-RandomSpanInfillingLight.jsonl.gz")


def test_unknown_name_lists_the_shipped_ones(tmp_path: Path, capsys) -> None:
    assert main(["eval", "--benchmark", "humaneval-single", "--oracle", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "humaneval-single not found" in err
    assert all(name in err for name in SHIPPED)
    assert not (tmp_path / "o").exists()
