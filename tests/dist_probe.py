"""Run `finetune train` under a launcher and record what each process really held (used by test_distributed.py).

    accelerate launch --config_file CFG tests/dist_probe.py REPORT_DIR RECIPE [key=value ...]

Each rank writes `REPORT_DIR/rank{N}.json`: for every parameter its full size, the size of this rank's shard
(`ds_tensor` under ZeRO-3) and of the tensor it holds between steps, plus the size of this rank's fp32 optimizer
partition, the optimizer steps it ran, and whether the model was already sharded when it was loaded. At the end of training every rank gathers the full weights and writes
`REPORT_DIR/weights-rank{N}.pt`, which the tests compare with the saved model. `FINETUNE_PROBE_CRASH_AT=K` raises
after optimizer step K, to test resuming.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
from transformers import TrainerCallback


def _deepspeed_partitions(optimizer) -> list[int] | None:
    """Sizes of this rank's flat fp32 master-weight partitions (ZeRO-1/2 and ZeRO-3 name them differently)."""
    inner = getattr(optimizer, "optimizer", optimizer)
    for name in ("single_partition_of_fp32_groups", "fp32_partitioned_groups_flat"):
        groups = getattr(inner, name, None)
        if groups is not None:
            return [int(t.numel()) for t in groups]
    return None


def _is_dtensor(tensor) -> bool:
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:
        return False
    return isinstance(tensor, DTensor)


class ShardProbe(TrainerCallback):
    def __init__(self, out: Path):
        self.out = out
        self.rank = int(os.environ.get("RANK", "0"))
        self.crash_at = int(os.environ.get("FINETUNE_PROBE_CRASH_AT", "0"))
        self.record: dict = {"rank": self.rank, "world_size": int(os.environ.get("WORLD_SIZE", "1")), "steps": []}

    def on_train_begin(self, args, state, control, model=None, optimizer=None, **kwargs):
        params = {}
        for name, p in model.named_parameters():
            full = int(getattr(p, "ds_numel", p.numel()))  # a DTensor (FSDP2) reports its global size
            shard = getattr(p, "ds_tensor", None)
            local = p.to_local() if _is_dtensor(p) else p.data
            params[name] = {
                "full": full,
                "shard": int(shard.numel()) if shard is not None else int(local.numel()),
                "held": int(local.numel()) if shard is None else int(p.data.numel()),
                "trainable": bool(p.requires_grad),
                "zero3": hasattr(p, "ds_id"),
            }
        self.record["params"] = params
        self.record["optimizer_partitions"] = _deepspeed_partitions(optimizer)
        inner = getattr(optimizer, "optimizer", optimizer)  # accelerate's wrapper -> DeepSpeed's ZeRO optimizer
        self.record["optimizer"] = type(getattr(inner, "optimizer", inner)).__name__  # the one stepping the weights
        self._write()

    def on_step_end(self, args, state, control, **kwargs):
        self.record["steps"].append(state.global_step)
        self._write()
        if self.crash_at and state.global_step == self.crash_at:
            raise RuntimeError(f"probe: simulated crash after step {state.global_step}")

    def on_train_end(self, args, state, control, model=None, **kwargs):
        params = list(model.named_parameters())
        sharded = [p for _, p in params if hasattr(p, "ds_id")]
        if sharded:
            import deepspeed

            with deepspeed.zero.GatheredParameters(sharded, modifier_rank=None):
                weights = {name: p.detach().clone().cpu() for name, p in params}
        else:  # FSDP2 DTensors gather with full_tensor() (collective); ZeRO-2 weights are whole already
            weights = {name: (p.full_tensor() if _is_dtensor(p) else p).detach().clone().cpu() for name, p in params}
        torch.save(weights, self.out / f"weights-rank{self.rank}.pt")

    def _write(self) -> None:
        path = self.out / f"rank{self.rank}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.record))
        tmp.replace(path)


def main(argv: list[str]) -> int:
    import finetune.training.trainer as train
    from finetune.config.load import load_recipe
    from finetune.errors import UserError

    out = Path(argv[0])
    out.mkdir(parents=True, exist_ok=True)
    probe = ShardProbe(out)
    load_model = train.load_model

    def load_and_record(*args, **kwargs):  # was the model built sharded (ZeRO-3 zero.Init), or whole?
        model = load_model(*args, **kwargs)
        probe.record["built_sharded"] = all(hasattr(p, "ds_id") for p in model.parameters())
        return model

    train.load_model = load_and_record
    try:
        train.run(load_recipe(argv[1], argv[2:]), callbacks=[probe])
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
