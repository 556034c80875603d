"""One axolotl run timed like the toolkit's: `python -m finetune.dev.bench_axolotl CONFIG.yaml --steps N --warmup W`.

Run by `bench peers` with the python of axolotl's own virtual environment and this repository on PYTHONPATH; it
needs only torch and transformers from this package (`bench_train.StepMeter`, which counts the real tokens each
forward receives, so padding and packing are counted alike for every configuration). axolotl's `train` builds its
trainer itself, so the meter is added when that trainer starts training.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m finetune.dev.bench_axolotl", description=__doc__.splitlines()[0])
    parser.add_argument("config", help="axolotl YAML written by bench peers")
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--warmup", type=int, required=True)
    parser.add_argument("--json", required=True)
    args = parser.parse_args(argv)
    os.environ.setdefault("AXOLOTL_DO_NOT_TRACK", "1")

    from transformers import Trainer

    from finetune.dev.bench_train import StepMeter, summarize

    meter, trained = StepMeter(), {}
    original_train = Trainer.train

    def train_with_meter(self, *positional, **keywords):
        self.add_callback(meter)
        trained["model"] = self.model
        return original_train(self, *positional, **keywords)

    Trainer.train = train_with_meter
    from axolotl.cli.args import TrainerCliArgs
    from axolotl.cli.config import load_cfg
    from axolotl.cli.train import do_train

    do_train(load_cfg(args.config), TrainerCliArgs())
    result = summarize("axolotl", "lora", meter, args.warmup, trained["model"])
    Path(args.json).write_text(json.dumps(asdict(result), indent=2) + "\n", encoding="utf-8")
    print(result.line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
