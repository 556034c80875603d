"""Save the final model or adapter whole, whatever the engine sharded it into.

Under ZeRO-3 and FSDP every process holds a slice of each weight. A user wants a normal `model.safetensors` or
`adapter_model.safetensors` that `from_pretrained` loads without DeepSpeed or FSDP. The Trainer gathers ZeRO-3
weights when the DeepSpeed JSON says `stage3_gather_16bit_weights_on_model_save` (the pre-flight check insists on
it), but with FSDP's SHARDED_STATE_DICT it saves no model at all: switch to a full state dict for the final save.
Intermediate checkpoints stay sharded (fast to write, and `resume=true` reads them).
"""

from __future__ import annotations

from pathlib import Path


def save_final_model(trainer, output_dir: Path) -> None:
    """Write the trained model/adapter and tokenizer to `output_dir` as ordinary files (collective: every rank)."""
    if getattr(trainer, "is_fsdp_enabled", False):
        plugin = trainer.accelerator.state.fsdp_plugin
        if "FULL_STATE_DICT" not in str(plugin.state_dict_type):
            plugin.state_dict_config = None
            plugin.optim_state_dict_config = None
            plugin.set_state_dict_type("FULL_STATE_DICT")
    trainer.save_model(str(output_dir))
