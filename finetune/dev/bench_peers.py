"""The same training job through the toolkit, plain TRL and axolotl, interleaved: `python -m finetune.dev.bench peers`.

Each configuration runs in its own process, once per round, in an order that rotates from round to round, so a
neighbour's load on a shared machine falls on all of them alike; the ratios are taken per round and their median is
reported. Two rates per run, both over the measured steps only (after the warm-up) and counting real tokens
(padding excluded): step-only (the optimizer steps themselves) and end to end (the wall time from the end of the
warm-up to the last step, which adds what happens between steps: batches, epoch changes, logging).

axolotl runs when `--axolotl-python` names the python of its own virtual environment. It trains on exactly the
toolkit's tokenized samples (written to a JSONL file of input_ids/attention_mask/labels, axolotl's pre-tokenized
format) with the same model, LoRA, batch shape, sequence length, optimizer, learning rate and schedule, fp32, no
gradient checkpointing, its sample packing, and its CUDA-only LoRA kernels off (`bench_axolotl.py`).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from finetune.errors import UserError

CONFIGS = ("toolkit", "trl", "axolotl")


def add_parser(sub) -> None:
    peers = sub.add_parser("peers", help="the CPU job through the toolkit, plain TRL and axolotl, interleaved")
    peers.add_argument("recipe", nargs="?", default="recipes/quickstart.yaml", help="default: the quickstart job")
    peers.add_argument("overrides", nargs="*", metavar="key=value")
    peers.add_argument("--rounds", type=int, default=3, help="interleaved rounds (each configuration once per round)")
    peers.add_argument("--steps", type=int, default=30, help="optimizer steps measured")
    peers.add_argument("--warmup", type=int, default=3, help="optimizer steps run first and not measured")
    peers.add_argument("--axolotl-python", help="python of axolotl's own virtual environment (axolotl is skipped without)")
    peers.add_argument("--json", help="also write every run and the ratios to this JSON file")


def peers(args) -> int:
    try:
        report = compare_peers(args.recipe, args.overrides, args.rounds, args.steps, args.warmup, args.axolotl_python)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        from finetune.io import write_json_atomic

        write_json_atomic(Path(args.json), report)
    return 0


def compare_peers(
    recipe: str, overrides: list[str], rounds: int, steps: int, warmup: int, axolotl_python: str | None
) -> dict:
    if axolotl_python and not Path(axolotl_python).is_file():
        raise UserError(f"--axolotl-python {axolotl_python} does not exist: give the python of axolotl's virtual env")
    if rounds < 1 or steps < 1 or warmup < 0:
        raise UserError("--rounds and --steps must be at least 1 and --warmup at least 0")
    configs = [c for c in CONFIGS if c != "axolotl" or axolotl_python]
    runs: dict[str, list[dict]] = {c: [] for c in configs}
    with tempfile.TemporaryDirectory(prefix="finetune-peers-") as tmp:
        axolotl_config = write_axolotl_job(recipe, overrides, steps + warmup, Path(tmp)) if axolotl_python else None
        for index in range(rounds):
            order = configs[index % len(configs) :] + configs[: index % len(configs)]
            for config in order:
                out = Path(tmp) / f"{config}-{index}.json"
                start = time.perf_counter()
                command = _command(config, recipe, overrides, steps, warmup, out, axolotl_python, axolotl_config)
                env = {**os.environ, "AXOLOTL_DO_NOT_TRACK": "1", "PYTHONPATH": _repo_path()}
                done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
                if done.returncode != 0 or not out.is_file():
                    tail = "\n".join((done.stderr or done.stdout).splitlines()[-15:])
                    raise RuntimeError(f"{config} failed (exit {done.returncode}): {' '.join(command)}\n{tail}")
                result = json.loads(out.read_text())
                result["process_seconds"] = time.perf_counter() - start
                runs[config].append(result)
                print(f"round {index + 1}/{rounds} {config:<8} {_rates(result)}", flush=True)
    report = {"recipe": recipe, "overrides": overrides, "steps": steps, "warmup": warmup, "runs": runs}
    report["ratios"] = _ratios(runs)
    print_table(report)
    return report


def _repo_path() -> str:
    root = str(Path(__file__).resolve().parents[2])
    return os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)


def _command(config, recipe, overrides, steps, warmup, out, axolotl_python, axolotl_config) -> list[str]:
    from finetune.dev.bench_train import bench_command, timing_args

    if config == "axolotl":
        timing = timing_args(steps, warmup, out)
        return [axolotl_python, "-m", "finetune.dev.bench_axolotl", str(axolotl_config), *timing]
    return bench_command("train" if config == "toolkit" else "trl", recipe, overrides, steps, warmup, out)


def _step_rate(result: dict) -> float:
    return result["tokens_per_second"]


def _e2e_rate(result: dict) -> float:
    return result["extra"].get("end_to_end_tokens_per_second", 0.0)


def _rates(result: dict) -> str:
    return (
        f"{_step_rate(result):8,.0f} tokens/s step-only, {_e2e_rate(result):8,.0f} end to end, "
        f"padding {result['padding_fraction']:5.1%}, {result['process_seconds']:.0f} s in all"
    )


def _ratios(runs: dict[str, list[dict]]) -> dict[str, dict[str, float]]:
    """Median over rounds of the toolkit's rate over each peer's in the same round."""
    ratios = {}
    for peer in (c for c in runs if c != "toolkit"):
        pairs = list(zip(runs["toolkit"], runs[peer], strict=True))
        ratios[f"toolkit/{peer}"] = {
            "step_only": statistics.median(_step_rate(a) / _step_rate(b) for a, b in pairs),
            "end_to_end": statistics.median(_e2e_rate(a) / max(_e2e_rate(b), 1e-9) for a, b in pairs),
        }
    return ratios


def print_table(report: dict) -> None:
    runs = report["runs"]
    rounds = len(runs["toolkit"])
    print(f"\nfinetune.dev.bench peers: {report['recipe']}, {report['steps']} steps after {report['warmup']} warm-up, "
          f"{rounds} interleaved rounds (median)")  # fmt: skip
    print("| configuration | tokens/s, step-only | tokens/s, end to end | padding | step |")
    print("| --- | --- | --- | --- | --- |")
    for config, results in runs.items():
        step = statistics.median(_step_rate(r) for r in results)
        e2e = statistics.median(_e2e_rate(r) for r in results)
        padding = statistics.median(r["padding_fraction"] for r in results)
        seconds = statistics.median(r["step_seconds"] for r in results)
        print(f"| {config} | {step:,.0f} | {e2e:,.0f} | {padding:.1%} | {seconds:.2f} s |")
    for name, ratio in report["ratios"].items():
        print(f"{name}: {ratio['step_only']:.2f}x step-only, {ratio['end_to_end']:.2f}x end to end (median of rounds)")


def write_axolotl_job(recipe_path: str, overrides: list[str], max_steps: int, folder: Path) -> Path:
    """The toolkit's tokenized train samples as axolotl's pre-tokenized JSONL, and an axolotl config of the same job."""
    import yaml

    from finetune.config.load import load_recipe
    from finetune.data.cache import prepare

    recipe = load_recipe(recipe_path, [*overrides, "data.eval_split=0"])
    data = prepare(recipe).data.train
    samples = folder / "samples.jsonl"
    with samples.open("w", encoding="utf-8") as handle:
        for ids, labels in zip(data["input_ids"], data["labels"], strict=True):
            handle.write(json.dumps({"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels}) + "\n")
    config = axolotl_config(recipe, samples, folder, max_steps)
    path = folder / "axolotl.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def axolotl_config(recipe, samples: Path, folder: Path, max_steps: int) -> dict:
    """axolotl's keys for the recipe's job; each one matches what the toolkit does with the recipe on CPU."""
    t, a = recipe.training, recipe.adapter
    if recipe.method != "lora":
        raise UserError(f"peers compares LoRA jobs; the recipe's method is {recipe.method}: set method=lora")
    return {
        "base_model": str(Path(recipe.model.name_or_path).resolve()),
        "datasets": [{"path": str(samples), "ds_type": "json", "split": "train"}],  # no type: pre-tokenized
        "dataset_prepared_path": str(folder / "axolotl-prepared"),
        "val_set_size": 0,
        "output_dir": str(folder / "axolotl-out"),
        "sequence_len": recipe.data.max_length,
        "sample_packing": recipe.data.packing,
        "eval_sample_packing": False,
        "pad_to_sequence_len": recipe.data.packing,
        "adapter": "lora",
        "lora_r": a.r,
        "lora_alpha": a.alpha,
        "lora_dropout": a.dropout,
        "lora_target_linear": a.target_modules == "all-linear",
        **({} if a.target_modules == "all-linear" else {"lora_target_modules": list(a.target_modules)}),
        "lora_mlp_kernel": False,  # Triton kernels: CUDA only
        "lora_qkv_kernel": False,
        "lora_o_kernel": False,
        "micro_batch_size": t.batch_size,
        "gradient_accumulation_steps": t.gradient_accumulation_steps,
        "max_steps": max_steps,
        "num_epochs": 1000,  # max_steps decides
        "learning_rate": t.learning_rate,
        "lr_scheduler": t.lr_scheduler,
        **({"warmup_ratio": t.warmup} if t.warmup < 1 else {"warmup_steps": int(t.warmup)}),
        "weight_decay": t.weight_decay,
        "max_grad_norm": t.max_grad_norm,
        "optimizer": "adamw_torch",
        "bf16": False,
        "fp16": False,
        "tf32": False,
        "gradient_checkpointing": False,
        "flash_attention": False,
        "sdp_attention": True,
        "save_strategy": "no",
        "logging_steps": max_steps,
        "seed": recipe.seed,
        "use_tensorboard": False,
        "dataloader_num_workers": t.dataloader_num_workers,
    }
