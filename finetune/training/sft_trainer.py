"""TRL's SFTTrainer with the training loss alone: no per-micro-batch entropy and token accuracy.

TRL 1.x scores every micro-batch twice over for its logs: the entropy of each next-token distribution and whether
the label is its argmax ('entropy', 'mean_token_accuracy'), through a chunked LM head that also recomputes the
logits in the backward pass, then reads both back with `.item()` (a device sync; a gather across ranks first). On
CPU that head runs as torch ops over the full vocabulary: 3.1x the time of a plain cross-entropy at the built-in
model's shape (README, Speed). Nothing here reads those metrics, so the loss is computed without them:

- on CPU, from the model's own logits with one cross-entropy (the logits tensor is small next to the model there);
- on a GPU (and on CPU with fp32 norms under a bf16 LM head), through TRL's fused LM head asked for log-probabilities only (no full logits at a 150k vocabulary).

The loss is TRL's: the summed negative log-likelihood of the labelled tokens over `num_items_in_batch` (or over the
labelled tokens of the micro-batch when it is not given), scaled like TRL's under `average_tokens_across_devices`.
Whatever TRL computes differently (other loss types, label smoothing, a custom loss, MoE aux loss, sequence
parallelism, callers that want the outputs) goes to TRL's own `compute_loss`, metrics included.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from trl import SFTTrainer
from trl.trainer.utils import add_fused_lm_head

from finetune.data.types import IGNORE_INDEX


class LossOnlySFTTrainer(SFTTrainer):
    """SFTTrainer whose `compute_loss` returns TRL's loss and logs no per-token metrics (module docstring)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.loss_only = self._plain_nll()
        if self.loss_only:
            # TRL's fused LM head computes entropy and top-1 as well: wrap it in one that computes log-probs only
            # (its plain forward still goes through TRL's, and from there to the model's)
            base = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
            add_fused_lm_head(base, outputs=("log_probs",))
            # fp32 norms under a bf16 head (quantization.fp32_norms) hand the head fp32 hidden states, which only the
            # fused head (it casts them) takes: the plain logits path is for a head in the norms' dtype
            head = base.get_output_embeddings().weight.dtype
            self.plain_logits = all(p.dtype == head for n, p in base.named_parameters() if "norm" in n)

    def _plain_nll(self) -> bool:
        parallelism = getattr(self.accelerator, "parallelism_config", None)
        return (
            self.args.loss_type == "nll"
            and self.compute_loss_func is None
            and self.label_smoother is None
            and not self.aux_loss_enabled
            and not (parallelism is not None and parallelism.sp_enabled)
        )

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if return_outputs or not self.loss_only:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        labels = inputs["labels"]
        if self.plain_logits and _on_cpu(labels):
            total, labelled = _summed_nll(model, inputs)
        else:
            outputs = model(**inputs, use_cache=False, fused_lm_head=True)
            total, labelled = -outputs.log_probs.sum(), outputs.label_mask.sum()
        count = labelled if num_items_in_batch is None else num_items_in_batch
        # clamped like TRL's: a micro-batch without labelled tokens gives a differentiable zero, not 0 / 0
        loss = total / torch.as_tensor(count, device=total.device).clamp(min=1)
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            loss = loss * (self.accelerator.num_processes // self.get_tp_size())  # DDP averages the gradients
        return loss


def _on_cpu(tensor: torch.Tensor) -> bool:
    return tensor.device.type == "cpu"


def _summed_nll(model, inputs: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed next-token NLL, labelled tokens) from the model's logits: labels shifted left, not the logits, so the
    logits tensor is used in place (no copy of the largest tensor of the step)."""
    labels = inputs["labels"]
    logits = model(**{k: v for k, v in inputs.items() if k != "labels"}, use_cache=False).logits
    shifted = F.pad(labels[..., 1:], (0, 1), value=IGNORE_INDEX)
    total = F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]).float(), shifted.reshape(-1), ignore_index=IGNORE_INDEX, reduction="sum"
    )
    return total, (shifted != IGNORE_INDEX).sum()
