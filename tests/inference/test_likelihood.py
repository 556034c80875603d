"""The loss of a reference middle is the loss a FIM training sample of it has on its middle, batching changes nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from finetune.data.tokenize.encoder import SampleEncoder
from finetune.data.types import Sample
from finetune.inference.complete import load_completer
from finetune.inference.likelihood import reference_losses

CODE = "def add(a, b):\n    return a + b\n\n\ndef sub(a, b):\n    return a - b\n"
CUTS = [(3, 9), (20, 33), (35, 52), (50, 60)]  # (middle start, middle end) of items of different lengths


def test_loss_equals_the_training_samples_middle_loss(tiny_model_dir: Path) -> None:
    """The eval asks what a PSM FIM sample with loss on the middle trains: same ids, same loss."""
    completer = load_completer(str(tiny_model_dir))
    trainer_view = SampleEncoder(completer.tokenizer, completer.family, loss_on="middle")
    for start, end in CUTS:
        prefix, middle, suffix = CODE[:start], CODE[start:end], CODE[end:]
        prompt = completer.prompt_ids(prefix, suffix, "m.py", "python")
        (loss,) = reference_losses(completer, [prompt], [completer.encoder.middle_target_ids(middle)])
        row = trainer_view.encode(Sample("fim", "m.py", "python", prefix=prefix, middle=middle, suffix=suffix))
        with torch.no_grad():
            expected = completer.model(
                input_ids=torch.tensor([row["input_ids"]]), labels=torch.tensor([row["labels"]])
            ).loss.item()
        assert loss == pytest.approx(expected, rel=1e-5)


def test_batched_losses_equal_one_at_a_time(tiny_model_dir: Path) -> None:
    completer = load_completer(str(tiny_model_dir))
    prompts = [completer.prompt_ids(CODE[:s], CODE[e:], "m.py", "python") for s, e in CUTS]
    targets = [completer.encoder.middle_target_ids(CODE[s:e]) for s, e in CUTS]
    assert len({len(p) + len(t) for p, t in zip(prompts, targets, strict=True)}) > 1  # the batch is padded
    batched = reference_losses(completer, prompts, targets, batch_size=4)
    alone = [reference_losses(completer, [p], [t])[0] for p, t in zip(prompts, targets, strict=True)]
    assert batched == pytest.approx(alone, rel=1e-5)
    assert all(loss is not None and loss > 0 for loss in batched)
    assert len(set(batched)) == len(batched)  # each row scored its own target


def test_a_pair_beyond_the_models_positions_has_no_loss(tiny_model_dir: Path) -> None:
    completer = load_completer(str(tiny_model_dir))
    limit = completer.max_positions
    assert limit is not None
    short = completer.prompt_ids("x = ", "\n", "m.py", "python")
    too_long = short + [short[-1]] * limit
    losses = reference_losses(completer, [too_long, short], [[5, 6], [5, 6]])
    assert losses[0] is None and losses[1] is not None


def test_the_model_is_left_in_its_mode(tiny_model_dir: Path) -> None:
    completer = load_completer(str(tiny_model_dir))
    completer.model.train()
    reference_losses(completer, [completer.prompt_ids("a", "b")], [[5]])
    assert completer.model.training
