"""The proof-of-value experiment: bootstrap intervals, the tables, and one whole --quick run on a tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pathspec
import pytest
import yaml

from finetune.dev.experiment import Settings, check_settings, exclude_patterns, main
from finetune.dev.experiment_report import (
    Interval,
    bootstrap_ci,
    category_intervals,
    difference_table,
    pool_seeds,
    results_markdown,
    score_table,
    verdict,
)
from finetune.errors import UserError


def test_constant_scores_have_a_zero_width_interval() -> None:
    for value in (0.0, 0.3, 1.0):
        interval = bootstrap_ci([value] * 50)
        assert interval == Interval(pytest.approx(value), interval.mean, interval.mean)


def test_identical_arms_differ_by_an_interval_around_zero() -> None:
    arm = np.random.default_rng(1).random(80)
    assert bootstrap_ci(arm - arm) == Interval(0.0, 0.0, 0.0)
    # differences that cancel leave rounding residue in resampled means: it must not count as a difference
    residue = Interval(-1e-17, -2e-17, -1e-18)
    assert residue.excludes_zero() and residue.snapped() == Interval(0.0, 0.0, 0.0)
    shuffled = np.random.default_rng(2).permutation(arm)  # same scores on other items: no real difference
    interval = bootstrap_ci(arm - shuffled)
    assert interval.low < 0 < interval.high and not interval.excludes_zero()


def test_a_clear_improvement_excludes_zero() -> None:
    rng = np.random.default_rng(3)
    base = rng.binomial(1, 0.2, 120).astype(float)
    tuned = np.maximum(base, rng.binomial(1, 0.5, 120))  # never worse, often better
    interval = bootstrap_ci(tuned - base)
    assert interval.low > 0 and interval.excludes_zero()


def test_interval_width_matches_the_normal_approximation_and_is_seeded() -> None:
    coin = np.tile([0.0, 1.0], 200)  # mean 0.5, standard error sqrt(0.25 / 400) = 0.025
    interval = bootstrap_ci(coin, resamples=4000, seed=7)
    assert interval.mean == 0.5
    assert 0.04 < interval.high - 0.5 < 0.06 and 0.04 < 0.5 - interval.low < 0.06
    assert bootstrap_ci(coin, resamples=4000, seed=7) == interval
    assert bootstrap_ci(coin, resamples=4000, seed=8) != interval


def test_seeds_pool_per_item_and_categories_keep_their_items() -> None:
    pooled = pool_seeds([np.array([1.0, 0.0, 1.0]), np.array([0.0, 0.0, 1.0])])
    assert pooled.tolist() == [0.5, 0.0, 1.0]
    scores = {"exact_match": pooled, "edit_similarity": np.array([0.9, 0.1, 1.0])}
    cells = category_intervals(["if_block", "empty", "if_block"], scores, resamples=100, seed=0)
    assert list(cells) == ["if_block", "empty", "overall"]
    assert [cells[c]["n"] for c in cells] == [2, 1, 3]
    assert cells["empty"]["exact_match"] == Interval(0.0, 0.0, 0.0)
    assert cells["overall"]["edit_similarity"].mean == pytest.approx(2.0 / 3)


def test_tables_show_means_intervals_and_significant_differences() -> None:
    cell = {
        "n": 8,
        "exact_match": Interval(0.5, 0.25, 0.75),
        "edit_similarity": Interval(0.8, 0.7, 0.9),
        "middle_loss": Interval(3.5, 3.25, 3.75),
    }
    few = {**cell, "n": 3}
    arms = {
        "base": {"if_block": cell, "empty": few, "overall": cell},
        "lora": {"if_block": cell, "empty": few, "overall": cell},
    }
    lines = score_table(arms, "exact_match")
    assert lines[0] == "| category | n | base | lora |"
    assert lines[2] == "| if_block | 8 | 50.0 [25.0, 75.0] | 50.0 [25.0, 75.0] |"
    assert lines[3] == "| empty | 3 | 50.0 † | 50.0 † |"  # too few items for an interval
    assert lines[4].startswith("| **overall** | 8 |") and len(lines) == 5
    up = {
        "n": 8,
        "exact_match": Interval(0.1, 0.02, 0.2),
        "edit_similarity": Interval(0.0, -0.1, 0.1),
        "middle_loss": Interval(-0.2, -0.3, -0.1),
    }
    diffs = {"lora - base": {"if_block": up, "empty": {**up, "n": 3}, "overall": up}}
    assert difference_table(diffs, "exact_match")[2] == "| if_block | 8 | **+10.0 [+2.0, +20.0]** |"
    assert difference_table(diffs, "exact_match")[3] == "| empty | 3 | +10.0 † |"
    assert difference_table(diffs, "edit_similarity")[2] == "| if_block | 8 | +0.0 [-10.0, +10.0] |"
    assert score_table(arms, "middle_loss")[2] == "| if_block | 8 | 3.500 [3.250, 3.750] | 3.500 [3.250, 3.750] |"
    assert difference_table(diffs, "middle_loss")[2] == "| if_block | 8 | **-0.200 [-0.300, -0.100]** |"
    experiment = {"key": "a", "title": "Base vs LoRA", "arms": ("base", "lora"), "differences": ("lora - base",)}
    seeds = {"lora": {"1": {"exact_match": 0.5, "edit_similarity": 0.8, "middle_loss": 3.25}}}
    text = results_markdown([experiment], arms, diffs, seeds, ["- x"])
    assert "## (a) Base vs LoRA" in text and "| lora | 1 | 50.0 | 80.0 | 3.250 |" in text
    assert text.count("| category | n |") == 6  # EM, ES and loss scores, then their differences
    # the summary reads each metric the right way round: a lower loss and a higher exact match are both better
    assert "- lora vs base, exact match: lora is **better** (+10.0 [+2.0, +20.0] percentage points)" in text
    assert "- lora vs base, edit similarity: no clear difference" in text
    assert "- lora vs base, middle loss: lora is **better** (-0.200 [-0.300, -0.100] nats/token)" in text


def test_verdict_says_worse_when_the_interval_is_on_the_wrong_side() -> None:
    assert "full is **worse**" in verdict("full - base", "middle_loss", Interval(0.2, 0.1, 0.3))
    assert "full is **worse**" in verdict("full - base", "edit_similarity", Interval(-0.02, -0.04, -0.01))


def test_exclude_patterns_match_exactly_the_held_out_files() -> None:
    spec = pathspec.GitIgnoreSpec.from_lines(exclude_patterns(["a[1].py", "pkg/b*.py"]))
    assert spec.match_file("a[1].py") and spec.match_file("pkg/b*.py")
    assert not spec.match_file("a1.py") and not spec.match_file("pkg/bx.py") and not spec.match_file("sub/a[1].py")


def test_settings_may_change_until_a_part_has_finished(tmp_path: Path) -> None:
    check_settings(tmp_path, Settings(model="typo", repo="r"))
    (tmp_path / "split.json").write_text("{}")
    check_settings(tmp_path, Settings(model="m", repo="r"))  # nothing trained or scored yet: just fixed
    assert json.loads((tmp_path / "settings.json").read_text())["model"] == "m"
    assert not (tmp_path / "split.json").exists()  # chosen again, for the repository now given
    (tmp_path / "runs" / "lora-s1").mkdir(parents=True)
    (tmp_path / "runs" / "lora-s1" / "summary.json").write_text("{}")
    check_settings(tmp_path, Settings(model="m", repo="r", seeds=5))  # more seeds: the same experiment
    with pytest.raises(UserError, match="other settings: model='m' \\(now 'x'\\)"):
        check_settings(tmp_path, Settings(model="x", repo="r"))


def test_quick_run_writes_the_three_files_and_resumes(
    tmp_path: Path, tiny_model_dir: Path, code_repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "experiment"
    args = ["--out", str(out), "--model", str(tiny_model_dir), "--repo", str(code_repo), "--quick"]
    assert main(args) == 0
    results = json.loads((out / "results.json").read_text())
    assert set(results["scores"]) == {"base", "lora", "full", "structured", "random"}
    assert {"structured - random", "lora - base", "full - base"} <= set(results["differences"])
    overall = results["scores"]["lora"]["overall"]
    assert overall["n"] == results["items"] > 0
    assert overall["exact_match"]["low"] <= overall["exact_match"]["mean"] <= overall["exact_match"]["high"]
    assert 0 < overall["middle_loss"]["low"] <= overall["middle_loss"]["mean"] <= overall["middle_loss"]["high"]
    assert {r["steps"] for r in results["training"].values()} == {2}
    held = set(json.loads((out / "split.json").read_text())["eval_paths"])
    assert held and all(p.split(":")[0] in held for p in (r["id"] for r in _rows(out / "eval" / "base")))
    assert "## (b) Structured vs random FIM" in (out / "results.md").read_text()
    assert (out / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    capsys.readouterr()
    assert main(args) == 0  # everything is done: a second run only redoes the analysis
    log = capsys.readouterr().out
    assert log.count("finished earlier, skipped") == 4 and log.count("scored earlier, skipped") == 5
    assert main([*args, "--steps", "3"]) == 2  # other settings would mix incomparable runs
    assert "steps=2 (now 3)" in capsys.readouterr().err


def test_a_sweep_point_trains_chosen_arms_with_overrides_and_adds_arms_later(
    tmp_path: Path, tiny_model_dir: Path, code_repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "sweep"
    args = ["--out", str(out), "--model", str(tiny_model_dir), "--repo", str(code_repo), "--quick"]
    sweep = ["--set", "training.learning_rate=5e-4", "--set", "adapter.r=4"]
    assert main([*args, "--arms", "lora", *sweep]) == 0
    results = json.loads((out / "results.json").read_text())
    assert set(results["scores"]) == {"base", "lora"} and set(results["differences"]) == {"lora - base"}
    saved = yaml.safe_load((out / "runs" / "lora-s1" / "recipe.yaml").read_text())
    assert saved["training"]["learning_rate"] == 5e-4 and saved["adapter"]["r"] == 4
    assert "training.learning_rate=5e-4 adapter.r=4" in (out / "results.md").read_text()
    assert "(b) Structured" not in (out / "results.md").read_text()
    capsys.readouterr()
    assert main([*args, "--arms", "lora,full", *sweep]) == 0  # one more arm: only it is trained
    log = capsys.readouterr().out
    assert log.count("finished earlier, skipped") == 1 and log.count("scored earlier, skipped") == 2
    assert set(json.loads((out / "results.json").read_text())["differences"]) == {"lora - base", "full - base", "full - lora"}
    assert main([*args, "--arms", "lora", "--set", "training.learning_rate=1e-3"]) == 2  # another sweep point
    assert "recipe_overrides" in capsys.readouterr().err
    assert main(["--out", str(tmp_path / "bad"), "--quick", "--set", "training.lerning_rate=1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "lerning_rate" in err
    with pytest.raises(SystemExit):
        main([*args, "--arms", "lora,dora"])


def _rows(eval_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (eval_dir / "predictions.jsonl").read_text().splitlines()]
