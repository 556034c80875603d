"""sdpa per document on flattened packed batches: the same logits and gradients as one document at a time, and plain
sdpa everywhere else."""

from __future__ import annotations

import pytest
import torch
from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

from finetune.training.varlen_sdpa import register

DOCS = [[3, 14, 15, 92, 65, 35], [89, 79, 32], [38, 46, 26, 43, 38, 32, 7]]


@pytest.fixture
def model(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32, attn_implementation="sdpa")
    model.set_attn_implementation(register())
    model.config.use_cache = False  # as in training: with a cache, sdpa's mask ignores the documents in position ids
    return model


def packed_batch() -> dict:
    rows = [{"input_ids": DOCS[0] + DOCS[1], "seq_lengths": [6, 3]}, {"input_ids": DOCS[2], "seq_lengths": [7]}]
    return DataCollatorForLanguageModeling(pad_token_id=0, padding_free=True)(rows)


def test_packed_logits_and_gradients_equal_one_document_at_a_time(model) -> None:
    batch = packed_batch()
    assert batch["cu_seq_lens_q"].tolist() == [0, 6, 9, 16]
    model.eval()
    packed = model(**batch).logits[0]
    alone = torch.cat([model(input_ids=torch.tensor([ids])).logits[0] for ids in DOCS])
    assert torch.allclose(packed, alone, atol=1e-5)

    grads = []
    for name in ("sdpa_varlen", "sdpa"):  # sdpa: the dense block-diagonal mask built from the position ids
        model.set_attn_implementation(name)
        model.zero_grad()
        model(**batch).loss.backward()
        grads.append(model.model.layers[0].self_attn.q_proj.weight.grad.clone())
    assert grads[0].abs().max() > 0 and torch.allclose(*grads, atol=1e-5)


def test_boundaries_are_read_once_per_forward(model, monkeypatch) -> None:
    """Every layer gets the same boundary tensor; reading it to the host (a sync on a GPU) happens once."""
    from finetune.training import varlen_sdpa

    calls = []
    original = varlen_sdpa.document_lengths
    monkeypatch.setattr(varlen_sdpa, "document_lengths", lambda *a: calls.append(1) or original(*a))
    batch = packed_batch()
    with torch.no_grad():
        model(**batch)
        assert len(model.model.layers) == 2 and len(calls) == 1
        model(**packed_batch())  # a new batch: read again
    assert len(calls) == 2


def test_without_boundaries_it_is_sdpa(model) -> None:
    """Generation and padded batches carry no boundaries: left padding and its mask behave exactly as with sdpa."""
    ids = torch.tensor([[0, 0, 5, 17, 42], [7, 8, 9, 10, 11]])
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    model.eval()
    with torch.no_grad():
        varlen = model(input_ids=ids, attention_mask=mask).logits
        model.set_attn_implementation("sdpa")
        sdpa = model(input_ids=ids, attention_mask=mask).logits
    assert torch.equal(varlen, sdpa)


def test_packed_rows_without_boundaries_split_where_positions_restart(model) -> None:
    """The rows layout (no cu_seq_lens, no mask): documents from the position ids, padding one trailing segment."""
    from finetune.training.collate import PackedRowsCollator
    from finetune.training.varlen_sdpa import _row_documents

    assert _row_documents([0, 1, 2, 0, 1, 0, 0, 0]) == [3, 2, 3]
    assert _row_documents([0, 1, 2, 0, 0, 0]) == [3, 3]  # a one-token document, then padding
    assert _row_documents([0, 0, 1]) == [1, 2]
    rows = [{"input_ids": DOCS[0] + DOCS[1], "seq_lengths": [6, 3]}, {"input_ids": DOCS[2], "seq_lengths": [7]}]
    batch = PackedRowsCollator(pad_token_id=0)(rows)
    model.eval()
    with torch.no_grad():
        packed = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"]).logits
        alone = [model(input_ids=torch.tensor([ids])).logits[0] for ids in DOCS]
    assert torch.allclose(packed[0], torch.cat(alone[:2]), atol=1e-5)
    assert torch.allclose(packed[1, :7], alone[2], atol=1e-5)


def test_boundaries_that_do_not_fit_the_sequence_are_refused(model) -> None:
    batch = packed_batch()
    batch["cu_seq_lens_q"] = torch.tensor([0, 6, 9], dtype=torch.int32)  # stops short of the 16 tokens
    with pytest.raises(ValueError, match="does not split one sequence of 16 tokens"):
        model(**batch)


def test_training_on_cpu_flattens_packed_batches_with_sdpa_per_document(tmp_path, tiny_model_dir, code_repo) -> None:
    from conftest import train_recipe

    from finetune.config.load import validate_recipe
    from finetune.training.trainer import run

    recipe = train_recipe(tmp_path / "run", tiny_model_dir, code_repo, "lora", max_steps=2)
    summary = run(validate_recipe(recipe))
    assert summary.trainer.model.config._attn_implementation == "sdpa_varlen"
    batch = next(iter(summary.trainer.get_train_dataloader()))
    assert batch["input_ids"].shape[0] == 1 and "cu_seq_lens_q" in batch and "attention_mask" not in batch
    saved = (tmp_path / "run" / "adapter_config.json").read_text()
    assert "sdpa_varlen" not in saved


def test_only_models_without_sliding_windows_use_it() -> None:
    from types import SimpleNamespace

    from transformers import LlamaConfig, MistralConfig, Qwen2Config

    from finetune.errors import UserError
    from finetune.training.trainer import use_varlen_sdpa
    from finetune.training.varlen_sdpa import supports

    assert supports(LlamaConfig())
    assert supports(Qwen2Config(use_sliding_window=False))  # Qwen2.5-Coder: the window is configured off
    assert not supports(MistralConfig(sliding_window=4096))
    assert not supports(Qwen2Config(use_sliding_window=True, sliding_window=4096, max_window_layers=0))

    def recipe(choice: str, packing: bool = True):
        return SimpleNamespace(model=SimpleNamespace(attn_implementation=choice), data=SimpleNamespace(packing=packing))

    class Model:
        def __init__(self, config) -> None:
            self.config = config
            config._attn_implementation = "sdpa"

        def set_attn_implementation(self, name: str) -> None:
            self.config._attn_implementation = name

    for choice, packing, config, expected in [
        ("auto", True, LlamaConfig(), "sdpa_varlen"),
        ("sdpa_varlen", True, LlamaConfig(), "sdpa_varlen"),
        ("sdpa", True, LlamaConfig(), "sdpa"),  # asked for by name: the dense mask
        ("auto", False, LlamaConfig(), "sdpa"),  # nothing packed, nothing to split
        ("auto", True, MistralConfig(sliding_window=4096), "sdpa"),
    ]:
        model = Model(config)
        use_varlen_sdpa(recipe(choice, packing), model)
        assert model.config._attn_implementation == expected, (choice, packing)
    with pytest.raises(UserError, match="sliding-window or chunked attention: use sdpa"):
        use_varlen_sdpa(recipe("sdpa_varlen"), Model(MistralConfig(sliding_window=4096)))
