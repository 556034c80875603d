"""The pre-flight of a training run: every choice that depends on the recipe, the launch and the machine, made and
checked once before anything loads, then handed to the trainer (nothing is decided twice or thrown away).
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass, fields
from typing import Any

from finetune.config.schema import Recipe
from finetune.errors import UserError
from finetune.runtime import Runtime, four_bit_config, resolve_runtime
from finetune.training.launch import LaunchPlan


@dataclass(frozen=True)
class TrainPlan:
    """What a run was decided to be: the process layout, precision, 4-bit settings, kernels and checkpointing."""

    launch: LaunchPlan
    runtime: Runtime
    quantization: Any  # transformers' BitsAndBytesConfig for QLoRA, else None
    liger: bool
    checkpointing: dict[str, Any]  # SFTConfig keywords


def plan_training(recipe: Recipe, launch: LaunchPlan) -> TrainPlan:
    """Decide and check everything that can fail on bad input before a model or dataset loads."""
    from trl import SFTConfig

    runtime = resolve_runtime(recipe.model.dtype)
    quantization = four_bit_config(recipe.quantization, runtime) if recipe.method == "qlora" else None
    check_tracker(recipe.training.report_to)
    return TrainPlan(
        launch=launch,
        runtime=runtime,
        quantization=quantization,
        liger=use_liger(recipe.training.liger, runtime),
        checkpointing=checkpointing_arguments(SFTConfig, recipe.training, runtime),
    )


def checkpointing_arguments(config_class, training, runtime: Runtime) -> dict:
    """Activation checkpointing as `SFTConfig` keywords: on/off, selective, every N layers, offloaded.

    transformers 5.24 renamed gradient_checkpointing to activation_checkpointing (the old name warns) and added
    `every_n_layers` and `offload`; TRL reads the `selective` key. Options the run cannot honour are refused here,
    before any model is loaded, rather than silently ignored.
    """
    choice = training.gradient_checkpointing
    enabled = runtime.use_cuda if choice == "auto" else choice is not False
    extras = {"every_n_layers": training.checkpoint_every_n_layers} if training.checkpoint_every_n_layers > 1 else {}
    if training.offload_activations:
        extras["offload"] = True
    if extras and not enabled:
        why = " ('auto' is off on CPU)" if choice == "auto" else ""
        raise UserError(
            f"training.{'checkpoint_every_n_layers' if 'every_n_layers' in extras else 'offload_activations'} needs "
            f"activation checkpointing, which is off{why}: set training.gradient_checkpointing=true or remove it"
        )
    known = {f.name for f in fields(config_class)}
    name = "activation_checkpointing" if "activation_checkpointing" in known else "gradient_checkpointing"
    if extras and name == "gradient_checkpointing":
        import transformers

        raise UserError(
            f"training.checkpoint_every_n_layers and training.offload_activations need transformers >= 5.24 "
            f"(installed: {transformers.__version__}): pip install -U 'transformers<6', or remove them"
        )
    kwargs = {"use_reentrant": False, **extras, **({"selective": True} if choice == "selective" else {})}
    return {name: enabled, f"{name}_kwargs": kwargs if enabled else None}


def use_liger(choice: bool | str, runtime: Runtime) -> bool:
    """Liger's kernels are Triton (GPU only): 'auto' takes them when they can run, an explicit `true` insists."""
    installed = importlib.util.find_spec("liger_kernel") is not None
    if choice == "auto":
        return installed and runtime.use_cuda
    if choice and not (installed and runtime.use_cuda):
        raise UserError(
            "training.liger=true needs a CUDA GPU and the liger-kernel package: pip install liger-kernel, "
            "or set training.liger=auto"
        )
    return bool(choice)


_TRACKER_PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}


def check_tracker(report_to: str) -> None:
    """An experiment tracker that is not installed fails before any work, not after the first logging step."""
    package = _TRACKER_PACKAGES.get(report_to)
    if package is None:
        return
    try:
        importlib.import_module(package)
    except ImportError:
        raise UserError(f"training.report_to={report_to} needs the {package} package: pip install {package}") from None
