"""Recipe schema, inheritance, overrides and the one-line errors users see."""

from __future__ import annotations

from pathlib import Path

import pytest

from finetune.config.explain import iter_keys
from finetune.config.load import apply_overrides, load_recipe, recipe_to_yaml, validate_recipe
from finetune.errors import UserError

BASE = """\
output_dir: runs/x
model:
  name_or_path: data/tiny-coder
data:
  sources:
    - type: repo
      path: data/sample-repo
training:
  learning_rate: 2e-4
"""

_RECIPE_DIR = Path(__file__).resolve().parents[2] / "recipes"
# recipes/accelerate holds Accelerate launch configs, not recipes (test_distributed checks those)
RECIPES = sorted(p for p in _RECIPE_DIR.rglob("*.yaml") if p.parent.name != "accelerate")


@pytest.fixture
def recipe_dir(tmp_path: Path) -> Path:
    (tmp_path / "base.yaml").write_text(BASE)
    (tmp_path / "child.yaml").write_text("base: base.yaml\nmethod: dora\nadapter:\n  r: 8\n")
    return tmp_path


def test_inheritance_and_typed_overrides(recipe_dir: Path) -> None:
    recipe = load_recipe(
        recipe_dir / "child.yaml",
        ["training.max_steps=50", "adapter.dropout=0.1", "data.sources.0.exclude=[docs, '*.md']", "seed=7"],
    )
    assert recipe.method == "dora"
    assert recipe.adapter.r == 8
    assert recipe.adapter.alpha == 32  # default kept
    assert recipe.training.learning_rate == pytest.approx(2e-4)  # YAML's "2e-4" string becomes a float
    assert recipe.training.max_steps == 50 and isinstance(recipe.training.max_steps, int)
    assert recipe.adapter.dropout == pytest.approx(0.1)
    assert recipe.data.sources[0].exclude == ["docs", "*.md"]
    assert recipe.seed == 7


def test_resolved_recipe_round_trips(recipe_dir: Path, tmp_path: Path) -> None:
    recipe = load_recipe(recipe_dir / "child.yaml", ["training.max_steps=5"])
    saved = tmp_path / "resolved.yaml"
    saved.write_text(recipe_to_yaml(recipe))
    assert load_recipe(saved) == recipe


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("adapter.r=-1", "adapter.r=-1 is not valid: it must be greater than 0"),
        ("method=lorra", "did you mean 'lora'?"),
        ("modle.dtype=bf16", "unknown key 'modle'; did you mean 'model'?"),
        ("data.sources.0.pathh=x", "did you mean 'path'?"),
        ("data.sources.0.type=git", "unknown source type 'git'"),
        ("training.lr_scheduler=cosin", "did you mean 'cosine'?"),
        ("training.batch_size=abc", "training.batch_size='abc' is not valid"),
        ("model.dtype=float8", "choose one of auto, bf16, fp16, fp32"),
        ("data.sources.3.path=x", "has no item 3"),
        ("novalue", "is not key=value"),
    ],
)
def test_bad_values_give_one_line_naming_key_and_fix(recipe_dir: Path, override: str, expected: str) -> None:
    with pytest.raises(UserError) as info:
        load_recipe(recipe_dir / "child.yaml", [override])
    message = str(info.value)
    assert expected in message
    assert "\n" not in message


def test_missing_file_yaml_error_and_base_loop(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="not found"):
        load_recipe(tmp_path / "nope.yaml")
    (tmp_path / "broken.yaml").write_text("output_dir: x\nmodel:\n  name_or_path: [unclosed\n")
    with pytest.raises(UserError, match=r"line \d+, column \d+: YAML syntax error"):
        load_recipe(tmp_path / "broken.yaml")
    (tmp_path / "a.yaml").write_text("base: b.yaml\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\n")
    with pytest.raises(UserError, match="inheritance loops"):
        load_recipe(tmp_path / "a.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(UserError, match="must be a mapping"):
        load_recipe(tmp_path / "list.yaml")


def test_missing_required_and_contradiction(recipe_dir: Path) -> None:
    with pytest.raises(UserError, match="missing required key 'output_dir'"):
        validate_recipe({"model": {"name_or_path": "m"}, "data": {"sources": [{"type": "repo", "path": "."}]}})
    both = load_recipe(recipe_dir / "child.yaml", ["overwrite=true", "resume=true"])  # resume wins (rundir.py)
    assert both.overwrite and both.resume
    with pytest.raises(UserError, match="quantization.fp32_norms applies to method=qlora only"):
        load_recipe(recipe_dir / "child.yaml", ["method=lora", "quantization.fp32_norms=true"])


def test_overrides_do_not_mutate_input() -> None:
    data = {"training": {"max_steps": 1}}
    out = apply_overrides(data, ["training.max_steps=2", "adapter.r=4"])
    assert data == {"training": {"max_steps": 1}}
    assert out == {"training": {"max_steps": 2}, "adapter": {"r": 4}}


def test_every_key_is_documented() -> None:
    keys = {key: (default, description) for key, _, default, description in iter_keys()}
    for required in [
        "output_dir",
        "method",
        "model.name_or_path",
        "model.dtype",
        "model.attn_implementation",
        "model.trust_remote_code",
        "adapter.r",
        "adapter.alpha",
        "adapter.dropout",
        "adapter.target_modules",
        "adapter.use_rslora",
        "adapter.modules_to_save",
        "data.max_length",
        "data.packing",
        "data.eval_split",
        "data.fim.structured_rate",
        "data.fim.random_rate",
        "data.fim.categories.function",
        "data.fim.spm_rate",
        "training.batch_size",
        "training.gradient_accumulation_steps",
        "training.learning_rate",
        "training.lr_scheduler",
        "training.warmup",
        "training.epochs",
        "training.max_steps",
        "training.weight_decay",
        "training.gradient_checkpointing",
        "seed",
        "training.logging_steps",
        "training.save_steps",
        "training.eval_steps",
        "training.report_to",
        "resume",
        "data.sources[type=repo].path",
    ]:
        assert required in keys, required
    assert all(description for _, description in keys.values())
    assert keys["model.trust_remote_code"][0] == "False"
    assert keys["adapter.target_modules"][0] == "'all-linear'"


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: str(p.relative_to(p.parents[1])))
def test_shipped_recipes_validate(path: Path) -> None:
    recipe = load_recipe(path)
    assert recipe.output_dir
