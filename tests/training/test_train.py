"""End-to-end training on CPU with a tiny model: every method learns, saves, and loads back to the same logits."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import train_recipe

from finetune.config.load import validate_recipe
from finetune.training.callbacks import MetricsCallback
from finetune.training.trainer import run


def recipe_dict(out: Path, model_dir: Path, repo: Path, method: str = "lora", **training) -> dict:
    return train_recipe(out, model_dir, repo, method, **training)


def logits_of(model, ids: torch.Tensor) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(input_ids=ids).logits.float()


def reload(out: Path, model_dir: Path, method: str):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    if method == "full":
        return AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    kwargs = {}
    if method == "qlora":
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.float32,
            bnb_4bit_quant_storage=torch.float32,
        )
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, **kwargs)
    if method == "qlora":
        from finetune.training.model import keep_cpu_4bit_in_full_precision

        keep_cpu_4bit_in_full_precision(base)  # as training did, whatever the CPU
    return PeftModel.from_pretrained(base, out)


@pytest.mark.parametrize("method", ["lora", "dora", "full", "qlora"])
def test_method_learns_and_reloads_identically(method, tmp_path, tiny_model_dir, code_repo) -> None:
    out = tmp_path / "run"
    summary = run(validate_recipe(recipe_dict(out, tiny_model_dir, code_repo, method)))
    losses = [r["loss"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if "loss" in r]
    assert len(losses) == 12
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.3, losses
    assert summary.steps == 12 and summary.eval_loss is not None
    assert not out.with_name("run.partial").exists()
    for name in [
        "recipe.yaml",
        "metrics.jsonl",
        "summary.json",
        "split.json",
        "data_report.json",
        "tokenizer_config.json",
    ]:
        assert (out / name).is_file(), name
    weights = "model.safetensors" if method == "full" else "adapter_model.safetensors"
    assert (out / weights).is_file()
    saved_recipe = yaml.safe_load((out / "recipe.yaml").read_text())
    assert saved_recipe["method"] == method and saved_recipe["model"]["family"] == "starcoder"

    ids = torch.tensor([[5, 17, 42, 99, 7, 230, 11, 64]])
    trained = logits_of(summary.trainer.model, ids)
    reloaded = logits_of(reload(out, tiny_model_dir, method), ids)
    assert torch.allclose(trained, reloaded, atol=1e-5), (trained - reloaded).abs().max()
    if method != "full":  # the adapter really changed the model
        from transformers import AutoModelForCausalLM

        base = logits_of(AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32), ids)
        assert (base - reloaded).abs().max() > 1e-3


def test_packed_logits_equal_unpacked(tiny_model_dir) -> None:
    from transformers import AutoModelForCausalLM
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32, attn_implementation="sdpa")
    first, second = [3, 14, 15, 92, 65, 35], [89, 79, 32, 38, 46]
    batch = DataCollatorForLanguageModeling(pad_token_id=0, padding_free=True)(
        [{"input_ids": first}, {"input_ids": second}]
    )
    assert "attention_mask" not in batch
    model.eval()
    with torch.no_grad():
        packed = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits
        alone = torch.cat([model(input_ids=torch.tensor([ids])).logits for ids in (first, second)], dim=1)
        leaky = model(input_ids=batch["input_ids"], use_cache=False).logits  # no document boundaries
    assert torch.allclose(packed, alone, atol=1e-5)
    assert not torch.allclose(leaky[:, len(first) :], alone[:, len(first) :], atol=1e-3)
    # labels never ask the last token of one document to predict the first of the next
    assert batch["labels"][0, len(first)] == -100


def test_resume_continues_from_checkpoint(tmp_path, tiny_model_dir, code_repo, monkeypatch) -> None:
    out = tmp_path / "run"
    data = recipe_dict(out, tiny_model_dir, code_repo, max_steps=6, save_steps=2)
    steps_run: list[int] = []

    def crash_at_five(self, args, state, control, **kwargs):
        steps_run.append(state.global_step)
        if state.global_step == 5:
            raise RuntimeError("simulated crash")

    monkeypatch.setattr(MetricsCallback, "on_step_end", crash_at_five, raising=False)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(validate_recipe(data))
    partial = out.with_name("run.partial")
    assert not out.exists() and (partial / "checkpoint-4").is_dir()

    steps_run.clear()
    monkeypatch.setattr(
        MetricsCallback, "on_step_end", lambda self, a, s, c, **k: steps_run.append(s.global_step), raising=False
    )
    summary = run(validate_recipe({**data, "resume": True}))
    assert steps_run == [5, 6]
    assert summary.steps == 6 and out.is_dir() and not partial.exists()


def test_existing_output_is_refused_then_overwritten(tmp_path, tiny_model_dir, code_repo) -> None:
    from finetune.errors import UserError

    out = tmp_path / "run"
    run(validate_recipe(recipe_dict(out, tiny_model_dir, code_repo, max_steps=2)))
    with pytest.raises(UserError, match="already holds a run: set overwrite=true"):
        run(validate_recipe(recipe_dict(out, tiny_model_dir, code_repo, max_steps=2)))
    summary = run(validate_recipe({**recipe_dict(out, tiny_model_dir, code_repo, max_steps=3), "overwrite": True}))
    assert summary.steps == 3 and json.loads((out / "summary.json").read_text())["steps"] == 3
    assert summary.held_out_fim is None and not any("held-out FIM" in line for line in summary.lines())  # eval off


@pytest.mark.distributed
def test_two_process_data_parallel_run(tmp_path, tiny_model_dir, code_repo) -> None:
    out = tmp_path / "run"
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(recipe_dict(out, tiny_model_dir, code_repo, max_steps=4)))
    config = tmp_path / "accelerate.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "compute_environment": "LOCAL_MACHINE",
                "distributed_type": "MULTI_GPU",
                "num_processes": 2,
                "num_machines": 1,
                "machine_rank": 0,
                "mixed_precision": "no",
                "use_cpu": True,
                "gpu_ids": "all",
            }
        )
    )
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "accelerate.commands.launch",
            "--config_file",
            str(config),
            "-m",
            "finetune",
            "train",
            str(recipe),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == 4
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    logged_steps = [r["step"] for r in records if "loss" in r]
    assert logged_steps == sorted(set(logged_steps))  # one writer: no duplicated lines
    assert result.stdout.count("finetune train: done") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["accelerate.yaml", "recipe.yaml", "run"]


def test_added_fim_tokens_are_trained_and_saved(tmp_path, tiny_model_dir, code_repo) -> None:
    """A StarCoder-token model fine-tuned in CodeLlama's format: the missing FIM tokens are added and learned."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "run"
    data = recipe_dict(out, tiny_model_dir, code_repo, max_steps=3)
    data["model"].update(family="codellama", add_fim_tokens=True)
    data["data"]["fim"] = {"structured_rate": 1.0}  # every sample uses the new tokens
    summary = run(validate_recipe(data))
    tokenizer = AutoTokenizer.from_pretrained(out)
    new_ids = tokenizer.convert_tokens_to_ids(["▁<PRE>", "▁<SUF>", "▁<MID>", "▁<EOT>"])
    assert len(set(new_ids)) == 4 and min(new_ids) >= len(AutoTokenizer.from_pretrained(tiny_model_dir))
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    base.resize_token_embeddings(len(tokenizer))
    reloaded = PeftModel.from_pretrained(base, out)
    ids = torch.tensor([[5, 17, *new_ids, 42]])
    assert torch.allclose(logits_of(summary.trainer.model, ids), logits_of(reloaded, ids), atol=1e-5)
    layer = next(m for m in summary.trainer.model.modules() if hasattr(m, "trainable_tokens_delta"))
    trained, original = layer.trainable_tokens_delta["default"], layer.trainable_tokens_original["default"]
    assert trained.shape[0] == 4 and (trained - original).abs().max() > 1e-4  # the new rows moved


def test_packed_rows_keep_documents_apart_without_flattening(tiny_model_dir) -> None:
    from transformers import AutoModelForCausalLM

    from finetune.training.collate import PackedRowsCollator, count_tokens, packing_layout

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32, attn_implementation="sdpa")
    docs = [[3, 14, 15, 92], [65, 35, 89], [79, 32, 38, 46, 26], [43, 38], [7, 8, 9]]
    rows = [  # three bfd-packed rows: docs 0+1, docs 2+3, doc 4 alone (shorter, so it is padded)
        {"input_ids": docs[0] + docs[1], "seq_lengths": [4, 3]},
        {"input_ids": docs[2] + docs[3], "seq_lengths": [5, 2]},
        {"input_ids": docs[4], "seq_lengths": [3]},
    ]
    batch = PackedRowsCollator(pad_token_id=0)(rows)
    assert "attention_mask" not in batch and batch["input_ids"].shape == (3, 7)
    assert batch["position_ids"].tolist()[:2] == [[0, 1, 2, 3, 0, 1, 2], [0, 1, 2, 3, 4, 0, 1]]
    assert batch["labels"][0, 4] == -100 and batch["labels"][1, 5] == -100 and batch["labels"][0, 0] == 3
    assert batch["labels"][2, 3:].tolist() == [-100] * 4
    assert count_tokens(batch) == (17, 21, 5)  # 17 real tokens in 5 documents, 4 padded positions
    model.eval()
    with torch.no_grad():
        packed = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits
        alone = [model(input_ids=torch.tensor([ids])).logits[0] for ids in docs]
    assert torch.allclose(packed[0], torch.cat(alone[:2]), atol=1e-5)
    assert torch.allclose(packed[1], torch.cat(alone[2:4]), atol=1e-5)
    assert torch.allclose(packed[2, :3], alone[4], atol=1e-5)
    assert packing_layout("auto", "sdpa", on_gpu=False) == "rows"  # sdpa_varlen is set first where the model allows
    assert packing_layout("auto", "sdpa_varlen", on_gpu=False) == "flatten"
    assert packing_layout("auto", "sdpa", on_gpu=True) == "flatten"
    assert packing_layout("auto", "flash_attention_2", on_gpu=True) == "flatten"
    assert packing_layout("rows", "sdpa_varlen", on_gpu=False) == "rows"


def test_rows_of_similar_length_share_a_micro_batch() -> None:
    """The length-grouped sampler pads much less than random pairs of packed rows, and sees every row once."""
    from types import SimpleNamespace

    from datasets import Dataset
    from transformers import TrainingArguments
    from transformers.trainer import Trainer

    from finetune.training.collate import group_rows_by_length

    torch.manual_seed(0)
    lengths = [512 if i % 2 else 220 + i for i in range(256)]
    rows = Dataset.from_dict({"input_ids": [[1] * n for n in lengths]}).shuffle(seed=0)
    args = TrainingArguments(output_dir="unused", per_device_train_batch_size=2, gradient_accumulation_steps=4,
                             use_cpu=True, report_to=[])  # fmt: skip
    trainer = SimpleNamespace(train_dataset=rows, args=args)
    group_rows_by_length(trainer)
    assert args.train_sampling_strategy == "group_by_length"
    assert trainer.train_dataset["length"] == [len(ids) for ids in rows["input_ids"]]
    trainer.processing_class = None
    order = list(Trainer._get_train_sampler(trainer, trainer.train_dataset))
    assert sorted(order) == list(range(256))

    grouped = trainer.train_dataset["length"]

    def padding(indices: list[int]) -> float:
        pairs = [(grouped[i], grouped[j]) for i, j in zip(indices[::2], indices[1::2], strict=True)]
        return sum(2 * max(p) - sum(p) for p in pairs) / sum(2 * max(p) for p in pairs)

    assert padding(order) < 0.02 and padding(order) * 4 < padding(torch.randperm(256).tolist())


@pytest.mark.parametrize("fp32_norms", [False, True])
def test_qlora_fp32_norms_is_opt_in(fp32_norms, tmp_path, tiny_model_dir, code_repo) -> None:
    """bf16 QLoRA keeps its norms in bf16 unless quantization.fp32_norms asks for the reference script's fp32 copy."""
    recipe = recipe_dict(tmp_path / "run", tiny_model_dir, code_repo, "qlora", max_steps=2)
    recipe["model"]["dtype"] = "bf16"
    recipe["quantization"] = {"fp32_norms": fp32_norms}
    recipe["data"]["eval_split"] = 0
    model = run(validate_recipe(recipe)).trainer.model
    norms = {p.dtype for n, p in model.named_parameters() if "norm" in n}
    assert norms == {torch.float32 if fp32_norms else torch.bfloat16}
    assert model.get_output_embeddings().weight.dtype == torch.bfloat16


def _losses(out: Path) -> list[float]:
    return [r["loss"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if "loss" in r]


@pytest.mark.parametrize(("choice", "every"), [(True, 1), ("selective", 1), (True, 2)])
def test_checkpointing_choices_train_as_without_it(choice, every, tmp_path, tiny_model_dir, code_repo) -> None:
    """Full, selective and every-other-layer checkpointing only trade memory for time: the losses stay the same."""
    from transformers.modeling_layers import GradientCheckpointingLayer

    def train(out: Path, **training):
        recipe = recipe_dict(out, tiny_model_dir, code_repo, max_steps=3, **training)
        recipe["data"]["eval_split"] = 0
        return run(validate_recipe(recipe)).trainer.model

    train(tmp_path / "plain", gradient_checkpointing=False)
    model = train(tmp_path / "checked", gradient_checkpointing=choice, checkpoint_every_n_layers=every)
    assert _losses(tmp_path / "checked") == pytest.approx(_losses(tmp_path / "plain"), rel=1e-4)
    layers = [m for m in model.modules() if isinstance(m, GradientCheckpointingLayer)]
    assert [layer.gradient_checkpointing for layer in layers] == [i % every == 0 for i in range(len(layers))]
    policies = {"context_fn" in layer._gradient_checkpointing_func.keywords for layer in layers}
    assert policies == {choice == "selective"}  # TRL's keep-attention policy reached every checkpointed layer


def test_checkpointing_options_that_cannot_apply_are_refused(tmp_path, tiny_model_dir, code_repo) -> None:
    from finetune.errors import UserError
    from finetune.training.launch import LaunchPlan
    from finetune.training.plan import plan_training
    from finetune.training.trainer import training_arguments

    def arguments(**training):
        recipe = validate_recipe(recipe_dict(tmp_path / "run", tiny_model_dir, code_repo, **training))
        return training_arguments(recipe, plan_training(recipe, LaunchPlan()), tmp_path / "run", has_eval=False)

    args = arguments(gradient_checkpointing=True, checkpoint_every_n_layers=2, offload_activations=True)
    assert args.activation_checkpointing is True
    assert args.activation_checkpointing_kwargs == {"use_reentrant": False, "every_n_layers": 2, "offload": True}
    assert arguments(gradient_checkpointing="auto").activation_checkpointing is False  # on CPU
    with pytest.raises(UserError, match=r"checkpoint_every_n_layers needs activation checkpointing, which is off "):
        arguments(checkpoint_every_n_layers=2)
    with pytest.raises(UserError, match="offload_activations needs activation checkpointing"):
        arguments(gradient_checkpointing=False, offload_activations=True)
