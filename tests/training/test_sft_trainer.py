"""The loss-only trainer: TRL's loss and gradients, without the per-token metrics TRL logs for every micro-batch."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from datasets import Dataset
from peft import LoraConfig
from transformers import AutoModelForCausalLM
from trl import SFTConfig, SFTTrainer

from finetune.training.sft_trainer import LossOnlySFTTrainer


def _trainer(cls, model_dir: Path, tmp_path: Path, **config):
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    args = SFTConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, report_to=[], max_length=32, **config)
    data = Dataset.from_dict({"input_ids": [[5, 6, 7, 8, 9], [10, 11, 12]]})
    lora = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM")
    return cls(model=model, args=args, train_dataset=data, peft_config=lora)


def _batch() -> dict[str, torch.Tensor]:
    ids = torch.tensor([[5, 6, 7, 8, 9, 10, 11, 12], [13, 14, 15, 16, 17, 0, 0, 0]])
    labels = ids.clone()
    labels[1, 5:] = -100  # padding
    labels[0, :2] = -100  # a prompt
    return {"input_ids": ids, "attention_mask": (labels != -100).long() | (ids != 0).long(), "labels": labels}


def _loss_and_grads(trainer, num_items) -> tuple[float, list[torch.Tensor]]:
    model = trainer.model
    model.train()
    model.zero_grad()
    loss = trainer.compute_loss(model, _batch(), num_items_in_batch=num_items)
    loss.backward()
    grads = [p.grad.clone() for p in model.parameters() if p.requires_grad]
    return loss.item(), grads


@pytest.mark.parametrize("num_items", [None, 17])
def test_loss_and_gradients_are_trls(num_items, tiny_model_dir: Path, tmp_path: Path, monkeypatch) -> None:
    ours = _trainer(LossOnlySFTTrainer, tiny_model_dir, tmp_path / "ours")
    theirs = _trainer(SFTTrainer, tiny_model_dir, tmp_path / "trl")
    assert ours.loss_only
    loss, grads = _loss_and_grads(ours, num_items=num_items)
    expected, expected_grads = _loss_and_grads(theirs, num_items=num_items)
    assert loss == pytest.approx(expected, rel=1e-6)
    for got, want in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)
    # no entropy or accuracy was computed (TRL's own compute_loss records both for every micro-batch)
    assert "entropy" not in ours._metrics["train"] and "mean_token_accuracy" not in ours._metrics["train"]
    assert "entropy" in theirs._metrics["train"] and "mean_token_accuracy" in theirs._metrics["train"]

    # the GPU path (TRL's fused head, log-probs only) gives the same loss: run it on CPU through its torch fallback
    monkeypatch.setattr("finetune.training.sft_trainer._on_cpu", lambda tensor: False)
    fused, fused_grads = _loss_and_grads(ours, num_items=num_items)
    assert fused == pytest.approx(expected, rel=1e-5)
    for got, want in zip(fused_grads, expected_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


def test_other_loss_types_go_to_trl(tiny_model_dir: Path, tmp_path: Path) -> None:
    trainer = _trainer(LossOnlySFTTrainer, tiny_model_dir, tmp_path, loss_type="dft")
    assert not trainer.loss_only
    trainer.compute_loss(trainer.model, _batch())
    assert "mean_token_accuracy" in trainer._metrics["train"]  # TRL's own path, metrics and all
