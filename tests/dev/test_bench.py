"""Training benchmarks: the step meter counts real tokens and padding, and the comparison runs end to end."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import yaml

from finetune.dev.bench_train import StepMeter, bench_toolkit, summarize

STDLIB = Path(sysconfig.get_paths()["stdlib"])


@pytest.fixture(scope="module")
def bench_recipe(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    root = tmp_path_factory.mktemp("bench")
    repo = root / "repo"
    repo.mkdir()
    for name in ["colorsys.py", "bisect.py", "fnmatch.py"]:  # long files: cut into max_length chunks
        shutil.copy(STDLIB / name, repo / name)
    for i in range(24):  # short files of different lengths: what packing is for
        body = "".join(f"    total += {j} * x\n" for j in range(i % 7 + 1))
        (repo / f"small_{i}.py").write_text(f"def f{i}(x):\n    total = 0\n{body}    return total\n")
    recipe = {
        "output_dir": str(root / "unused"),
        "model": {"name_or_path": str(tiny_model_dir), "family": "starcoder"},
        "adapter": {"r": 4, "alpha": 8, "dropout": 0.0},
        "data": {"sources": [{"type": "repo", "path": str(repo)}], "max_length": 96},
        "training": {"batch_size": 2, "gradient_accumulation_steps": 2, "learning_rate": 1e-3, "warmup": 0},
    }
    path = root / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def test_packing_has_no_padding_and_unpacked_batches_do(bench_recipe: Path) -> None:
    packed = bench_toolkit(str(bench_recipe), ["data.packing_layout=flatten"], steps=3, warmup=1, config="toolkit")
    rows = bench_toolkit(str(bench_recipe), ["data.packing_layout=rows"], steps=3, warmup=1, config="rows")
    unpacked = bench_toolkit(str(bench_recipe), ["data.packing=false"], steps=3, warmup=1, config="unpacked")
    assert packed.steps == 3 and unpacked.steps == 3
    assert packed.padding_fraction == 0.0 and packed.tokens_per_second > 0
    assert 0.0 < unpacked.padding_fraction < 1.0
    assert rows.padding_fraction < unpacked.padding_fraction  # only the tails of packed rows are padding
    # packed rows hold several documents, unpacked rows one each
    assert packed.mean_document_tokens < 96 and unpacked.mean_document_tokens <= 96
    assert packed.mfu is None and packed.memory_kind == "RSS" and packed.peak_memory_gb > 0.05
    assert packed.params > 0


def test_meter_counts_only_real_tokens_and_skips_the_warmup() -> None:
    import torch

    meter = StepMeter()

    class Probe(torch.nn.Module):
        training = True

    probe = Probe()
    # step 1 (warm-up): 6 positions, 6 real; step 2: 2 rows of 4 with 3 padded positions
    meter.tokens.count(probe, (), {"input_ids": torch.ones(1, 6, dtype=torch.long), "position_ids": torch.tensor([[0, 1, 2, 0, 1, 2]])})
    meter.on_step_end(None, None, None)
    mask = torch.tensor([[1, 1, 1, 1], [1, 0, 0, 0]])
    meter.tokens.count(probe, (), {"input_ids": torch.ones(2, 4, dtype=torch.long), "attention_mask": mask})
    meter.on_step_end(None, None, None)
    assert [(real, total) for _, real, total in meter.steps] == [(6, 6), (5, 8)]
    assert meter.tokens.documents == 4  # two packed documents, then two padded rows

    class Tiny(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            from types import SimpleNamespace

            self.config = SimpleNamespace(num_hidden_layers=1, hidden_size=4)
            self.embed = torch.nn.Embedding(10, 4)
            self.proj = torch.nn.Linear(4, 4)

        def get_input_embeddings(self) -> torch.nn.Module:
            return self.embed

    result = summarize("x", "lora", meter, warmup=1, model=Tiny())
    assert result.steps == 1 and result.padding_fraction == pytest.approx(3 / 8)
    assert result.params == 4 * 4 + 4  # the embedding table is not counted


def test_compare_runs_three_configurations_and_prints_ratios(bench_recipe: Path, tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "finetune.dev.bench", "compare", str(bench_recipe), "--steps", "2", "--warmup", "1"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.splitlines()
    table = lines[lines.index(next(line for line in lines if line.startswith("finetune.dev.bench compare"))) + 1 :]
    assert [line.split()[0] for line in table[:3]] == ["toolkit", "reference", "trl"]
    padding = [float(line.split("padding")[1].split("%")[0]) for line in table[:3]]
    assert padding[0] < padding[1] and padding[0] < padding[2]  # packed vs padded batches
    assert any(line.startswith("toolkit vs reference") and "x tokens/s" in line for line in table)
    assert any(line.startswith("toolkit vs trl") for line in table)


def test_bench_writes_json_and_rejects_a_bad_recipe(bench_recipe: Path, tmp_path: Path) -> None:
    result = tmp_path / "r.json"
    ok = subprocess.run(
        [sys.executable, "-m", "finetune.dev.bench", "train", str(bench_recipe), "--steps", "1", "--warmup", "1",
         "--json", str(result)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert json.loads(result.read_text())["steps"] == 1
    bad = subprocess.run(
        [sys.executable, "-m", "finetune.dev.bench", "train", str(bench_recipe), "training.batchsize=2"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert bad.returncode == 2 and "training.batchsize" in bad.stderr and "Traceback" not in bad.stderr


def test_startup_bench_prints_each_command(capsys, monkeypatch) -> None:
    from finetune.dev.bench import STARTUP_COMMANDS
    from finetune.dev.bench import main as bench_main

    monkeypatch.chdir(Path(__file__).resolve().parents[2])
    assert bench_main(["startup", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    for label, _ in STARTUP_COMMANDS:
        row = next(line for line in out.splitlines() if line.startswith(label))
        wall, cpu = (float(x) for x in row[len(label) :].split())
        assert wall > 0 and cpu >= 0


def test_help_and_recipe_show_import_no_heavy_library() -> None:
    """The commands that load no model must not pay for torch, transformers, datasets or detect-secrets."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    code = (
        "import sys\n"
        "from finetune.cli.main import main\n"
        "assert main(['--help']) == 0\n"
        "assert main(['recipe', 'show', 'recipes/quickstart.yaml']) == 0\n"
        "heavy = {'torch', 'transformers', 'datasets', 'detect_secrets', 'trl', 'peft', 'deepspeed'}\n"
        "print('HEAVY', sorted(heavy & set(sys.modules)))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "HEAVY []" in result.stdout


def test_a_bench_result_goes_into_a_folder_not_yet_made(tmp_path, capsys):
    """The GPU check's bench steps write --json under runs/gpu-check/, which no earlier step may have created."""
    import json

    from finetune.dev.bench_train import BenchResult, write_result

    result = BenchResult("toolkit", "CPU", "lora", 6, 1437.0, 0.0, 0.48, 2.4, "RSS", 330.0, None, 1000)
    target = tmp_path / "runs" / "gpu-check" / "lora.json"
    write_result(result, str(target))
    assert json.loads(target.read_text())["tokens_per_second"] == 1437.0
    assert "1,437 tokens/s" in capsys.readouterr().out
