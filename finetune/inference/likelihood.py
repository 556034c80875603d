"""How likely a model finds the true completion: the loss (mean negative log-likelihood, nats per token) of each
reference middle, and its end token, after the prompt the model is asked with.

Greedy completions of a small model change only when the right tokens overtake the wrong ones at every position,
so exact match and edit similarity can stay flat while a model has learned a repository. This loss moves with every
gain in probability of the reference, so it shows whether training taught the model the code it is evaluated on.
The target ids come from `SampleEncoder.middle_target_ids`, the same ids a FIM training sample puts in its loss.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from finetune.inference.complete import Completer


def reference_losses(
    completer: Completer, prompts: Sequence[list[int]], targets: Sequence[list[int]], *, batch_size: int = 8
) -> list[float | None]:
    """Per pair, the mean loss of `targets[i]` after `prompts[i]`; None when the pair exceeds the model's positions.

    Pairs of similar length are batched together, right-padded (positions stay those of an unpadded row).
    """
    import torch

    if len(prompts) != len(targets):
        raise ValueError(f"{len(prompts)} prompts for {len(targets)} targets")
    limit = completer.max_positions
    pad_id = completer.tokenizer.pad_token_id if completer.tokenizer.pad_token_id is not None else completer.encoder.eos_id
    losses: list[float | None] = [None] * len(prompts)
    order = [i for i in sorted(range(len(prompts)), key=lambda i: -len(prompts[i]) - len(targets[i])) if targets[i]]
    if limit is not None:
        order = [i for i in order if len(prompts[i]) + len(targets[i]) <= limit]
    model = completer.model
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(order), max(1, batch_size)):
            chunk = order[start : start + batch_size]
            width = max(len(prompts[i]) + len(targets[i]) for i in chunk)
            input_ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
            labels = torch.full((len(chunk), width), -100, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for row, i in enumerate(chunk):
                ids = prompts[i] + targets[i]
                input_ids[row, : len(ids)] = torch.tensor(ids)
                labels[row, len(prompts[i]) : len(ids)] = torch.tensor(targets[i])
                mask[row, : len(ids)] = 1
            with torch.inference_mode():
                logits = model(input_ids=input_ids.to(completer.device), attention_mask=mask.to(completer.device)).logits
            shifted = logits[:, :-1].float().transpose(1, 2)
            nll = torch.nn.functional.cross_entropy(shifted, labels[:, 1:].to(logits.device), reduction="none")
            per_row = nll.sum(dim=1) / (labels[:, 1:] != -100).sum(dim=1).to(nll.device)
            for row, i in enumerate(chunk):
                losses[i] = float(per_row[row])
    finally:
        model.train(was_training)
    return losses
