"""bench peers: the axolotl job matches the toolkit's, rounds interleave, and the ratios are medians of rounds."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from finetune.config.load import load_recipe
from finetune.dev import bench_peers
from finetune.dev.bench import main as bench_main

ROOT = Path(__file__).resolve().parents[2]


def test_axolotl_config_is_the_recipes_job(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(ROOT)
    recipe = load_recipe("recipes/quickstart.yaml", ["data.eval_split=0"])
    config = bench_peers.axolotl_config(recipe, tmp_path / "s.jsonl", tmp_path, max_steps=33)
    assert (config["lora_r"], config["lora_alpha"], config["lora_dropout"], config["lora_target_linear"]) == (16, 32, 0.0, True)
    assert (config["micro_batch_size"], config["gradient_accumulation_steps"], config["sequence_len"]) == (2, 4, 512)
    assert config["max_steps"] == 33 and config["learning_rate"] == 1e-3 and config["warmup_ratio"] == 0.05
    assert not any(config[k] for k in ("bf16", "fp16", "tf32", "gradient_checkpointing", "flash_attention"))
    assert not any(config[k] for k in ("lora_mlp_kernel", "lora_qkv_kernel", "lora_o_kernel"))
    assert config["base_model"] == str((ROOT / "data/tiny-coder").resolve())
    assert "type" not in config["datasets"][0]  # pre-tokenized: the toolkit's own samples
    with pytest.raises(bench_peers.UserError, match="method=lora"):
        bench_peers.axolotl_config(load_recipe("recipes/quickstart.yaml", ["method=full"]), tmp_path, tmp_path, 3)


def test_rounds_rotate_and_ratios_are_medians(tmp_path: Path, monkeypatch, capsys) -> None:
    speeds = {"toolkit": [300, 200, 100], "trl": [100, 200, 50], "axolotl": [200, 100, 100]}
    calls = []

    def fake_run(command, env, **kwargs):
        config = "axolotl" if "finetune.dev.bench_axolotl" in command else ("trl" if "trl" in command else "toolkit")
        assert env["AXOLOTL_DO_NOT_TRACK"] == "1"
        rate = speeds[config][sum(1 for c in calls if c == config)]
        calls.append(config)
        result = {"tokens_per_second": rate, "padding_fraction": 0.1, "step_seconds": 1.0,
                  "extra": {"end_to_end_tokens_per_second": rate / 2}}  # fmt: skip
        Path(command[command.index("--json") + 1]).write_text(json.dumps(result))
        return subprocess.CompletedProcess(command, 0, "", "")

    python = tmp_path / "python"
    python.write_text("")
    monkeypatch.setattr(bench_peers, "write_axolotl_job", lambda *a: tmp_path / "axolotl.yaml")
    monkeypatch.setattr(bench_peers.subprocess, "run", fake_run)
    report = bench_peers.compare_peers("recipe.yaml", [], rounds=3, steps=2, warmup=1, axolotl_python=str(python))
    assert calls == ["toolkit", "trl", "axolotl", "trl", "axolotl", "toolkit", "axolotl", "toolkit", "trl"]
    # per round toolkit/trl: 3, 1, 2 -> median 2; toolkit/axolotl: 1.5, 2, 1 -> median 1.5
    assert report["ratios"]["toolkit/trl"]["step_only"] == pytest.approx(2.0)
    assert report["ratios"]["toolkit/axolotl"]["end_to_end"] == pytest.approx(1.5)
    out = capsys.readouterr().out
    assert "| toolkit | 200 | 100 |" in out and "toolkit/axolotl: 1.50x step-only" in out


def test_a_missing_axolotl_python_is_one_line(capsys) -> None:
    assert bench_main(["peers", "--axolotl-python", "/no/such/python"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --axolotl-python /no/such/python does not exist") and "Traceback" not in err
