"""Every command rejects malformed input up front: exit status 2, one `error:` line, no traceback, nothing written.

Each case runs the real command line in this process (`finetune.cli.main.main`), so an unexpected exception fails the
test with its traceback; the folder the case may write to and the data cache are compared before and after.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from finetune.cli.main import main

REPO_ROOT = Path(__file__).resolve().parents[2]
TINY = REPO_ROOT / "data" / "tiny-coder"
SAMPLE_REPO = REPO_ROOT / "data" / "sample-repo"

# Recipe overrides that must each be refused by `train`, `prepare`, `data inspect`, `recipe show` or `launch-check`.
BAD_OVERRIDES = [
    "training.max_steps=-5",
    "training.max_steps=0",
    "training.batch_size=1000000000000",
    "training.batch_size=0",
    "training.batch_size=abc",
    "training.gradient_accumulation_steps=0",
    "training.learning_rate=nan",
    "training.learning_rate=.inf",
    "training.learning_rate=-1",
    "training.epochs=0",
    "training.warmup=-1",
    "training.warmup=2.5",
    "training.save_total_limit=0",
    "training.eval_steps=0",
    "training.logging_steps=0",
    "training.lr_scheduler=cosin",
    "training.max_grad_norm=-1",
    "training.dataloader_num_workers=-1",
    "training.max_step=10",
    "seed=-1",
    "seed=abc",
    "method=lorra",
    "model.family=foo",
    "model.dtype=fp8",
    "model.name_or_path={W}/no-such-model",
    "model.name_or_path={F}",
    "adapter.r=0",
    "adapter.r=100000",
    "adapter.alpha=0",
    "adapter.dropout=1.5",
    "adapter.target_modules=5",
    "data.sources=[]",
    "data.sources.0.path={W}/no-such-repo",
    "data.sources.0.path={F}",
    "data.sources.0.type=github",
    "data.sources.0.max_file_bytes=0",
    "data.sources.5.path=x",
    "data.max_length=0",
    "data.max_length=1000000000000",
    "data.eval_split=1.0",
    "data.eval_split=-0.1",
    "data.fim.structured_rate=1.5",
    "data.fim.spm_rate=-1",
    "data.fim.random_rate=0.6",
    "data.fim.categories.function=-1",
    "data.near_dup_threshold=0",
    "data.dedup=fuzzy",
    "data.context.k=0",
    "data.context.budget_chars=-1",
    "data.cache_dir={F}",
    "data.sft.decontaminate.benchmarks=[{W}/missing.jsonl]",
    "data.sft.chat_template={W}/missing.jinja",
    "eval.fim_items=-1",
    "quantization.quant_type=int3",
    "output_dir={F}",
    "output_dir={F}/run",
    "training.max_steps",
]

# Whole command lines (after `finetune`).
BAD_COMMANDS = [
    # recipes
    "train {W}/missing.yaml",
    "train {D}",
    "train {W}/syntax.yaml",
    "train {W}/list.yaml",
    "train {W}/latin1.yaml",
    "train {W}/loop.yaml",
    "train {W}/missing-base.yaml",
    "train {W}/instructions-missing.yaml",
    "prepare {W}/missing.yaml",
    "recipe show {W}/missing.yaml",
    "train",
    "frobnicate",
    # data fim
    "data fim {S} --spm-rate 2 --out {W}/out.jsonl",
    "data fim {S} --spm-rate nan --out {W}/out.jsonl",
    "data fim {S} --max-chars -5 --out {W}/out.jsonl",
    "data fim {S} --max-chars 0 --out {W}/out.jsonl",
    "data fim {S} --out {D}",
    "data fim {S} --out {F}/out.jsonl",
    "data fim {S} --mode foo --out {W}/out.jsonl",
    "data fim {S} --family foo --out {W}/out.jsonl",
    "data fim {S} --seed abc --out {W}/out.jsonl",
    "data fim {S} --seed -1 --out {W}/out.jsonl",
    "data fim {S} --dedup fuzzy --out {W}/out.jsonl",
    "data fim {W}/no-such-repo --out {W}/out.jsonl",
    "data fim {F} --out {W}/out.jsonl",
    "data fim {E} --out {W}/out.jsonl",
    "data fim {S}",
    # data inspect
    "data inspect {R} -n 0",
    "data inspect {R} -n -1",
    "data inspect {R} --max-chars -1",
    "data inspect {R} --mode foo",
    # data sft
    "data sft {W}/missing.jsonl --out {W}/sft.jsonl",
    "data sft {W}/records.jsonl --max-length 0 --out {W}/sft.jsonl",
    "data sft {W}/records.jsonl --out {D}",
    "data sft {W}/records.jsonl --column nothing --out {W}/sft.jsonl",
    "data sft {W}/records.jsonl --template {W}/missing.jinja --out {W}/sft.jsonl",
    "data sft {W}/records.jsonl --tokenizer {W}/no-tokenizer --out {W}/sft.jsonl",
    "data sft {W}/records.jsonl --format foo --out {W}/sft.jsonl",
    "data sft {W}/garbage.jsonl --out {W}/sft.jsonl",
    "data sft {W}/empty.jsonl --out {W}/sft.jsonl",
    # data scan
    "data scan {W}/missing",
    "data scan",
    "data scan {D} --check=yes",
    "data scan {D} {D}",
    # cache
    "cache prune --older-than nan --cache-dir {W}/cache",
    "cache prune --older-than -1 --cache-dir {W}/cache",
    "cache prune --older-than inf --cache-dir {W}/cache",
    "cache prune --older-than abc --cache-dir {W}/cache",
    "cache prune --cache-dir {W}/cache",
    "cache list --cache-dir {F}",
    # merge
    "merge {W}/no-adapter --out {W}/merged",
    "merge {D} --out {W}/merged",
    "merge {W}/adapter --out {D}",
    "merge {W}/adapter --out {F}",
    "merge {W}/adapter --density 1.5 --out {W}/merged",
    "merge {W}/adapter {W}/adapter --weights abc --out {W}/merged",
    "merge {W}/adapter {W}/adapter --weights 0.5,0.3,0.2 --out {W}/merged",
    "merge {W}/adapter --tolerance -1 --out {W}/merged",
    "merge {W}/adapter --max-shard-size 5XB --out {W}/merged",
    "merge {W}/adapter --base {W}/no-such-model --out {W}/merged",
    "merge {W}/adapter --seed -3 --out {W}/merged",
    # export
    "export --model {W}/no-such-model --gguf {W}/m.gguf",
    "export --model {M} --gguf {D}",
    "export --model {M} --gguf {W}/m.gguf --outtype q4_k",
    "export --model {M} --gguf {F}",
    # complete
    "complete --model {W}/no-such-model --file {F}",
    "complete --model {M} --file {W}/missing.py",
    "complete --model {M} --file {F} --cursor 0:0",
    "complete --model {M} --file {F} --cursor abc",
    "complete --model {M} --file {F} --cursor 99:1",
    "complete --model {M} --file {F} --max-new-tokens 0",
    "complete --model {M} --file {F} --temperature -1",
    "complete --model {M} --file {F} --top-p 1.5",
    "complete --model {M} --file {F} --top-k -1",
    "complete --model {M} --file {F} --context-tokens 0",
    "complete --model {M} --file {F} --family foo",
    "complete --model {M} --adapter {W}/no-adapter --file {F}",
    "complete --model {M} --file {W}/empty.py",
    # chat
    "chat --model {M} --message hi",  # a base model: no chat template
    "chat --model {W}/no-such-model --message hi",
    "chat --model {M} --adapter {W}/no-adapter --message hi",
    "chat --model {M} --message hi --max-new-tokens 0",
    "chat --model {M} --message hi --top-p 0",
    # eval
    "eval --model {M} --out {W}/eval",
    "eval --model {M} --repo {W}/no-such-repo --out {W}/eval",
    "eval --model {M} --benchmark {W}/missing.jsonl --out {W}/eval",
    "eval --oracle --benchmark humaneval-nope --out {W}/eval",
    "eval --model {M} --repo {S} --per-category 0 --out {W}/eval",
    "eval --model {M} --repo {S} --timeout nan --out {W}/eval",
    "eval --model {M} --repo {S} --memory-mb 0 --out {W}/eval",
    "eval --model {M} --repo {S} --batch-size 0 --out {W}/eval",
    "eval --model {M} --repo {S} --context-chars -4 --out {W}/eval",
    "eval --model {M} --benchmark {W}/records.jsonl --limit 0 --out {W}/eval",
    "eval --model {M} --repo {S} --limit 5 --out {W}/eval",  # --limit counts benchmark tasks: silently ignored before
    "eval --model {M} --repo {S} --categories foo --out {W}/eval",
    "eval --model {M} --repo {S} --out {F}",
    "eval --model {M} --repo {S} --out {D}",
    "eval --model {M} --repo {S} --split {W}/missing.json --out {W}/eval",
    "eval --model {W}/no-such-model --repo {S} --out {W}/eval",
    # launch-check
    "launch-check --config_file {W}/missing.yaml {R}",
    "launch-check --config_file {F} {R}",
    "launch-check --config_file {W}/accelerate.yaml --num_processes 0 {R}",
]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Inputs for the cases: a valid recipe and files of every wrong kind."""
    root = tmp_path_factory.mktemp("malformed")
    recipe = yaml.safe_load((REPO_ROOT / "recipes" / "quickstart.yaml").read_text())
    recipe["model"]["name_or_path"] = str(TINY)
    recipe["data"]["sources"][0]["path"] = str(SAMPLE_REPO)
    recipe["output_dir"] = str(root / "run")
    (root / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    (root / "syntax.yaml").write_text("method: [lora\n")
    (root / "list.yaml").write_text("- a\n- b\n")
    (root / "latin1.yaml").write_bytes("method: lora # caf\xe9\n".encode("latin-1"))
    (root / "loop.yaml").write_text("base: loop.yaml\n")
    (root / "missing-base.yaml").write_text("base: nowhere.yaml\n")
    with_instructions = {**recipe, "data": {**recipe["data"], "sources": [{"type": "instructions", "path": "no.jsonl"}]}}
    (root / "instructions-missing.yaml").write_text(yaml.safe_dump(with_instructions))
    (root / "file.py").write_text("def f(x):\n    return x\n")
    (root / "full").mkdir()
    (root / "full" / "keep.txt").write_text("not to be overwritten\n")
    (root / "empty-repo").mkdir()
    (root / "records.jsonl").write_text(json.dumps({"instruction": "Say hi", "output": "hi"}) + "\n")
    (root / "garbage.jsonl").write_text("{not json\n\x00\x01\n")
    (root / "empty.jsonl").write_text("")
    (root / "empty.py").write_text("\n\n")
    _save_adapter(root / "adapter")
    (root / "accelerate.yaml").write_text("distributed_type: NO\nnum_processes: 1\n")
    return {
        "W": str(root),
        "R": str(root / "recipe.yaml"),
        "F": str(root / "file.py"),
        "D": str(root / "full"),
        "E": str(root / "empty-repo"),
        "M": str(TINY),
        "S": str(SAMPLE_REPO),
    }


def _save_adapter(directory: Path) -> None:
    """A real LoRA adapter of the tiny model, so that merge cases fail on the option under test, not the adapter."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(TINY), LoraConfig(r=4, target_modules="all-linear"))
    model.save_pretrained(directory)


def _snapshot(*roots: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder under the roots with its size and mtime: any write shows up."""
    seen = {}
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            for name in dirnames + filenames:
                path = Path(dirpath) / name
                stat = path.lstat()
                seen[str(path)] = (stat.st_size, stat.st_mtime_ns)
    return seen


def _run(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exc:  # argparse's own errors
        return int(exc.code or 0)


def _assert_rejected(argv: list[str], workspace: dict[str, str], capsys, isolated_cache: Path) -> None:
    roots = (Path(workspace["W"]), isolated_cache, SAMPLE_REPO, TINY)
    before = _snapshot(*roots)
    capsys.readouterr()
    code = _run(argv)
    out, err = capsys.readouterr()
    assert code == 2, f"exit {code} for {argv}\nstdout: {out[-2000:]}\nstderr: {err[-2000:]}"
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, f"expected one error line for {argv}, got:\n{err}"
    assert "Traceback" not in out + err
    assert _snapshot(*roots) == before, f"{argv} wrote something"


# `recipe show` prints a recipe that may be meant for another machine, so it checks values, not paths.
_PATH_KEYS = (
    "model.name_or_path", "data.sources.0.path=", "output_dir", "data.cache_dir", "data.sft.decontaminate",
    "data.sft.chat_template",
)
_SHOW_CASES = [("recipe show", o) for o in BAD_OVERRIDES if not o.startswith(_PATH_KEYS)]


@pytest.mark.parametrize(("command", "override"), [("train", o) for o in BAD_OVERRIDES] + _SHOW_CASES)
def test_bad_recipe_value_is_one_line_and_exit_2(command, override, workspace, capsys, isolated_cache):
    argv = [*command.split(), workspace["R"], override.format(**workspace)]
    _assert_rejected(argv, workspace, capsys, isolated_cache)


@pytest.mark.parametrize("command", BAD_COMMANDS)
def test_bad_command_line_is_one_line_and_exit_2(command, workspace, capsys, isolated_cache):
    argv = [part.format(**workspace) for part in command.split()]
    _assert_rejected(argv, workspace, capsys, isolated_cache)


def test_case_count():
    """The issue asks for at least 90 malformed inputs across every command."""
    assert len(BAD_OVERRIDES) + len(BAD_COMMANDS) >= 90
    commands = {c.split()[0] for c in BAD_COMMANDS} | {"train", "recipe"}
    assert commands >= {"train", "prepare", "data", "cache", "merge", "export", "complete", "chat", "eval", "launch-check", "recipe"}


def test_missing_source_is_rejected_before_heavy_imports(workspace):
    """A typo in a data path costs a second, not a model load: torch, transformers and DeepSpeed never import."""
    import subprocess
    import sys

    probe = (
        "import sys\nfrom finetune.cli.main import main\n"
        f"code = main(['train', {workspace['R']!r}, 'data.sources.0.path=/no/such/repo'])\n"
        "heavy = [m for m in ('torch', 'transformers', 'deepspeed', 'bitsandbytes', 'trl') if m in sys.modules]\n"
        "print(code, heavy)\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == "2 []", result.stdout + result.stderr
    assert result.stderr.strip().startswith("error: data.sources.0.path: repo source /no/such/repo does not exist")
