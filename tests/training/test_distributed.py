"""DeepSpeed ZeRO under Accelerate with two real CPU processes (gloo), and the launch pre-flight checks.

The multi-process tests launch the shipped configs (`recipes/accelerate/*.yaml` with `--num_processes 2`) through
`tests/dist_probe.py`, which records what each rank really held, and gathers the weights at the end of training.
The launch checks run in-process: they must fail in one line before any model is loaded.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import train_recipe

from finetune.cli.main import main as cli_main
from finetune.config.load import validate_recipe
from finetune.errors import UserError
from finetune.training.launch import check_plan, plan_from_config_file, plan_from_env

ROOT = Path(__file__).resolve().parents[2]
PROBE = ROOT / "tests" / "dist_probe.py"
STEPS = 4


def recipe_dict(out: Path, model_dir: Path, repo: Path, method: str = "lora", **training) -> dict:
    return train_recipe(out, model_dir, repo, method, **{"batch_size": 2, "max_steps": STEPS, "save_steps": 2, **training})


# --------------------------------------------------------------------------------------------- multi-process runs


def launch(config: str, recipe: Path, probe: Path, *overrides: str, env: dict | None = None, processes: int = 2):
    """`accelerate launch` a shipped config with two processes, from the repository root (where its paths point)."""
    import os

    command = [
        sys.executable, "-m", "accelerate.commands.launch",
        "--config_file", f"recipes/accelerate/{config}.yaml", "--num_processes", str(processes),
        str(PROBE), str(probe), str(recipe), *overrides,
    ]  # fmt: skip
    return subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=900, env={**os.environ, **(env or {})}
    )


_RUNS: dict[tuple[str, str, bool], dict] = {}


def run_case(
    config: str, method: str, tmp_root: Path, model_dir: Path, repo: Path, random_init: bool = False, **training
) -> dict:
    """Train once per (config, method, random_init) in this module; later tests reuse the result."""
    key = (config, method, random_init)
    if key not in _RUNS:
        work = tmp_root / f"{config}-{method}"
        work.mkdir(parents=True)
        data = recipe_dict(work / "run", model_dir, repo, method, **training)
        data["model"]["random_init"] = random_init
        recipe = work / "recipe.yaml"
        recipe.write_text(yaml.safe_dump(data))
        result = launch(config, recipe, work / "probe")
        assert result.returncode == 0, result.stderr[-4000:]
        _RUNS[key] = {"out": work / "run", "probe": work / "probe", "recipe": recipe, "stdout": result.stdout}
    return _RUNS[key]


def reports(probe: Path, processes: int = 2) -> list[dict]:
    return [json.loads((probe / f"rank{rank}.json").read_text()) for rank in range(processes)]


def bits(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.detach().contiguous().view(torch.uint8)


def gathered(probe: Path, processes: int = 2) -> dict[str, torch.Tensor]:
    """The full weights rank 0 gathered at the end of training; every other rank must have gathered the same."""
    weights = [torch.load(probe / f"weights-rank{rank}.pt") for rank in range(processes)]
    for other in weights[1:]:
        assert weights[0].keys() == other.keys()
        for name in weights[0]:  # bitwise: packed 4-bit weights read as floats may be NaN
            assert bits(weights[0][name]).equal(bits(other[name])), name
    return weights[0]


def assert_partitioned(reps: list[dict], stage: int) -> None:
    """ZeRO-3: each rank holds half of every weight, nothing in between steps. Both: half of the fp32 optimizer state."""
    for rep in reps:
        assert rep["world_size"] == 2 and rep["steps"] == list(range(1, STEPS + 1))
        params = rep["params"]
        trainable = sum(p["full"] for p in params.values() if p["trainable"])
        for name, p in params.items():
            if stage == 3:
                assert p["zero3"] and p["shard"] == math.ceil(p["full"] / 2) and p["held"] == 0, (name, p)
            else:
                assert not p["zero3"] and p["shard"] == p["held"] == p["full"], (name, p)
        local = sum(rep["optimizer_partitions"])
        assert trainable / 2 <= local <= trainable / 2 + 64 * len(rep["optimizer_partitions"]), (local, trainable)
    assert reps[0]["params"].keys() == reps[1]["params"].keys()


def assert_saved_equals_gathered(out: Path, weights: dict[str, torch.Tensor], method: str, model_dir: Path) -> None:
    """The output directory holds ordinary files that load without DeepSpeed and equal the trained weights."""
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == STEPS
    if method == "full":
        assert not (out / "adapter_model.safetensors").exists()
        state = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).state_dict()
        initial = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).state_dict()
        assert set(weights) <= set(state)
        for name, tensor in weights.items():  # bf16 on a GPU: compared in fp32, which holds bf16 exactly
            assert torch.equal(state[name], tensor.float()), name
        assert any(not torch.equal(initial[name], tensor.float()) for name, tensor in weights.items())
        return
    lora = {name.replace(".default", ""): t for name, t in weights.items() if "lora_" in name}
    saved = load_file(out / "adapter_model.safetensors")
    assert saved.keys() == lora.keys() and lora
    for name, tensor in lora.items():
        assert torch.equal(saved[name].float(), tensor.float()), name
    assert any(t.abs().max() > 0 for name, t in lora.items() if "lora_B" in name)  # B starts at zero: it trained
    if method == "lora":  # and it loads onto the plain base with PEFT alone
        model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32), out)
        loaded = {n.replace(".default", ""): p for n, p in model.named_parameters() if "lora_" in n}
        assert all(torch.equal(loaded[name].float(), lora[name].float()) for name in lora)


@pytest.mark.distributed
@pytest.mark.parametrize(
    ("config", "method"), [("zero2", "lora"), ("zero2", "full"), ("zero3", "lora"), ("zero3", "full")]
)
def test_zero_partitions_trains_and_saves_whole(
    config, method, tmp_path_factory, tiny_model_dir, code_repo
) -> None:
    training = {"gradient_checkpointing": True} if (config, method) == ("zero3", "lora") else {}
    run = run_case(config, method, tmp_path_factory.mktemp("dist"), tiny_model_dir, code_repo, **training)
    reps = reports(run["probe"])
    assert_partitioned(reps, stage=int(config[-1]))
    assert all(rep["optimizer"] == "AdamW" for rep in reps)  # the recipe's torch optimizer, partitioned by ZeRO
    # zero3_init_flag: from_pretrained built the model sharded, no process ever held all of it
    assert all(rep["built_sharded"] == (config == "zero3") for rep in reps)  # the recipe's torch optimizer, partitioned by ZeRO
    assert_saved_equals_gathered(run["out"], gathered(run["probe"]), method, tiny_model_dir)
    losses = [r["loss"] for r in map(json.loads, (run["out"] / "metrics.jsonl").read_text().splitlines()) if "loss" in r]
    assert len(losses) == STEPS and losses[-1] < losses[0]


@pytest.mark.distributed
@pytest.mark.parametrize(("config", "method"), [("zero2_offload", "full"), ("zero3_offload", "lora")])
def test_offload_configs_step_on_cpu_adam(config, method, tmp_path_factory, tiny_model_dir, code_repo) -> None:
    run = run_case(config, method, tmp_path_factory.mktemp("dist"), tiny_model_dir, code_repo)
    reps = reports(run["probe"])
    assert_partitioned(reps, stage=int(config[4]))
    assert all(rep["optimizer"] == "DeepSpeedCPUAdam" for rep in reps)
    assert_saved_equals_gathered(run["out"], gathered(run["probe"]), method, tiny_model_dir)


@pytest.mark.distributed
@pytest.mark.parametrize("random_init", [False, True], ids=["pretrained", "random-init"])
def test_qlora_zero3_shards_the_4bit_weights(random_init, tmp_path_factory, tiny_model_dir, code_repo) -> None:
    """QLoRA under ZeRO-3, from saved weights and from random ones (the benchmark's path: built whole, then 4-bit)."""
    work = tmp_path_factory.mktemp("dist")
    if random_init:
        (work / "model").mkdir()
        for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
            shutil.copy(tiny_model_dir / name, work / "model" / name)  # no weights: they must be made up
    model_dir = work / "model" if random_init else tiny_model_dir
    run = run_case("zero3", "qlora", work, model_dir, code_repo, random_init=random_init)
    reps = reports(run["probe"])
    assert_partitioned(reps, stage=3)
    # 4-bit weights are stored packed in the compute dtype (fp32 on CPU: 8 weights per element) and sharded too
    assert not any(rep["built_sharded"] for rep in reps)  # transformers loads 4-bit models whole, then ZeRO shards
    q_proj = reps[0]["params"]["base_model.model.model.layers.0.self_attn.q_proj.base_layer.weight"]
    assert q_proj["full"] == 64 * 64 // 8 and q_proj["shard"] == q_proj["full"] // 2 and not q_proj["trainable"]
    assert_saved_equals_gathered(run["out"], gathered(run["probe"]), "qlora", tiny_model_dir)


@pytest.mark.distributed
def test_resume_from_zero3_checkpoint(tmp_path, tmp_path_factory, tiny_model_dir, code_repo) -> None:
    """Crash after step 3, resume from the ZeRO-3 checkpoint of step 2: steps 3 and 4 run again, same result."""
    reference = run_case("zero3", "full", tmp_path_factory.mktemp("dist"), tiny_model_dir, code_repo)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(recipe_dict(tmp_path / "run", tiny_model_dir, code_repo, "full")))
    crashed = launch("zero3", recipe, tmp_path / "probe", env={"FINETUNE_PROBE_CRASH_AT": "3"})
    assert crashed.returncode != 0 and "simulated crash after step 3" in crashed.stderr
    partial = tmp_path / "run.partial"
    assert (partial / "checkpoint-2" / "global_step2").is_dir() and not (tmp_path / "run").exists()
    shards = sorted(p.name for p in (partial / "checkpoint-2" / "global_step2").iterdir())
    assert sum("optim_states" in name for name in shards) == 2  # one optimizer shard per rank

    resumed = launch("zero3", recipe, tmp_path / "probe", "resume=true")
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert all(rep["steps"] == [3, 4] for rep in reports(tmp_path / "probe"))
    after, uninterrupted = gathered(tmp_path / "probe"), gathered(reference["probe"])
    for name, tensor in uninterrupted.items():
        assert torch.allclose(after[name], tensor, atol=1e-6), name
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["steps"] == STEPS


@pytest.mark.distributed
def test_bad_deepspeed_json_fails_in_one_line_under_accelerate(tmp_path, tiny_model_dir, code_repo) -> None:
    bad = ROOT / "recipes" / "deepspeed" / f".test-broken-{tmp_path.name}.json"
    bad.write_text('{\n  "zero_optimization": {"stage": 3,}\n}\n')
    config = tmp_path / "zero3.yaml"
    shipped = yaml.safe_load((ROOT / "recipes" / "accelerate" / "zero3.yaml").read_text())
    shipped["deepspeed_config"]["deepspeed_config_file"] = str(bad)
    config.write_text(yaml.safe_dump(shipped))
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(recipe_dict(tmp_path / "run", tiny_model_dir, code_repo)))
    try:
        result = subprocess.run(
            [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config), "--num_processes", "2",
             "-m", "finetune", "train", str(recipe)],
            cwd=ROOT, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
    finally:
        bad.unlink()
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert errors and all(line == errors[0] for line in errors)
    assert "line 2, column 36: JSON syntax error: Expecting property name" in errors[0] and "Loading weights" not in result.stderr
    assert not (tmp_path / "run").exists() and not (tmp_path / "run.partial").exists()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize(
    ("config", "method"), [("fsdp2", "lora"), ("fsdp2", "full"), ("zero3", "full"), ("zero3", "qlora")]
)
def test_gpu_sharded_training_saves_whole(config, method, tmp_path, tiny_model_dir, code_repo) -> None:
    """On 1-2 GPUs: FSDP2 and ZeRO-3 train in bf16, shard each weight across the GPUs, and save it whole."""
    processes = min(2, torch.cuda.device_count())
    recipe = tmp_path / "recipe.yaml"
    data = recipe_dict(tmp_path / "run", tiny_model_dir, code_repo, method, gradient_checkpointing=True)
    recipe.write_text(yaml.safe_dump(data))
    result = launch(config, recipe, tmp_path / "probe", processes=processes)
    assert result.returncode == 0, result.stderr[-4000:]
    reps = reports(tmp_path / "probe", processes)
    for name, param in reps[0]["params"].items():
        shards = [rep["params"][name]["shard"] for rep in reps]
        if config == "fsdp2":  # DTensor shards along dim 0, unpadded
            assert sum(shards) == param["full"], (name, shards)
        else:  # ZeRO-3 pads each weight to a multiple of the world size
            assert shards == [math.ceil(param["full"] / processes)] * processes, (name, shards)
        if processes == 2 and param["full"] >= 4096:
            assert max(shards) < param["full"], (name, shards)
    assert_saved_equals_gathered(tmp_path / "run", gathered(tmp_path / "probe", processes), method, tiny_model_dir)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["world_size"] == processes and summary["peak_gpu_memory_gib"] > 0


# ---------------------------------------------------------------------------------------- pre-flight (in-process)


@pytest.fixture
def recipe_file(tmp_path: Path, tiny_model_dir: Path, code_repo: Path) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe_dict(tmp_path / "run", tiny_model_dir, code_repo, batch_size=4)))
    return path


def write_launch(tmp_path: Path, ds: dict | str | None, **accelerate) -> Path:
    """An Accelerate DeepSpeed config pointing at a DeepSpeed JSON written from `ds` (None: no JSON file)."""
    ds_path = tmp_path / "ds.json"
    if ds is not None:
        ds_path.write_text(ds if isinstance(ds, str) else json.dumps(ds))
    config = {
        "distributed_type": "DEEPSPEED",
        "deepspeed_config": {"deepspeed_config_file": str(ds_path), "zero3_init_flag": True},
        "num_machines": 1,
        "num_processes": 2,
        **accelerate,
    }
    path = tmp_path / "accelerate.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def launch_check(capsys, config: Path, recipe: Path, *overrides: str, options=()) -> tuple[int, str, str]:
    code = cli_main(["launch-check", "--config_file", str(config), *options, str(recipe), *overrides])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


ZERO3 = json.loads((ROOT / "recipes" / "deepspeed" / "zero3.json").read_text())


@pytest.mark.parametrize(
    ("ds", "expected"),
    [
        (None, "not found"),
        ('{\n  "train_micro_batch_size_per_gpu": 4,\n  "zero_optimization": {"stage": 2\n}', "line 4, column 2: JSON syntax error: Expecting ',' delimiter"),
        ({**ZERO3, "train_micro_batch_size_per_gpu": 8}, "train_micro_batch_size_per_gpu=8 but the recipe has training.batch_size=4"),
        ({**ZERO3, "gradient_accumulation_steps": 4}, "gradient_accumulation_steps=4 but the recipe has training.gradient_accumulation_steps=1"),
        ({**ZERO3, "train_batch_size": 4}, "train_batch_size=4 but training.batch_size 4 x gradient_accumulation_steps 1 x 2 processes = 8"),
        ({**ZERO3, "gradient_clipping": 0.5}, "gradient_clipping=0.5 but the recipe has training.max_grad_norm=1.0"),
        ({**ZERO3, "bf16": {"enabled": True}}, "bf16.enabled=true but this run computes in fp32"),
        ({"zero_optimization": {"stage": 3}}, "stage3_gather_16bit_weights_on_model_save"),
        ({"zero_optimization": {"stage": 5}}, "zero_optimization.stage=5 is not valid"),
        ([1, 2], "must be a JSON object"),
    ],
    ids=["missing", "syntax", "micro-batch", "accumulation", "global-batch", "clipping", "precision",
         "no-gather", "stage", "not-object"],
)  # fmt: skip
def test_launch_check_names_the_conflict_and_the_fix(capsys, tmp_path, recipe_file, ds, expected) -> None:
    config = write_launch(tmp_path, json.dumps(ds) if isinstance(ds, list) else ds)
    code, out, err = launch_check(capsys, config, recipe_file)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("error: ") and expected in err, err
    assert "Traceback" not in err


def test_launch_check_accepts_matching_numbers_and_prints_the_command(capsys, tmp_path, recipe_file) -> None:
    ds = {**ZERO3, "train_micro_batch_size_per_gpu": 4, "gradient_accumulation_steps": 2, "train_batch_size": 16}
    code, _, _ = launch_check(capsys, write_launch(tmp_path, {**ZERO3, "train_batch_size": "auto"}), recipe_file)
    assert code == 0  # "auto" is filled in by transformers, also under ZeRO-3
    config = write_launch(tmp_path, ds)
    code, out, err = launch_check(capsys, config, recipe_file, "training.gradient_accumulation_steps=2")
    assert code == 0 and err == ""
    assert "DeepSpeed ZeRO-3" in out and "4 sequences x 2 accumulation x 2 processes = 16" in out
    assert f"ok: accelerate launch --config_file {config} -m finetune train {recipe_file}" in out
    # the same numbers contradict a launch with more processes
    code, _, err = launch_check(
        capsys, config, recipe_file, "training.gradient_accumulation_steps=2", options=("--num_processes", "4")
    )
    assert code == 2 and "x 4 processes = 32" in err


def test_launch_check_refuses_accelerate_keys_that_the_json_owns(capsys, tmp_path, recipe_file) -> None:
    config = write_launch(tmp_path, ZERO3)
    data = yaml.safe_load(config.read_text())
    data["deepspeed_config"]["zero_stage"] = 2
    config.write_text(yaml.safe_dump(data))
    code, _, err = launch_check(capsys, config, recipe_file)
    assert code == 2 and "sets zero_stage next to deepspeed_config_file" in err


def test_fsdp_without_gpus_and_mismatched_qlora_storage_are_refused(tmp_path, tiny_model_dir, code_repo) -> None:
    recipe = validate_recipe(recipe_dict(tmp_path / "run", tiny_model_dir, code_repo))
    fsdp = plan_from_config_file(ROOT / "recipes" / "accelerate" / "fsdp2.yaml")
    with pytest.raises(UserError, match="FSDP .* needs CUDA GPUs and this machine has none"):
        check_plan(fsdp, recipe, cuda_devices=0)
    check_plan(fsdp, recipe, cuda_devices=8)  # the same config is fine on a machine with 8 GPUs
    with pytest.raises(UserError, match="starts 8 processes per machine but this machine has 4 GPUs"):
        check_plan(fsdp, recipe, cuda_devices=4)
    qlora = validate_recipe(
        {**recipe_dict(tmp_path / "run", tiny_model_dir, code_repo, "qlora"), "quantization": {"compute_dtype": "bf16"}}
    )
    zero3 = plan_from_config_file(ROOT / "recipes" / "accelerate" / "zero3.yaml", num_processes=2)
    with pytest.raises(UserError, match="compute_dtype=bf16 differs from the model's dtype .fp32.*ZeRO-3"):
        check_plan(zero3, qlora, cuda_devices=0)
    zero2 = plan_from_config_file(ROOT / "recipes" / "accelerate" / "zero2.yaml", num_processes=2)
    check_plan(zero2, qlora, cuda_devices=0)  # ZeRO-2 does not shard the weights: any storage dtype works
    norms = validate_recipe(
        {**recipe_dict(tmp_path / "run", tiny_model_dir, code_repo, "qlora"), "quantization": {"fp32_norms": True}}
    )
    with pytest.raises(UserError, match="fp32_norms mixes fp32 and bf16 parameters"):
        check_plan(zero3, norms, cuda_devices=0)
    check_plan(zero2, norms, cuda_devices=0)
    selective = validate_recipe(recipe_dict(tmp_path / "run", tiny_model_dir, code_repo, gradient_checkpointing="selective"))
    with pytest.raises(UserError, match="selective needs non-reentrant checkpointing"):
        check_plan(zero3, selective, cuda_devices=0)
    check_plan(zero2, selective, cuda_devices=0)


def test_multi_gpu_config_on_a_machine_without_gpus_names_the_cpu_alternative(
    tmp_path, tiny_model_dir, code_repo, capsys, monkeypatch
) -> None:
    recipe = validate_recipe(recipe_dict(tmp_path / "run", tiny_model_dir, code_repo))
    ddp = plan_from_config_file(ROOT / "recipes" / "accelerate" / "ddp.yaml", num_processes=2)
    with pytest.raises(UserError, match="multi-GPU config .* no CUDA GPU: on CPU run one process .*zero2.yaml"):
        check_plan(ddp, recipe, cuda_devices=0)
    check_plan(ddp, recipe, cuda_devices=2)
    cpu_ddp = write_launch(tmp_path, None, distributed_type="MULTI_GPU", use_cpu=True)
    check_plan(plan_from_config_file(cpu_ddp, num_processes=2), recipe, cuda_devices=0)  # told to use the CPU
    import torch

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    recipe_file = tmp_path / "recipe.yaml"
    recipe_file.write_text(yaml.safe_dump(recipe_dict(tmp_path / "run", tiny_model_dir, code_repo)))
    ddp_file = ROOT / "recipes" / "accelerate" / "ddp.yaml"
    code, _, err = launch_check(capsys, ddp_file, recipe_file, options=("--num_processes", "2"))
    assert code == 2 and "no CUDA GPU" in err and err.count("\n") == 1


def test_train_refuses_a_bad_launch_before_loading_anything(monkeypatch, tmp_path, tiny_model_dir, code_repo) -> None:
    import finetune.training.trainer as train

    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_CONFIG_FILE", str(tmp_path / "missing.json"))
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setattr(train, "load_model", lambda *a, **k: pytest.fail("model loaded before the launch check"))
    monkeypatch.setattr(train, "prepare", lambda *a, **k: pytest.fail("data prepared before the launch check"))
    recipe = validate_recipe(recipe_dict(tmp_path / "run", tiny_model_dir, code_repo))
    with pytest.raises(UserError, match=r"missing.json named by the launch environment not found"):
        train.run(recipe)
    assert not (tmp_path / "run").exists() and not (tmp_path / "run.partial").exists()


def test_plan_from_env_reads_what_accelerate_launch_sets() -> None:
    env = {
        "ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "2", "FSDP_STATE_DICT_TYPE": "SHARDED_STATE_DICT",
        "WORLD_SIZE": "16", "LOCAL_WORLD_SIZE": "8",
    }  # fmt: skip
    plan = plan_from_env(env)
    assert (plan.engine, plan.fsdp_version, plan.world_size, plan.processes_per_machine) == ("fsdp", 2, 16, 8)
    assert plan.shards_parameters
    inline = plan_from_env({"ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_ZERO_STAGE": "3", "WORLD_SIZE": "2"})
    assert inline.zero_stage == 3 and inline.shards_parameters and inline.ds_config is None
    assert plan_from_env({"WORLD_SIZE": "2"}).engine == "ddp" and plan_from_env({}).engine == "single"


@pytest.mark.parametrize("path", sorted((ROOT / "recipes" / "accelerate").glob("*.yaml")), ids=lambda p: p.stem)
def test_shipped_launch_configs_pass_their_own_checks(path, monkeypatch, tmp_path, tiny_model_dir, code_repo) -> None:
    monkeypatch.chdir(ROOT)  # DeepSpeed JSON paths are relative to the repository root, where users launch
    recipe = validate_recipe(recipe_dict(tmp_path / "run", tiny_model_dir, code_repo))
    plan = plan_from_config_file(path)
    check_plan(plan, recipe, cuda_devices=8)
    expected = {
        "single_gpu": ("single", None, 1), "ddp": ("ddp", None, 8), "fsdp2": ("fsdp", None, 8),
        "zero2": ("deepspeed", 2, 8), "zero2_offload": ("deepspeed", 2, 8), "zero3": ("deepspeed", 3, 8),
        "zero3_offload": ("deepspeed", 3, 8), "two_node_zero3": ("deepspeed", 3, 16),
    }[path.stem]  # fmt: skip
    assert (plan.engine, plan.zero_stage, plan.world_size) == expected
    assert plan.processes_per_machine <= 8
    assert plan.offload_optimizer == ("offload" in path.stem) and plan.offload_params == (path.stem == "zero3_offload")
    if plan.engine == "fsdp":
        assert plan.fsdp_version == 2 and plan.fsdp_state_dict_type == "SHARDED_STATE_DICT"
    if plan.zero_stage == 3:
        assert plan.zero3_init and plan.ds_config["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"]
    if plan.ds_config is not None:  # "auto" wherever the recipe decides, so the JSON never contradicts it
        for key in ("train_micro_batch_size_per_gpu", "gradient_accumulation_steps", "gradient_clipping"):
            assert plan.ds_config[key] == "auto"
        assert "train_batch_size" not in plan.ds_config
