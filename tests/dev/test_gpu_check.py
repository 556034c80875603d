"""The prepared GPU run, checked without a GPU: its plan fits 8 minutes and the carried wheels cover the machine."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from finetune.dev.bench import main as bench_main
from finetune.dev.gpu_check import BUDGET_S, plan
from finetune.dev.gpu_wheels import REQUIRED, missing, normalized, slim_bitsandbytes

ORDER = ["gpu-tests", "prepare-1.5b", "single-lora", "fsdp2-lora", "fsdp2-full", "zero3-full", "zero3-qlora",
         "qlora-7b-compare", "lora-bf16-sdpa-varlen", "lora-bf16-fa4"]  # fmt: skip


def _fake_wheels(folder: Path, specs: list[str]) -> Path:
    folder.mkdir()
    for spec in specs:
        name, version = spec.split("==")
        (folder / f"{normalized(name)}-{version}-py3-none-any.whl").write_bytes(b"")
    return folder


def test_dry_run_plans_every_step_within_the_budget(tmp_path: Path, capsys) -> None:
    wheels = _fake_wheels(tmp_path / "whl", REQUIRED)
    assert bench_main(["gpu-check", "--dry-run", "--wheels", str(wheels)]) == 0
    out = capsys.readouterr().out
    rows = [line.split()[0] for line in out.splitlines()[1:-2]]
    assert rows == ORDER
    total = int(out.splitlines()[-2].split()[1])
    assert total <= BUDGET_S == 480
    assert all(step.timeout_s > 0 for step in plan())


def test_dry_run_reports_a_missing_wheel(tmp_path: Path, capsys) -> None:
    wheels = _fake_wheels(tmp_path / "whl", [s for s in REQUIRED if not s.startswith(("trl==", "bitsandbytes=="))])
    assert missing(wheels) == ["trl==1.16.0", "bitsandbytes==0.50.2"]
    assert bench_main(["gpu-check", "--dry-run", "--wheels", str(wheels)]) == 2
    err = capsys.readouterr().err
    assert "trl==1.16.0" in err and "bitsandbytes==0.50.2" in err and "gpu_wheels.sh" in err


def test_without_a_gpu_the_check_refuses_and_unknown_steps_are_named(capsys) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is here: the check would run")
    assert bench_main(["gpu-check", "--only", "gpu-tests"]) == 2
    assert "no CUDA GPU" in capsys.readouterr().err
    assert bench_main(["gpu-check", "--only", "zero4-full"]) == 2
    assert "unknown step zero4-full" in capsys.readouterr().err


def test_bitsandbytes_keeps_only_its_cuda_13_libraries(tmp_path: Path) -> None:
    wheel = tmp_path / "bitsandbytes-0.50.2-py3-none-manylinux_2_24_x86_64.whl"
    libs = ["cpu", "cuda118", "cuda128", "cuda130", "cuda132", "rocm64", "xpu2025"]
    with zipfile.ZipFile(wheel, "w") as archive:
        for lib in libs:
            archive.writestr(f"bitsandbytes/libbitsandbytes_{lib}.so", b"x" * 100)
        archive.writestr("bitsandbytes/__init__.py", "")
        record = "".join(f"bitsandbytes/libbitsandbytes_{lib}.so,sha256=x,100\n" for lib in libs)
        archive.writestr("bitsandbytes-0.50.2.dist-info/RECORD", record)
    slim_bitsandbytes(wheel)
    with zipfile.ZipFile(wheel) as archive:
        kept = sorted(n.split("_", 1)[1].removesuffix(".so") for n in archive.namelist() if n.endswith(".so"))
        record = archive.read("bitsandbytes-0.50.2.dist-info/RECORD").decode()
        assert "bitsandbytes/__init__.py" in archive.namelist()
    assert kept == ["cpu", "cuda130", "cuda132"]
    assert "cuda118" not in record and "cuda130" in record


def test_reload_rebuilds_a_random_init_base_under_the_adapter(tmp_path: Path, tiny_model_dir: Path, code_repo: Path):
    """The check's 1.5B base is randomly initialised and has no weights on disk: an adapter must reload onto the
    base training built (the first rehearsal failed here: 'no file named model.safetensors')."""
    import json

    from conftest import train_recipe

    from finetune.config.load import validate_recipe
    from finetune.dev.gpu_check import reload
    from finetune.training.trainer import run

    base = tmp_path / "base"  # the tiny model's config and tokenizer, no weights
    base.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        (base / name).write_bytes((tiny_model_dir / name).read_bytes())
    data = train_recipe(tmp_path / "run", base, code_repo, max_steps=2)
    data["model"]["random_init"] = True
    run(validate_recipe(data))
    assert not list(base.glob("*.safetensors"))
    assert reload(str(tmp_path / "run"), "lora", str(tmp_path / "reload.json")) == 0
    record = json.loads((tmp_path / "reload.json").read_text())
    assert record["reloaded"] is True and record["steps"] == 2
