"""Golden outputs: what the commands produce on the bundled data, pinned so that a refactor cannot change them.

Each figure comes from the command line only (never from an internal function), so the test survives any move of
modules. Integer outputs (token ids, labels, JSONL bytes, item lists) must match exactly; floating-point ones
(losses, merged weights) within a tolerance that covers the CPU's vector width (AVX2 vs AVX-512 sums round
differently). After an intended change of output, regenerate with

    FINETUNE_UPDATE_GOLDEN=1 python -m pytest tests/test_golden.py

and say in the commit why the outputs changed.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path

import pytest

from finetune.cli.main import main

ROOT = Path(__file__).resolve().parents[1]
GOLDEN_DIR = Path(__file__).parent / "golden"
UPDATE = os.environ.get("FINETUNE_UPDATE_GOLDEN") == "1"
LOSS_RTOL = 2e-3
WEIGHT_RTOL = 1e-5
TRAIN_STEPS = 6


def check_golden(name: str, actual: dict) -> None:
    """Compare `actual` with tests/golden/NAME.json (write it instead when FINETUNE_UPDATE_GOLDEN=1)."""
    path = GOLDEN_DIR / f"{name}.json"
    if UPDATE:
        GOLDEN_DIR.mkdir(exist_ok=True)
        path.write_text(json.dumps(actual, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    expected = json.loads(path.read_text(encoding="utf-8"))
    assert_close(expected, actual, name)


def assert_close(expected, actual, where: str) -> None:
    """Exact equality, except floats under a key whose name says how close they must be."""
    if isinstance(expected, dict):
        assert sorted(expected) == sorted(actual), f"{where}: keys differ"
        for key in expected:
            assert_close(expected[key], actual[key], f"{where}.{key}")
    elif isinstance(expected, list):
        assert len(expected) == len(actual), f"{where}: {len(actual)} entries, expected {len(expected)}"
        for index, (e, a) in enumerate(zip(expected, actual, strict=True)):
            assert_close(e, a, f"{where}[{index}]")
    elif isinstance(expected, float):
        rtol = LOSS_RTOL if "loss" in where else WEIGHT_RTOL
        assert math.isclose(expected, actual, rel_tol=rtol), f"{where}: {actual} != {expected} (rtol {rtol})"
    else:
        assert expected == actual, f"{where}: {actual!r} != {expected!r}"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def dataset_digest(directory: Path) -> dict:
    """Rows and a hash of every column of a saved `datasets.Dataset`, independent of its Arrow metadata."""
    from datasets import load_from_disk

    dataset = load_from_disk(str(directory))
    columns = {name: sha256(json.dumps(dataset[name][:]).encode()) for name in sorted(dataset.column_names)}
    return {"rows": len(dataset), "columns": columns}


def prepared_digest(recipe: str, cache: Path) -> dict:
    """Prepare `recipe` into an empty cache folder and digest the one entry it writes."""
    assert main(["prepare", recipe, f"data.cache_dir={cache}"]) == 0
    (entry,) = [p for p in cache.iterdir() if not p.name.startswith(".")]
    digest = {split: dataset_digest(entry / split) for split in ("train", "eval") if (entry / split).is_dir()}
    report = json.loads((entry / "report.json").read_text(encoding="utf-8"))
    digest["eval_paths"] = sorted(report["eval_paths"])
    return digest


@pytest.fixture(autouse=True)
def in_repository_root(monkeypatch: pytest.MonkeyPatch) -> None:
    """The bundled recipes name their data relative to the repository root, as the README runs them."""
    monkeypatch.chdir(ROOT)


@pytest.mark.parametrize("recipe", ["recipes/quickstart.yaml", "recipes/quickstart-sft.yaml"])
def test_prepared_dataset_is_unchanged(recipe: str, tmp_path: Path) -> None:
    check_golden(f"prepared-{Path(recipe).stem}", prepared_digest(recipe, tmp_path / "cache"))


def test_data_fim_output_is_unchanged(tmp_path: Path) -> None:
    out = tmp_path / "fim.jsonl"
    assert main(["data", "fim", "data/sample-repo", "--family", "starcoder", "--seed", "7", "--out", str(out)]) == 0
    lines = out.read_text(encoding="utf-8").splitlines()
    check_golden("data-fim-sample-repo", {"lines": len(lines), "sha256": sha256(out.read_bytes())})


def test_recipe_keys_output_is_unchanged(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["recipe", "keys"]) == 0
    text = capsys.readouterr().out
    check_golden("recipe-keys", {"lines": text.count("\n"), "sha256": sha256(text.encode())})


def test_eval_oracle_results_are_unchanged(tmp_path: Path) -> None:
    out = tmp_path / "eval"
    assert main(["eval", "--repo", "data/sample-repo", "--oracle", "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    predictions = (out / "predictions.jsonl").read_bytes()
    scores = [run["scores"] for run in results["runs"]]
    check_golden("eval-oracle", {"scores": scores, "predictions_sha256": sha256(predictions)})


def test_training_and_merge_are_unchanged(tmp_path: Path) -> None:
    """The quickstart's first steps (losses per step) and the merged model made from its adapter."""
    from safetensors.torch import load_file

    run_dir = tmp_path / "run"
    overrides = [
        f"output_dir={run_dir}",
        f"data.cache_dir={tmp_path / 'cache'}",
        f"training.max_steps={TRAIN_STEPS}",
        "training.logging_steps=1",
        "eval.fim_items=0",  # the completion scores are tested in tests/evaluate; here only what training computes
    ]
    assert main(["train", "recipes/quickstart.yaml", *overrides]) == 0
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    losses = [r["loss"] for r in records if "loss" in r]
    merged = tmp_path / "merged"
    assert main(["merge", str(run_dir), "--out", str(merged), "--verify"]) == 0
    weights = {}
    for shard in sorted(merged.glob("*.safetensors")):
        for name, tensor in load_file(str(shard)).items():
            weights[name] = float(tensor.double().abs().sum())
    check_golden("train-merge", {"train_loss": losses, "merged_weight_abs_sum": weights})
