"""DeepSpeed (installed with the dev extras) is not imported by a run that does not use it."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import yaml
from conftest import train_recipe

from finetune.cli.deepspeed_gate import deepspeed_only_when_launched

ROOT = Path(__file__).resolve().parents[2]


def test_deepspeed_is_installed_here() -> None:
    """The other tests only mean something where DeepSpeed is installed (the dev extras install it)."""
    assert importlib.util.find_spec("deepspeed") is not None or "deepspeed" in sys.modules


def test_the_gate_hides_deepspeed_for_the_command_only(monkeypatch) -> None:
    from accelerate.utils import is_deepspeed_available

    monkeypatch.delitem(sys.modules, "deepspeed", raising=False)
    with deepspeed_only_when_launched({}) as hidden:
        assert hidden and importlib.util.find_spec("deepspeed") is None and not is_deepspeed_available()
        try:
            import deepspeed  # noqa: F401
        except ImportError:
            pass
        else:
            raise AssertionError("deepspeed imported inside the gate")
    assert "deepspeed" not in sys.modules and importlib.util.find_spec("deepspeed") is not None


def test_a_deepspeed_launch_is_not_gated(monkeypatch) -> None:
    monkeypatch.delitem(sys.modules, "deepspeed", raising=False)
    with deepspeed_only_when_launched({"ACCELERATE_USE_DEEPSPEED": "true"}) as hidden:
        assert not hidden and importlib.util.find_spec("deepspeed") is not None


def test_a_training_run_never_imports_deepspeed(tmp_path: Path, tiny_model_dir: Path, code_repo: Path) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(train_recipe(tmp_path / "run", tiny_model_dir, code_repo, max_steps=1)))
    probe = (
        "import sys; from finetune.cli.main import main; code = main(['train', sys.argv[1]]); "
        "print('DEEPSPEED_LOADED', 'deepspeed' in sys.modules and sys.modules['deepspeed'] is not None); sys.exit(code)"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    env.pop("ACCELERATE_USE_DEEPSPEED", None)
    done = subprocess.run([sys.executable, "-c", probe, str(recipe)], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "DEEPSPEED_LOADED False" in done.stdout
    assert "Setting accelerator to CPU" not in done.stdout + done.stderr
