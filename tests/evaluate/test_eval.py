"""`finetune eval`: metrics, truncation per language, held-out items, the sandbox, HumanEval-format benchmarks,
evaluation during training, and the held-out split never overlapping the training files."""

from __future__ import annotations

import gzip
import io
import json
import re
import shutil
import sysconfig
import time
from collections import Counter
from contextlib import redirect_stdout
from pathlib import Path

import pytest
import yaml

from finetune.cli.main import main
from finetune.config.load import load_recipe
from finetune.data.ingest.sources import load_data_documents
from finetune.data.ingest.walk import walk_repository
from finetune.data.pipeline import split_documents
from finetune.evaluate.callback import fim_before_after, fim_eval_callback
from finetune.evaluate.items import CATEGORIES, build_items
from finetune.evaluate.metrics import edit_similarity, exact_match, score_by_category
from finetune.evaluate.sandbox import run_program
from finetune.evaluate.truncate import truncate
from finetune.training.trainer import fim_line

ROOT = Path(__file__).resolve().parents[2]
SAMPLE_REPO = ROOT / "data" / "sample-repo"
STDLIB = Path(sysconfig.get_paths()["stdlib"])


# ------------------------------------------------------------------------------------------------- metrics


def test_metrics_oracle_and_empty() -> None:
    refs = ["return a + b", "for x in xs:\n    f(x)", "int y = 2;"]
    assert all(exact_match(r, r) == 1.0 and edit_similarity(r, r) == 1.0 for r in refs)
    assert all(exact_match("", r) == 0.0 and edit_similarity("", r) == 0.0 for r in refs)
    assert exact_match("", "") == 1.0 and edit_similarity("", "") == 1.0
    assert exact_match("return a + b\n", "return a + b") == 1.0  # surrounding whitespace is not a difference
    assert 0.0 < edit_similarity("return a - b", "return a + b") < 1.0
    scores = score_by_category([("x", "a", "a"), ("x", "", "b"), ("y", "c", "c")])
    assert scores["x"].exact_match == 0.5 and scores["y"].exact_match == 1.0 and scores["overall"].n == 3
    assert scores["x"].middle_loss is None and "middle_loss" not in scores["x"].to_dict()


def test_middle_loss_is_the_mean_over_the_items_that_have_one() -> None:
    scores = score_by_category([("x", "a", "a", 2.0), ("x", "", "b", None), ("x", "", "b", 4.0), ("y", "c", "c", 1.0)])
    assert scores["x"].middle_loss == 3.0 and scores["y"].middle_loss == 1.0
    assert scores["overall"].middle_loss == pytest.approx(7.0 / 3) and scores["overall"].n == 4
    assert scores["x"].to_dict()["middle_loss"] == 3.0


# ---------------------------------------------------------------------------------------------- truncation

TRUNCATION_CASES = [
    # (language, mode, prefix, completion, expected)
    ("python", "line", "", "x = 1\ny = 2", "x = 1"),
    ("python", "unit", "    ", "if a:\n        b()\n    elif c:\n        d()\n    e()\n", "if a:\n        b()\n    elif c:\n        d()"),
    ("python", "unit", "", "@dec\ndef f():\n    return 1\n\n\ndef g():\n    pass", "@dec\ndef f():\n    return 1"),
    ("python", "unit", "    ", "x = f(1,\n  2)\n    y = 3", "x = f(1,\n  2)"),
    ("python", "unit", "    ", 's = """\nnot code\n"""\n    t = 1', 's = """\nnot code\n"""'),
    ("python", "statements", "        ", "a = 1\n        b = 2\n    return c", "a = 1\n        b = 2"),
    ("python", "header", "", "def f(a: dict[str, int]) -> int:\n    return 1", "def f(a: dict[str, int]) -> int:"),
    ("java", "unit", "        ", "if (a) {\n  b();\n} else {\n  c();\n}\nd();", "if (a) {\n  b();\n} else {\n  c();\n}"),
    ("java", "unit", "", "int x = f(\"}\");\nint y;", "int x = f(\"}\");"),
    ("java", "header", "", "public int f(int a) {\n return a;\n}", "public int f(int a)"),
    ("c++", "unit", "", "struct P {\n  int x;\n};\nint y;", "struct P {\n  int x;\n};"),
    ("c", "statements", "  ", "a();\n  b(); /* } */\n}\nint main() {}", "a();\n  b(); /* } */"),
    ("javascript", "unit", "", "const a = 1\nconst b = 2", "const a = 1"),
    ("javascript", "unit", "", "const a = xs\n  .map(f)\nfoo()", "const a = xs\n  .map(f)"),
    ("go", "unit", "\t", "for i := range xs {\n\t\tf(i)\n\t}\n\treturn", "for i := range xs {\n\t\tf(i)\n\t}"),
    ("rust", "unit", "    ", "let x = match y {\n    _ => 1,\n};\nz", "let x = match y {\n    _ => 1,\n};"),
    ("ruby", "unit", "", "def f\n  if a\n    b\n  end\nend\nputs 1", "def f\n  if a\n    b\n  end\nend"),
    ("ruby", "statements", "  ", "a = 1\n  b = 2\nend\ndef g; end", "a = 1\n  b = 2"),
    ("shell", "unit", "", 'if [ -f "$x" ]; then\n  echo $#\nfi\necho done', 'if [ -f "$x" ]; then\n  echo $#\nfi'),
    ("sql", "unit", "", "SELECT 1;\nSELECT 2;", "SELECT 1;\nSELECT 2;"),  # no rule: unchanged
]


@pytest.mark.parametrize(("language", "mode", "prefix", "completion", "expected"), TRUNCATION_CASES)
def test_truncation_rules(language, mode, prefix, completion, expected) -> None:
    assert truncate(completion, language, mode, prefix) == expected
    assert truncate(expected, language, mode, prefix) == expected  # a whole unit is never cut


# ------------------------------------------------------------------------------------------------- items


@pytest.fixture(scope="module")
def sample_items():
    documents, _ = walk_repository(SAMPLE_REPO)
    return documents, build_items(documents, per_category=8, seed=0)


def test_items_cover_the_categories_and_cut_the_file_exactly(sample_items) -> None:
    documents, items = sample_items
    texts = {doc.path: doc.text for doc in documents}
    assert {item.category for item in items} == set(CATEGORIES)
    for item in items:
        assert item.prefix + item.middle + item.suffix in texts[item.path]
        assert truncate(item.middle, item.language, item.mode, item.prefix) == item.middle
        assert (item.middle == "") == (item.category == "empty")
    assert len({item.id for item in items}) > 0.9 * len(items)
    # the same seed gives the same benchmark
    assert [i.id for i in build_items(documents, per_category=8, seed=0)] == [i.id for i in items]


def test_oracle_scores_one_and_empty_scores_zero(sample_items) -> None:
    _, items = sample_items
    oracle = score_by_category((it.category, it.middle, it.middle) for it in items)
    assert all(s.exact_match == 1.0 and s.edit_similarity == 1.0 for s in oracle.values())
    empty = score_by_category((it.category, "", it.middle) for it in items if it.category != "empty")
    assert all(s.exact_match == 0.0 and s.edit_similarity == 0.0 for s in empty.values())


def test_truncation_recovers_most_units_from_a_model_that_keeps_writing(sample_items) -> None:
    """A completion that goes on with the rest of the file is cut back to the reference for units that end."""
    _, items = sample_items
    # empty and body top/middle are followed by more statements of the same body: only EOS can end them
    ending = [it for it in items if it.category not in ("empty", "body_top", "body_middle")]
    recovered = sum(truncate(it.middle + it.suffix, it.language, it.mode, it.prefix) == it.middle for it in ending)
    assert recovered >= 0.9 * len(ending)


# ------------------------------------------------------------------------------------------------ sandbox


def test_sandbox_stops_infinite_loops_and_memory_hogs() -> None:
    assert run_program("assert sum(range(4)) == 6").passed
    failed = run_program("assert 1 == 2, 'wrong'")
    assert not failed.passed and "AssertionError: wrong" in failed.reason
    start = time.perf_counter()
    loop = run_program("while True:\n    pass\n", timeout_s=1.5)
    assert not loop.passed and "timed out" in loop.reason and time.perf_counter() - start < 6
    start = time.perf_counter()
    hog = run_program("xs = []\nwhile True:\n    xs.append(bytearray(50_000_000))\n", timeout_s=20, memory_mb=300)
    assert not hog.passed and "memory" in hog.reason and time.perf_counter() - start < 10


# --------------------------------------------------------------------------------------- HumanEval format

TASKS = [
    {
        "task_id": "SingleLineInfilling/Fixture/0/L0",
        "prompt": "def add(a, b):\n",
        "suffix": "\n",
        "canonical_solution": "    return a + b",
        "test": "def check(candidate):\n    assert candidate(2, 3) == 5\n",
        "entry_point": "add",
    },
    {
        "task_id": "MultiLineInfilling/Fixture/1/L0_L2",
        "prompt": "def evens(xs):\n    out = []\n",
        "suffix": "    return out\n",
        "canonical_solution": "    for x in xs:\n        if x % 2 == 0:\n            out.append(x)\n",
        "test": "def check(candidate):\n    assert candidate([1, 2, 3, 4]) == [2, 4]\n",
        "entry_point": "evens",
    },
]


def _write_tasks(path: Path, tasks: list[dict]) -> Path:
    text = "".join(json.dumps(t) + "\n" for t in tasks)
    if path.suffix == ".gz":
        with gzip.open(path, "wt", encoding="utf-8") as handle:
            handle.write(text)
    else:
        path.write_text(text)
    return path


@pytest.mark.parametrize("name", ["tasks.jsonl", "tasks.jsonl.gz"])
def test_benchmark_oracle_passes_everything(name: str, tmp_path: Path) -> None:
    bench = _write_tasks(tmp_path / name, TASKS)
    assert main(["eval", "--benchmark", str(bench), "--oracle", "--out", str(tmp_path / "out")]) == 0
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["pass@1"] == 1.0 and results["tasks"] == 2
    assert "pass@1" in (tmp_path / "out" / "report.md").read_text()


def test_benchmark_failing_and_looping_tasks_are_failed_items(tmp_path: Path) -> None:
    tasks = [dict(TASKS[0]), dict(TASKS[1], task_id="x/loop", canonical_solution="    while True:\n        pass\n")]
    tasks[0]["canonical_solution"] = "    return a - b"
    bench = _write_tasks(tmp_path / "bad.jsonl", tasks)
    out = tmp_path / "out"
    assert main(["eval", "--benchmark", str(bench), "--oracle", "--timeout", "1.5", "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["pass@1"] == 0.0
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert "AssertionError" in rows[0]["oracle.reason"] and "timed out" in rows[1]["oracle.reason"]


def test_benchmark_line_missing_a_field_is_one_line_error(tmp_path: Path, capsys) -> None:
    bench = _write_tasks(tmp_path / "t.jsonl", [TASKS[0], {k: v for k, v in TASKS[1].items() if k != "test"}])
    assert main(["eval", "--benchmark", str(bench), "--oracle", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "line 2 lacks the field(s) test" in err and err.count("\n") == 1


def test_benchmark_with_a_model_reports_pass_at_1(tmp_path: Path, tiny_model_dir: Path) -> None:
    bench = _write_tasks(tmp_path / "t.jsonl", TASKS)
    out = tmp_path / "out"
    args = ["eval", "--benchmark", str(bench), "--model", str(tiny_model_dir), "--max-new-tokens", "4", "--out", str(out)]
    assert main(args) == 0
    results = json.loads((out / "results.json").read_text())
    assert 0.0 <= results["pass@1"] <= 1.0 and results["runs"][0]["generation"]["new_tokens"] > 0


# ---------------------------------------------------------------------------- training -> held-out -> eval


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> tuple[Path, Path, str]:
    """`finetune train`: 2 LoRA steps over a small repository, FIM evaluation at every step; (run, repo, stdout)."""
    root = tmp_path_factory.mktemp("evalrun")
    repo = root / "repo"
    repo.mkdir()
    for name in ["colorsys.py", "bisect.py", "fnmatch.py", "glob.py", "textwrap.py", "shlex.py"]:
        shutil.copy(STDLIB / name, repo / name)
    recipe = {
        "output_dir": str(root / "run"),
        "model": {"name_or_path": str(tiny_model_dir), "family": "starcoder"},
        "adapter": {"r": 4, "alpha": 8, "dropout": 0.0},
        "data": {"sources": [{"type": "repo", "path": str(repo)}], "max_length": 128, "eval_split": 0.3},
        "training": {"batch_size": 2, "max_steps": 2, "logging_steps": 1, "save_steps": 1000, "warmup": 0},
        "eval": {"fim_items": 3, "max_new_tokens": 4, "every_steps": 1},
    }
    (root / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    with redirect_stdout(io.StringIO()) as stdout:
        assert main(["train", str(root / "recipe.yaml")]) == 0
    return root / "run", repo, stdout.getvalue()


def test_training_logs_fim_scores(trained_run) -> None:
    run_dir, _, _ = trained_run
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    fim = [r for r in records if "fim_exact_match" in r]
    assert [r["step"] for r in fim] == [0, 1, 2]  # before training, every step, and at the end (once)
    assert all(r["fim_items"] == 3 and 0.0 <= r["fim_edit_similarity"] <= 1.0 for r in fim)


def test_train_summary_prints_held_out_fim_before_and_after(trained_run) -> None:
    run_dir, _, stdout = trained_run
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    scored = [r for r in records if "fim_exact_match" in r]
    first, last = scored[0], scored[-1]
    lines = [line for line in stdout.splitlines() if "held-out FIM" in line]
    assert len(lines) == 1
    pct = r"(\d+\.\d)%"
    loss = r"(\d+\.\d{3})"
    match = re.fullmatch(
        rf"held-out FIM: exact match {pct} -> {pct}, edit similarity {pct} -> {pct}, middle loss {loss} -> {loss}",
        lines[0],
    )
    assert match, lines[0]
    expected = [first["fim_exact_match"], last["fim_exact_match"], first["fim_edit_similarity"], last["fim_edit_similarity"]]
    assert list(match.groups())[:4] == [f"{100 * v:.1f}" for v in expected]
    losses = [first["fim_middle_loss"], last["fim_middle_loss"]]
    assert list(match.groups())[4:] == [f"{v:.3f}" for v in losses]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["held_out_fim"] == {
        "items": 3,
        "steps": [0, 2],
        "exact_match": expected[:2],
        "edit_similarity": expected[2:],
        "middle_loss": losses,
    }


def test_quickstart_holds_out_code_of_several_languages_with_enough_items(tmp_path: Path) -> None:
    """README line 1's before/after numbers come from Python, Go and shell completions, at the training length."""
    from transformers import AutoTokenizer

    recipe = load_recipe(ROOT / "recipes" / "quickstart.yaml", [f"data.sources.0.path={SAMPLE_REPO}"])
    documents, _ = load_data_documents(recipe.data)
    _, held = split_documents(documents, recipe.data.eval_split, recipe.seed)
    tokenizer = AutoTokenizer.from_pretrained(ROOT / recipe.model.name_or_path)
    callback = fim_eval_callback(recipe, tokenizer, "starcoder", [d.path for d in held], tmp_path / "m.jsonl")
    assert callback is not None and len(callback.items) == recipe.eval.fim_items >= 40
    by_language = Counter(item.language for item in callback.items)
    assert {"python", "go", "shell"} <= set(by_language) and min(by_language.values()) >= 5, by_language
    assert len({item.category for item in callback.items}) >= 8
    budget = recipe.data.max_length - recipe.eval.max_new_tokens  # prompts as long as the training sequences
    assert all(len(callback.encoder.infill_prompt_ids(i.prefix, i.suffix, i.path, i.language)) <= budget
               for i in callback.items)  # fmt: skip


def test_fim_before_after_takes_the_first_and_last_scores() -> None:
    records = [
        {"step": 0, "fim_items": 4, "fim_exact_match": 0.0, "fim_edit_similarity": 0.1},
        {"step": 1, "loss": 2.0},
        {"step": 5, "fim_items": 4, "fim_exact_match": 0.25, "fim_edit_similarity": 0.4},
        {"step": 9, "fim_items": 4, "fim_exact_match": 0.5, "fim_edit_similarity": 0.625},
        {"step": 9, "final_eval_loss": 1.5},
    ]
    fim = fim_before_after(records)
    assert fim == {"items": 4, "steps": [0, 9], "exact_match": [0.0, 0.5], "edit_similarity": [0.1, 0.625]}
    assert fim_line(fim) == "held-out FIM: exact match 0.0% -> 50.0%, edit similarity 10.0% -> 62.5%"
    assert fim_before_after([{"step": 1, "loss": 2.0}]) is None


def test_eval_uses_only_held_out_files(trained_run, tiny_model_dir: Path, tmp_path: Path) -> None:
    run_dir, repo, _ = trained_run
    held = set(json.loads((run_dir / "split.json").read_text())["eval_paths"])
    documents, _ = walk_repository(repo)
    trained_on = {doc.path for doc in documents} - held
    assert held and trained_on and not held & trained_on
    out = tmp_path / "ev"
    code = main(["eval", "--adapter", str(run_dir), "--repo", str(repo), "--compare", str(tiny_model_dir),
                 "--per-category", "2", "--max-new-tokens", "6", "--out", str(out), "--plot"])  # fmt: skip
    assert code == 0
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    paths = {row["path"] for row in rows}
    assert paths and paths <= held and not paths & trained_on
    results = json.loads((out / "results.json").read_text())
    tuned, base = results["runs"]
    assert tuned["scores"]["overall"]["n"] == base["scores"]["overall"]["n"] == len(rows)
    assert tuned["generation"]["tokens_per_second"] > 0
    for run in (tuned, base):  # every item's reference middle scored, and the mean is the items' mean
        losses = [row[f"{run['label']}.middle_loss"] for row in rows]
        assert all(loss > 0 for loss in losses)
        assert run["scores"]["overall"]["middle_loss"] == pytest.approx(sum(losses) / len(losses), abs=1e-3)
    assert (out / "scores.png").read_bytes()[:4] == b"\x89PNG"
    report = (out / "report.md").read_text()
    assert "| **overall** |" in report and f"EM {tuned['label']}" in report and f"EM {base['label']}" in report
    assert f"loss {tuned['label']}" in report


def test_eval_rejects_a_split_from_another_repo(trained_run, tmp_path: Path, capsys) -> None:
    run_dir, _, _ = trained_run
    code = main(["eval", "--adapter", str(run_dir), "--repo", str(SAMPLE_REPO), "--out", str(tmp_path / "o")])
    assert code == 2 and "none of the" in capsys.readouterr().err


def test_eval_oracle_on_a_repo_scores_one(tmp_path: Path) -> None:
    out = tmp_path / "o"
    assert main(["eval", "--repo", str(SAMPLE_REPO), "--oracle", "--per-category", "3", "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["runs"][0]["scores"]["overall"]["exact_match"] == 1.0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--oracle"], "exactly one of --repo"),
        (["--repo", str(SAMPLE_REPO), "--benchmark", __file__, "--oracle"], "exactly one of --repo"),
        (["--repo", str(SAMPLE_REPO)], "pass --model"),
        (["--benchmark", "missing.jsonl", "--oracle"], "missing.jsonl not found"),
    ],
)
def test_eval_bad_arguments_are_one_line(args, message, tmp_path: Path, capsys) -> None:
    assert main(["eval", *args, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
