"""Pre-flight checks of a launch: the Accelerate engine (DDP, DeepSpeed ZeRO, FSDP) against the recipe.

A multi-GPU run that fails after minutes of model loading, or inside DeepSpeed with a traceback, costs the user a
queue slot and an hour. Everything that can be known from the launch configuration is checked here first, before
any model is loaded: a missing or malformed DeepSpeed JSON, batch settings that contradict the recipe, FSDP without
GPUs, a quantization the sharding cannot handle. Each problem is one `UserError` line naming the conflict and the fix.

The plan comes either from the environment that `accelerate launch` sets for each process (`plan_from_env`, used by
`finetune train`), or from an Accelerate config file (`plan_from_config_file`, used by `finetune launch-check`, which
runs the same checks without launching, so the one-line error is not buried under the launcher's traceback).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from finetune.errors import UserError

Engine = Literal["single", "ddp", "deepspeed", "fsdp"]

# accelerate refuses these deepspeed_config keys next to a deepspeed_config_file: the JSON is the one source
_DS_KEYS_OWNED_BY_JSON = (
    "gradient_accumulation_steps",
    "gradient_clipping",
    "zero_stage",
    "offload_optimizer_device",
    "offload_param_device",
    "offload_param_nvme_path",
    "offload_optimizer_nvme_path",
    "zero3_save_16bit_model",
    "mixed_precision",
)


@dataclass(frozen=True)
class LaunchPlan:
    """How the processes of one run are laid out and sharded, as far as the recipe needs to know."""

    engine: Engine = "single"
    world_size: int = 1
    processes_per_machine: int = 1
    source: str = "environment"  # where the plan was read from, for messages
    ds_config_path: Path | None = None
    ds_config: dict[str, Any] | None = None
    zero_stage: int | None = None
    zero3_init: bool = False
    offload_optimizer: bool = False
    offload_params: bool = False
    fsdp_version: int | None = None
    fsdp_state_dict_type: str | None = None
    ds_fields_from_accelerate: tuple[str, ...] = field(default_factory=tuple)
    needs_cuda: bool = False  # the config launches one process per GPU (MULTI_GPU): no CPU fallback

    @property
    def shards_parameters(self) -> bool:
        """ZeRO-3 and FSDP keep only a slice of each weight per process (the model is gathered to save it)."""
        return self.zero_stage == 3 or self.engine == "fsdp"

    def describe(self) -> str:
        if self.engine == "deepspeed":
            extra = []
            if self.offload_optimizer:
                extra.append("optimizer offload")
            if self.offload_params:
                extra.append("parameter offload")
            suffix = f" + {' + '.join(extra)}" if extra else ""
            where = f" ({self.ds_config_path})" if self.ds_config_path else ""
            return f"DeepSpeed ZeRO-{self.zero_stage}{suffix}{where}, {self.world_size} processes"
        if self.engine == "fsdp":
            return f"FSDP{self.fsdp_version or ''} ({self.fsdp_state_dict_type}), {self.world_size} processes"
        if self.engine == "ddp":
            return f"data parallel (DDP), {self.world_size} processes"
        return "one process"


def _truthy(value: Any) -> bool:
    return str(value).strip().lower() in {"1", "true", "yes", "on"}


def _offloaded(value: Any) -> bool:
    return value is not None and str(value).strip().lower() not in {"", "none", "false"}


# ------------------------------------------------------------------------------------------------- reading plans


def read_ds_config(path_text: str, source: str) -> tuple[Path, dict[str, Any]]:
    """The DeepSpeed JSON a launch names, or a one-line error: missing file, syntax error (line/column), not a dict."""
    path = Path(path_text).expanduser()
    if not path.is_file():
        hint = "" if path.is_absolute() else f" (relative paths are resolved from the directory you launch in, {Path.cwd()})"
        raise UserError(
            f"DeepSpeed config {path_text} named by {source} not found{hint}: fix deepspeed_config_file in the "
            "Accelerate config, e.g. recipes/deepspeed/zero3.json"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise UserError(
            f"DeepSpeed config {path} line {exc.lineno}, column {exc.colno}: JSON syntax error: {exc.msg}; "
            "fix the JSON there (no comments or trailing commas in JSON)"
        ) from None
    except UnicodeDecodeError:
        raise UserError(f"DeepSpeed config {path} is not UTF-8 text: save it as UTF-8 JSON") from None
    if not isinstance(data, dict):
        raise UserError(f"DeepSpeed config {path} must be a JSON object ({{...}}), not a {type(data).__name__}")
    return path, data


def _zero_settings(ds: dict[str, Any], path: Path) -> tuple[int, bool, bool]:
    zero = ds.get("zero_optimization", {})
    if not isinstance(zero, dict):
        raise UserError(f"DeepSpeed config {path}: zero_optimization must be an object with a \"stage\" key")
    stage = zero.get("stage", 0)
    if stage not in (0, 1, 2, 3):
        raise UserError(f"DeepSpeed config {path}: zero_optimization.stage={stage!r} is not valid: choose 0, 1, 2 or 3")
    optimizer = zero.get("offload_optimizer") or {}
    params = zero.get("offload_param") or {}
    return (
        int(stage),
        isinstance(optimizer, dict) and _offloaded(optimizer.get("device")),
        isinstance(params, dict) and _offloaded(params.get("device")),
    )


def _deepspeed_plan(
    config_file: str | None, inline: Mapping[str, Any], base: dict[str, Any], source: str
) -> LaunchPlan:
    if config_file and config_file != "none":
        path, ds = read_ds_config(config_file, source)
        stage, off_opt, off_par = _zero_settings(ds, path)
        return LaunchPlan(
            engine="deepspeed",
            ds_config_path=path,
            ds_config=ds,
            zero_stage=stage,
            offload_optimizer=off_opt,
            offload_params=off_par,
            **base,
        )
    stage = int(inline.get("zero_stage", 2))
    return LaunchPlan(
        engine="deepspeed",
        zero_stage=stage,
        offload_optimizer=_offloaded(inline.get("offload_optimizer_device")),
        offload_params=_offloaded(inline.get("offload_param_device")),
        **base,
    )


def plan_from_env(env: Mapping[str, str] | None = None) -> LaunchPlan:
    """The plan of the current process, from the variables `accelerate launch` (or torchrun) set for it."""
    env = os.environ if env is None else env
    world = int(env.get("WORLD_SIZE", "1") or 1)
    local = int(env.get("LOCAL_WORLD_SIZE", "0") or 0) or world
    fields = tuple(f for f in env.get("ACCELERATE_CONFIG_DS_FIELDS", "").split(",") if f)
    base: dict[str, Any] = {"world_size": world, "processes_per_machine": local, "source": "the launch environment"}
    if _truthy(env.get("ACCELERATE_USE_DEEPSPEED", "")):
        inline = {
            "zero_stage": env.get("ACCELERATE_DEEPSPEED_ZERO_STAGE", "2"),
            "offload_optimizer_device": env.get("ACCELERATE_DEEPSPEED_OFFLOAD_OPTIMIZER_DEVICE"),
            "offload_param_device": env.get("ACCELERATE_DEEPSPEED_OFFLOAD_PARAM_DEVICE"),
        }
        plan = _deepspeed_plan(env.get("ACCELERATE_DEEPSPEED_CONFIG_FILE"), inline, base, "the launch environment")
        return _replace(
            plan,
            zero3_init=_truthy(env.get("ACCELERATE_DEEPSPEED_ZERO3_INIT", "")),
            ds_fields_from_accelerate=fields,
        )
    if _truthy(env.get("ACCELERATE_USE_FSDP", "")):
        return LaunchPlan(
            engine="fsdp",
            fsdp_version=int(env.get("FSDP_VERSION", "1") or 1),
            fsdp_state_dict_type=env.get("FSDP_STATE_DICT_TYPE", "SHARDED_STATE_DICT"),
            offload_params=_truthy(env.get("FSDP_OFFLOAD_PARAMS", "")),
            **base,
        )
    return LaunchPlan(engine="ddp" if world > 1 else "single", **base)


def plan_from_config_file(
    path: str | Path, num_processes: int | None = None, num_machines: int | None = None
) -> LaunchPlan:
    """The plan an Accelerate config file (as `accelerate launch --config_file` reads it) would give each process."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise UserError(f"Accelerate config {path} not found: pass one of recipes/accelerate/*.yaml")
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise UserError(f"Accelerate config {path}{where}: YAML syntax error; fix the YAML there") from None
    if not isinstance(config, dict) or "distributed_type" not in config:
        raise UserError(
            f"Accelerate config {path} has no distributed_type: pass a file written by `accelerate config`, "
            "or one of recipes/accelerate/*.yaml"
        )
    machines = int(num_machines or config.get("num_machines", 1) or 1)
    world = int(num_processes or config.get("num_processes", 1) or 1)
    base: dict[str, Any] = {
        "world_size": world,
        "processes_per_machine": max(1, world // machines),
        "source": f"Accelerate config {path}",
    }
    kind = str(config.get("distributed_type", "NO")).upper()
    if kind == "DEEPSPEED":
        ds = config.get("deepspeed_config") or {}
        plan = _deepspeed_plan(ds.get("deepspeed_config_file"), ds, base, f"Accelerate config {path}")
        return _replace(plan, zero3_init=_truthy(ds.get("zero3_init_flag", False)), ds_fields_from_accelerate=tuple(ds))
    if kind == "FSDP":
        fsdp = config.get("fsdp_config") or {}
        return LaunchPlan(
            engine="fsdp",
            fsdp_version=int(fsdp.get("fsdp_version", 1)),
            fsdp_state_dict_type=str(fsdp.get("fsdp_state_dict_type", "SHARDED_STATE_DICT")),
            offload_params=_truthy(fsdp.get("fsdp_offload_params", False)),
            **base,
        )
    needs_cuda = kind == "MULTI_GPU" and not _truthy(config.get("use_cpu", False))
    return LaunchPlan(engine="ddp" if world > 1 else "single", needs_cuda=needs_cuda, **base)


def _replace(plan: LaunchPlan, **changes: Any) -> LaunchPlan:
    from dataclasses import replace

    return replace(plan, **changes)


# ------------------------------------------------------------------------------------------------------ checking


def check_plan(plan: LaunchPlan, recipe, cuda_devices: int | None = None) -> None:
    """Raise a one-line `UserError` for the first way the launch and the recipe cannot work together."""
    import torch

    from finetune.runtime import resolve_runtime

    cuda = torch.cuda.device_count() if cuda_devices is None else cuda_devices
    if plan.engine == "fsdp" and cuda == 0:
        raise UserError(
            f"FSDP ({plan.source}) needs CUDA GPUs and this machine has none: run on GPUs, or use DeepSpeed "
            "(recipes/accelerate/zero3.yaml runs on CPU too)"
        )
    if plan.needs_cuda and cuda == 0:
        raise UserError(
            f"{plan.source} is a multi-GPU config (distributed_type MULTI_GPU) and this machine has no CUDA GPU: on "
            "CPU run one process (`finetune train RECIPE`) or several under DeepSpeed (accelerate launch "
            "--config_file recipes/accelerate/zero2.yaml --num_processes 2 -m finetune train RECIPE)"
        )
    if cuda and plan.processes_per_machine > cuda and plan.engine != "single":
        raise UserError(
            f"{plan.source} starts {plan.processes_per_machine} processes per machine but this machine has {cuda} "
            f"GPUs: pass --num_processes {cuda} (times the number of machines) to accelerate launch"
        )
    if plan.engine == "deepspeed":
        _check_deepspeed(plan, recipe)
    if plan.zero_stage == 3 and recipe.method != "full" and recipe.training.gradient_checkpointing == "selective":
        raise UserError(
            "training.gradient_checkpointing=selective needs non-reentrant checkpointing, which adapters under ZeRO-3 "
            "cannot use: set training.gradient_checkpointing=true, or use FSDP (recipes/accelerate/fsdp2.yaml)"
        )
    if plan.shards_parameters and recipe.quantization.fp32_norms:
        raise UserError(
            f"quantization.fp32_norms mixes fp32 and bf16 parameters, which {plan.source} cannot shard: remove it "
            "(it exists to reproduce the reference script on one GPU)"
        )
    if plan.shards_parameters and recipe.method == "qlora":
        runtime = resolve_runtime(recipe.model.dtype)
        compute = recipe.quantization.compute_dtype
        if compute != "auto" and compute != _precision_name(runtime.dtype):
            raise UserError(
                f"quantization.compute_dtype={compute} differs from the model's dtype ({_precision_name(runtime.dtype)}): "
                f"{'ZeRO-3' if plan.engine == 'deepspeed' else 'FSDP'} can only shard 4-bit weights stored in the "
                "model's dtype; set quantization.compute_dtype=auto"
            )


def _precision_name(dtype) -> str:
    import torch

    return {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32"}[dtype]


def _check_deepspeed(plan: LaunchPlan, recipe) -> None:
    import importlib.metadata

    try:  # installed, asked of the package metadata: `finetune.cli.deepspeed_gate` may hide the module itself
        importlib.metadata.version("deepspeed")
    except importlib.metadata.PackageNotFoundError:
        raise UserError(f"{plan.source} uses DeepSpeed, which is not installed: pip install 'finetune[deepspeed]'") from None
    if plan.ds_config_path is not None:
        clash = [f for f in plan.ds_fields_from_accelerate if f in _DS_KEYS_OWNED_BY_JSON]
        if clash:
            raise UserError(
                f"{plan.source} sets {', '.join(clash)} next to deepspeed_config_file {plan.ds_config_path}: "
                "remove them from the Accelerate config and set them in the DeepSpeed JSON"
            )
    ds = plan.ds_config
    if ds is None:
        return
    path = plan.ds_config_path
    t = recipe.training
    micro = _ds_number(ds, "train_micro_batch_size_per_gpu", path)
    if micro is not None and micro != t.batch_size:
        raise UserError(
            f"{path} sets train_micro_batch_size_per_gpu={micro} but the recipe has training.batch_size={t.batch_size}: "
            f"set it to \"auto\" in {path.name} (the recipe decides) or pass training.batch_size={micro}"
        )
    accum = _ds_number(ds, "gradient_accumulation_steps", path)
    if accum is not None and accum != t.gradient_accumulation_steps:
        raise UserError(
            f"{path} sets gradient_accumulation_steps={accum} but the recipe has training.gradient_accumulation_steps="
            f"{t.gradient_accumulation_steps}: set it to \"auto\" in {path.name} or pass "
            f"training.gradient_accumulation_steps={accum}"
        )
    total = _ds_number(ds, "train_batch_size", path)
    expected = t.batch_size * t.gradient_accumulation_steps * plan.world_size
    if total is not None and total != expected:
        raise UserError(
            f"{path} sets train_batch_size={total} but training.batch_size {t.batch_size} x "
            f"gradient_accumulation_steps {t.gradient_accumulation_steps} x {plan.world_size} processes = {expected}: "
            f"remove train_batch_size from {path.name} (DeepSpeed derives it) or make the three agree"
        )
    clip = ds.get("gradient_clipping")
    if isinstance(clip, (int, float)) and not isinstance(clip, bool) and float(clip) != t.max_grad_norm:
        raise UserError(
            f"{path} sets gradient_clipping={clip} but the recipe has training.max_grad_norm={t.max_grad_norm}: "
            f"set it to \"auto\" in {path.name} or pass training.max_grad_norm={clip}"
        )
    _check_ds_precision(ds, path, recipe)
    if plan.zero_stage == 3:
        zero = ds.get("zero_optimization", {})
        gather = zero.get("stage3_gather_16bit_weights_on_model_save", zero.get("gather_16bit_weights_on_model_save"))
        if gather is not True:
            raise UserError(
                f"{path}: ZeRO-3 needs \"stage3_gather_16bit_weights_on_model_save\": true in zero_optimization so "
                "the final model is saved whole (loadable without DeepSpeed); add it"
            )


def _ds_number(ds: dict[str, Any], key: str, path: Path | None) -> int | None:
    value = ds.get(key)
    if value is None or value == "auto":
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise UserError(f"{path}: {key}={value!r} is not valid: use a positive integer or \"auto\"")
    return value


def _check_ds_precision(ds: dict[str, Any], path: Path, recipe) -> None:
    from finetune.runtime import resolve_runtime

    runtime = resolve_runtime(recipe.model.dtype)
    wanted = {"bf16": runtime.bf16, "fp16": runtime.fp16}
    for key, on in wanted.items():
        section = ds.get(key)
        enabled = section.get("enabled", False) if isinstance(section, dict) else None
        if isinstance(enabled, bool) and enabled != on:
            precision = _precision_name(runtime.dtype) if runtime.use_cuda else "fp32 (no GPU)"
            raise UserError(
                f"{path} sets {key}.enabled={str(enabled).lower()} but this run computes in {precision} "
                f"(model.dtype={recipe.model.dtype}): set {key}.enabled to \"auto\" in {path.name}"
            )


def check_launch(recipe, env: Mapping[str, str] | None = None) -> LaunchPlan:
    """Read the plan of this process's launch and check it against the recipe (called before any model loads)."""
    plan = plan_from_env(env)
    check_plan(plan, recipe)
    return plan


@contextmanager
def built_whole() -> Iterator[None]:
    """Build a model whole even where ZeRO-3 is configured (transformers then builds under `zero.Init`, sharded).

    For a model that is saved right away (random weights reloaded 4-bit for QLoRA): a sharded one would save empty.
    """
    try:
        import transformers.integrations.deepspeed as hf_deepspeed
    except ImportError:
        yield
        return
    registered = getattr(hf_deepspeed, "_hf_deepspeed_config_weak_ref", None)
    hf_deepspeed.unset_hf_deepspeed_config()
    try:
        yield
    finally:
        hf_deepspeed._hf_deepspeed_config_weak_ref = registered
