"""The one prepared GPU run (issue 17): every GPU path once, each step under its own timeout, 8 minutes in all.

`python -m finetune.dev.bench gpu-check [--out DIR] [--dry-run]` (or `recipes/bench/gpu_check.sh`, which installs the
carried wheels first). Steps, in order: the `gpu`-marked tests (merge and complete on CUDA among them); 10 steps of
single-GPU LoRA, FSDP2 LoRA, FSDP2 full, ZeRO-3 full and ZeRO-3 QLoRA on a randomly initialised model of
Qwen2.5-Coder-1.5B's shape (one process each; tokens/s, peak memory, and that the saved outputs reload); `bench
compare` on the 7B-shaped QLoRA recipe (6 steps after 2 warm-up); LoRA bf16 on the 1.5B shape with sdpa, then with
flash-attention-4 (flattened packing), with MFU. A step that hangs is killed at its timeout and the next one runs.
Everything lands in one folder ($OUT when set): `gpu_check.json` (one record per step) and `gpu_check.log`.

`--dry-run` prints the plan with each timeout and their sum, and checks that the wheels in `.whl/` cover what the GPU
machine lacks (`gpu_wheels.REQUIRED`), without a GPU: exit status 2 when a wheel is missing or the plan is over budget.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from finetune.io import write_json_atomic

BUDGET_S = 480  # 8 minutes: the device allows 10 per command, and one rerun must fit in the session's 15
SCALE = "recipes/bench/scale.yaml"
MODEL_15B = "runs/bench-models/qwen2.5-coder-1.5b"
SMALL_DATA = ["data.sources.0.path=data/sample-repo", "data.sources.0.exclude=[]", f"model.name_or_path={MODEL_15B}"]
TEN_STEPS = ["training.max_steps=10", "training.logging_steps=5", "training.save_steps=100000"]


@dataclass(frozen=True)
class Step:
    name: str
    timeout_s: int
    command: str  # a shell command, run from the repository root
    result: str | None = None  # a JSON file the step writes, folded into its record


def _scale(name: str, config: str, method: str) -> Step:
    """10 steps of one launch config on the random 1.5B model, then a reload of what it saved."""
    out = f"runs/gpu-check/{name}"
    lr = "1e-5" if method == "full" else "2e-4"
    args = [SCALE, *SMALL_DATA, *TEN_STEPS, f"method={method}", f"output_dir={out}", f"training.learning_rate={lr}"]
    train = (
        f"python3 -m accelerate.commands.launch --config_file recipes/accelerate/{config}.yaml --num_processes 1 -m finetune train "
        + " ".join(shlex.quote(a) for a in args)
    )
    reload = f"python3 -m finetune.dev.gpu_check reload {out} {method} --json {out}.json"
    return Step(name, 45, f"{train} && {reload}", result=f"{out}.json")


def _bench(name: str, timeout: int, kind: str, recipe: str, overrides: list[str], steps: int, warmup: int) -> Step:
    out = f"runs/gpu-check/{name}.json"
    args = " ".join(shlex.quote(a) for a in overrides)
    json_arg = f" --json {out}" if kind != "compare" else ""
    command = f"python3 -m finetune.dev.bench {kind} {recipe} {args} --steps {steps} --warmup {warmup}{json_arg}"
    return Step(name, timeout, command, result=out if kind != "compare" else None)


def plan() -> list[Step]:
    lora_bf16 = [*SMALL_DATA, "method=lora", "training.learning_rate=2e-4", "data.packing_layout=flatten",
                 "training.gradient_checkpointing=false", "training.batch_size=4"]  # fmt: skip
    return [
        Step("gpu-tests", 55, "python3 -m pytest -q -p no:cacheprovider -m gpu tests"),
        Step(
            "prepare-1.5b",
            20,
            f"mkdir -p {MODEL_15B} && cp recipes/bench/qwen2.5-coder-1.5b.config.json {MODEL_15B}/config.json && "
            f"cp data/tiny-coder/tokenizer.json data/tiny-coder/tokenizer_config.json {MODEL_15B}/ && "
            f"python3 -m finetune prepare {SCALE} " + " ".join(SMALL_DATA),
        ),
        _scale("single-lora", "single_gpu", "lora"),
        _scale("fsdp2-lora", "fsdp2", "lora"),
        _scale("fsdp2-full", "fsdp2", "full"),
        _scale("zero3-full", "zero3", "full"),
        _scale("zero3-qlora", "zero3", "qlora"),
        Step(
            "qlora-7b-compare",
            95,
            "python3 -m finetune.dev.bench random-model recipes/bench/codellama-7b-shape --out runs/random-7b && "
            "python3 -m finetune.dev.bench compare recipes/bench/qlora-7b-shape.yaml --steps 6 --warmup 2",
        ),
        _bench("lora-bf16-sdpa-varlen", 35, "train", SCALE, [*lora_bf16, "model.attn_implementation=sdpa_varlen"], 6, 2),
        _bench("lora-bf16-fa4", 30, "train", SCALE, [*lora_bf16, "model.attn_implementation=flash_attention_4"], 6, 2),
    ]


WHEEL_INSTALL_S = 20  # gpu_check.sh installs the carried wheels before the first step


def dry_run(steps: list[Step], wheels: Path) -> int:
    from finetune.dev.gpu_wheels import missing

    total = WHEEL_INSTALL_S + sum(s.timeout_s for s in steps)
    print(f"{'install wheels':<18} {WHEEL_INSTALL_S:>4} s  pip install --no-index --target /tmp/site .whl/*.whl")
    for step in steps:
        print(f"{step.name:<18} {step.timeout_s:>4} s  {step.command[:150]}")
    print(f"{'total':<18} {total:>4} s  (budget {BUDGET_S} s)")
    problems = []
    if total > BUDGET_S:
        problems.append(f"the plan takes up to {total} s, over the {BUDGET_S} s budget: shorten a step's timeout")
    lacking = missing(wheels)
    if lacking:
        problems.append(
            f"{wheels}/ lacks wheels the GPU machine needs: {', '.join(lacking)}; run recipes/bench/gpu_wheels.sh"
        )
    else:
        print(f"wheels: {wheels}/ covers what the GPU machine lacks ({len(list(wheels.glob('*.whl')))} wheels)")
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    return 2 if problems else 0


def run_steps(steps: list[Step], out: Path) -> int:
    """Each step in a fresh shell under `timeout`; one JSON record per step, written after every step."""
    out.mkdir(parents=True, exist_ok=True)
    log, records = out / "gpu_check.log", []
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false"}
    with log.open("a", encoding="utf-8") as handle:
        for step in steps:
            print(f"== {step.name} (timeout {step.timeout_s} s)", flush=True)
            handle.write(f"\n== {step.name}: {step.command}\n")
            handle.flush()
            start = time.perf_counter()
            # --kill-after: a step that ignores SIGTERM (a stuck NCCL call) is killed, not waited for
            done = subprocess.run(["timeout", "--kill-after=5", str(step.timeout_s), "bash", "-c", step.command],
                                  stdout=handle, stderr=subprocess.STDOUT, env=env, check=False)  # fmt: skip
            record = {"step": step.name, "exit": done.returncode, "seconds": round(time.perf_counter() - start, 1),
                      "timed_out": done.returncode in (124, 137)}  # fmt: skip
            if step.result and Path(step.result).is_file():
                record["result"] = json.loads(Path(step.result).read_text())
            records.append(record)
            status = "TIMED OUT" if record["timed_out"] else ("ok" if done.returncode == 0 else "FAILED")
            print(f"   {status} in {record['seconds']} s", flush=True)
            write_json_atomic(out / "gpu_check.json", records)
    return 0 if all(r["exit"] == 0 for r in records) else 1


def reload(directory: str, method: str, json_path: str) -> int:
    """Load what a run saved and run one forward: the outputs are usable, not merely written (on the GPU; on CPU
    when there is none, which is how the step is rehearsed)."""
    import torch

    path = Path(directory)
    summary = json.loads((path / "summary.json").read_text())
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = _load_saved(path, method, device)
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([[1, 2, 3, 4]], device=device)).logits
    record = {
        "tokens_per_second": summary.get("tokens_per_second"),
        "peak_gpu_memory_gib": summary.get("peak_gpu_memory_gib"),
        "steps": summary.get("steps"),
        "last_loss": summary.get("last_loss"),
        "reloaded": bool(torch.isfinite(logits).all()),
    }
    write_json_atomic(Path(json_path), record)
    print(json.dumps(record))
    return 0 if record["reloaded"] else 1


def _load_saved(path: Path, method: str, device: str):
    """A full run's model, or an adapter on its base. The check's bases are randomly initialised and have no weights
    on disk: the base is rebuilt from its config and the run's seed, as training built it."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from finetune.run import saved_recipe
    from finetune.runtime import seeded_random_model

    if method == "full":
        return AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16, device_map={"": device})
    from peft import PeftModel

    recipe = saved_recipe(path, strict=True)
    base_dir = recipe["model"]["name_or_path"]
    if recipe["model"].get("random_init"):
        config = AutoConfig.from_pretrained(base_dir)
        base = seeded_random_model(config, recipe["seed"], device, dtype=torch.bfloat16)
    else:
        base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.bfloat16, device_map={"": device})
    return PeftModel.from_pretrained(base, str(path))


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python3 -m finetune.dev.gpu_check", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command")
    back = sub.add_parser("reload", help="reload a run's saved outputs on the GPU (one step of the check)")
    back.add_argument("directory")
    back.add_argument("method")
    back.add_argument("--json", required=True)
    add_arguments(parser)
    args = parser.parse_args(argv)
    if args.command == "reload":
        return reload(args.directory, args.method, args.json)
    return check(args)


def add_arguments(parser) -> None:
    parser.add_argument("--out", default=os.environ.get("OUT") or "runs/gpu-check", help="folder for JSON + log")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and check the carried wheels (no GPU)")
    parser.add_argument("--wheels", default=".whl", help="the carried wheels' folder (checked by --dry-run)")
    parser.add_argument("--only", nargs="+", metavar="STEP", help="run only these steps")


def check(args) -> int:
    steps = plan()
    if args.only:
        unknown = sorted(set(args.only) - {s.name for s in steps})
        if unknown:
            print(f"error: unknown step {', '.join(unknown)}; steps: {', '.join(s.name for s in steps)}", file=sys.stderr)
            return 2
        steps = [s for s in steps if s.name in args.only]
    if args.dry_run:
        return dry_run(steps, Path(args.wheels))
    import torch

    if not torch.cuda.is_available():
        print("error: no CUDA GPU here: run the check on the GPU machine, or --dry-run to plan it", file=sys.stderr)
        return 2
    return run_steps(steps, Path(args.out))


if __name__ == "__main__":
    sys.exit(main())
