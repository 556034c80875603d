"""Bad input on the command line: one line naming the problem and the fix, exit status 2, nothing written."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import finetune
from finetune.cli.main import main


def write_recipe(tmp_path: Path, model: str, repo: str, **top) -> Path:
    data = {
        "output_dir": str(tmp_path / "out"),
        "model": {"name_or_path": model, "family": "starcoder"},
        "data": {"sources": [{"type": "repo", "path": repo}], "max_length": 64},
        "training": {"max_steps": 1},
        **top,
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def fails_cleanly(capsys, argv: list[str], expected: str, tmp_path: Path | None = None) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    assert expected in err, err
    if tmp_path is not None:
        assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()
    return err


def test_help_lists_subcommands() -> None:
    result = subprocess.run([sys.executable, "-m", "finetune", "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    assert "train" in result.stdout and "recipe" in result.stdout and "cache" in result.stdout
    version = subprocess.run([sys.executable, "-m", "finetune", "--version"], capture_output=True, text=True)
    assert version.returncode == 0 and version.stdout.strip() == f"finetune {finetune.__version__}"


def test_real_exit_status_and_single_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "finetune", "train", str(tmp_path / "missing.yaml")], capture_output=True, text=True
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "not found" in result.stderr


def test_recipe_show_applies_overrides(tmp_path: Path, capsys) -> None:
    recipe = write_recipe(tmp_path, "m", ".")
    assert main(["recipe", "show", str(recipe), "adapter.r=4", "training.learning_rate=1e-5"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["adapter"]["r"] == 4 and shown["training"]["learning_rate"] == pytest.approx(1e-5)
    assert shown["adapter"]["alpha"] == 32.0  # defaults are filled in


def test_recipe_keys_lists_descriptions(capsys) -> None:
    assert main(["recipe", "keys"]) == 0
    out = capsys.readouterr().out
    assert "adapter.use_rslora" in out and "Rank-stabilised" in out


def test_yaml_error_shows_line(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("output_dir: x\nmodel:\n  name_or_path: m\n   family: qwen\n")
    fails_cleanly(capsys, ["train", str(bad)], "line 4")


@pytest.mark.parametrize(
    ("override", "expected"),
    [("adapter.r=-1", "adapter.r"), ("method=lorra", "'lora'"), ("adapter.rnk=4", "unknown key 'adapter.rnk'")],
)
def test_bad_recipe_values(tmp_path: Path, capsys, override: str, expected: str) -> None:
    recipe = write_recipe(tmp_path, "m", ".")
    fails_cleanly(capsys, ["train", str(recipe), override], expected, tmp_path)


def test_missing_repository(tmp_path: Path, capsys, tiny_model_dir: Path) -> None:
    recipe = write_recipe(tmp_path, str(tiny_model_dir), str(tmp_path / "no-such-repo"))
    fails_cleanly(capsys, ["train", str(recipe)], "does not exist", tmp_path)


def test_repository_is_a_file(tmp_path: Path, capsys, tiny_model_dir: Path) -> None:
    (tmp_path / "file.py").write_text("x = 1\n")
    recipe = write_recipe(tmp_path, str(tiny_model_dir), str(tmp_path / "file.py"))
    fails_cleanly(capsys, ["train", str(recipe)], "must be a folder", tmp_path)


def test_repository_without_usable_files(tmp_path: Path, capsys, tiny_model_dir: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "image.bin").write_bytes(b"\x00\x01\x02" * 100)
    (repo / "notes.unknownext").write_text("hello")
    recipe = write_recipe(tmp_path, str(tiny_model_dir), str(repo))
    fails_cleanly(capsys, ["train", str(recipe)], str(repo), tmp_path)


def test_missing_model(tmp_path: Path, capsys) -> None:
    recipe = write_recipe(tmp_path, str(tmp_path / "no-model"), ".")
    fails_cleanly(capsys, ["train", str(recipe)], "model.name_or_path", tmp_path)


def test_qlora_without_bitsandbytes(tmp_path: Path, capsys, monkeypatch, tiny_model_dir: Path) -> None:
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # makes `import bitsandbytes` fail
    recipe = write_recipe(tmp_path, str(tiny_model_dir), ".", method="qlora")
    fails_cleanly(capsys, ["train", str(recipe)], "pip install", tmp_path)


def test_output_dir_not_writable(tmp_path: Path, capsys, tiny_model_dir: Path) -> None:
    (tmp_path / "blocker").write_text("a file where a folder should be")
    recipe = write_recipe(tmp_path, str(tiny_model_dir), ".", output_dir=str(tmp_path / "blocker" / "run"))
    fails_cleanly(capsys, ["train", str(recipe)], "cannot write output_dir", tmp_path)


def test_missing_fim_tokens(tmp_path: Path, capsys, tiny_model_dir: Path) -> None:
    recipe = write_recipe(tmp_path, str(tiny_model_dir), ".")
    fails_cleanly(capsys, ["train", str(recipe), "model.family=codellama"], "add_fim_tokens", tmp_path)


def test_missing_experiment_tracker(tmp_path: Path, capsys, monkeypatch, tiny_model_dir: Path) -> None:
    monkeypatch.setitem(sys.modules, "wandb", None)
    recipe = write_recipe(tmp_path, str(tiny_model_dir), ".")
    fails_cleanly(capsys, ["train", str(recipe), "training.report_to=wandb"], "pip install wandb", tmp_path)
