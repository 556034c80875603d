"""`finetune export --gguf`: the file reads back with llama.cpp's names and layout, and runs like the original.

The forward pass is checked through transformers' own GGUF reader, which undoes llama.cpp's q/k row order by its own
code: a file with the rotary permutation left out gives different logits (checked below), so agreement means the
layout is llama.cpp's. These tests need the `gguf` package (the `[gguf]` extra) and skip without it.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest
import torch

from finetune.cli.main import main
from finetune.export import gguf as export

CHATML = "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
TEXT = "<fim_prefix>def add(a, b):\n    return a<fim_suffix>\n<fim_middle> café 🚀  x = 1\n"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    """The tiny Llama (byte-level BPE, StarCoder FIM tokens) with a chat template, as an SFT merge would carry."""
    from transformers import AutoTokenizer

    directory = tmp_path_factory.mktemp("gguf") / "merged"
    shutil.copytree(tiny_model_dir, directory)
    tokenizer = AutoTokenizer.from_pretrained(directory)
    tokenizer.chat_template = CHATML
    tokenizer.save_pretrained(directory)
    return directory


def _field(reader, key: str):
    return reader.fields[key].contents()


def _logits(directory: Path, gguf_file: str | None = None) -> tuple[torch.Tensor, list[int]]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs = {"gguf_file": gguf_file} if gguf_file else {}
    model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32, **kwargs)
    ids = AutoTokenizer.from_pretrained(directory, **kwargs)(TEXT, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0], ids


def test_f32_file_reads_back_and_runs_like_the_model(model_dir: Path, tmp_path: Path) -> None:
    gguf = pytest.importorskip("gguf")
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoTokenizer

    out = tmp_path / "model.gguf"
    assert main(["export", "--model", str(model_dir), "--gguf", str(out), "--outtype", "f32"]) == 0
    reader = gguf.GGUFReader(out)
    config, tokenizer = AutoConfig.from_pretrained(model_dir), AutoTokenizer.from_pretrained(model_dir)
    assert _field(reader, "general.architecture") == "llama"
    assert _field(reader, "llama.block_count") == config.num_hidden_layers
    assert _field(reader, "llama.attention.head_count_kv") == config.num_key_value_heads
    assert _field(reader, "tokenizer.ggml.pre") == "gpt-2" and _field(reader, "tokenizer.chat_template") == CHATML
    tokens, types = _field(reader, "tokenizer.ggml.tokens"), _field(reader, "tokenizer.ggml.token_type")
    assert len(tokens) == config.vocab_size and len(_field(reader, "tokenizer.ggml.merges")) > 100
    fim = tokenizer.convert_tokens_to_ids("<fim_prefix>")
    assert tokens[fim] == "<fim_prefix>" and types[fim] == gguf.TokenType.CONTROL
    assert _field(reader, "tokenizer.ggml.eos_token_id") == tokenizer.eos_token_id

    weights = {k: v.numpy() for k, v in load_file(model_dir / "model.safetensors").items()}
    tensors = {t.name: t for t in reader.tensors}
    assert (tensors["token_embd.weight"].data == weights["model.embed_tokens.weight"]).all()
    assert (tensors["blk.1.ffn_down.weight"].data == weights["model.layers.1.mlp.down_proj.weight"]).all()
    q = weights["model.layers.0.self_attn.q_proj.weight"]
    assert (tensors["blk.0.attn_q.weight"].data == export.rotary_permute(q, config.num_attention_heads)).all()
    assert not (tensors["blk.0.attn_q.weight"].data == q).all()
    assert tensors["blk.0.attn_norm.weight"].tensor_type == gguf.GGMLQuantizationType.F32
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask  # readable by a server running as another user

    original, ids = _logits(model_dir)
    shutil.copy(out, model_dir / "check.gguf")
    try:
        from_gguf, gguf_ids = _logits(model_dir, "check.gguf")
    finally:
        (model_dir / "check.gguf").unlink()
    assert gguf_ids == ids and fim in ids  # the tokenizer survives, FIM tokens whole
    assert torch.allclose(from_gguf, original, atol=1e-5)


def test_without_the_rotary_permutation_the_logits_differ(model_dir: Path, tmp_path: Path, monkeypatch) -> None:
    """The forward check above can fail: skip the q/k permutation and the GGUF model computes something else."""
    pytest.importorskip("gguf")
    monkeypatch.setattr(export, "rotary_permute", lambda weight, heads: weight)
    export.export_gguf(str(model_dir), str(model_dir / "unpermuted.gguf"), "f32")
    try:
        from_gguf, _ = _logits(model_dir, "unpermuted.gguf")
    finally:
        (model_dir / "unpermuted.gguf").unlink()
    assert (from_gguf - _logits(model_dir)[0]).abs().max() > 0.1


def test_q8_0_quantizes_matrices_and_stays_close(model_dir: Path, tmp_path: Path) -> None:
    gguf = pytest.importorskip("gguf")
    out = model_dir / "q8.gguf"
    try:
        result = export.export_gguf(str(model_dir), str(out), "q8_0")
        tensors = {t.name: t for t in gguf.GGUFReader(out).tensors}
        assert tensors["blk.0.attn_k.weight"].tensor_type == gguf.GGMLQuantizationType.Q8_0
        assert tensors["output_norm.weight"].tensor_type == gguf.GGMLQuantizationType.F32
        assert result.tensors == len(tensors) and result.bytes == out.stat().st_size
        from_gguf, _ = _logits(model_dir, "q8.gguf")
    finally:
        out.unlink(missing_ok=True)
    original, _ = _logits(model_dir)
    assert (from_gguf - original).abs().max() < 0.05 * original.abs().max()


def test_other_tokenizers_architectures_and_existing_files_are_refused(
    model_dir: Path, sp_model_dir: Path, tmp_path: Path, capsys
) -> None:
    pytest.importorskip("gguf")
    mistral = tmp_path / "mistral"
    shutil.copytree(model_dir, mistral)
    config = json.loads((mistral / "config.json").read_text())
    (mistral / "config.json").write_text(json.dumps({**config, "model_type": "mistral"}))
    (tmp_path / "exists.gguf").write_text("keep")
    cases = [
        ([str(sp_model_dir), str(tmp_path / "a.gguf")], ["not a plain byte-level BPE", "convert_hf_to_gguf.py"]),
        ([str(mistral), str(tmp_path / "b.gguf")], ["is a mistral model", "convert_hf_to_gguf.py"]),
        ([str(model_dir), str(tmp_path / "exists.gguf")], ["pass --force to replace it"]),
    ]
    for (model, out), messages in cases:
        assert main(["export", "--model", model, "--gguf", out]) == 2
        errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1 and all(message in errors[0] for message in messages), errors
    assert (tmp_path / "exists.gguf").read_text() == "keep"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exists.gguf", "mistral"]  # no temporary files left


def test_missing_gguf_package_names_the_extra(model_dir: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setitem(sys.modules, "gguf", None)  # `import gguf` fails, installed or not
    assert main(["export", "--model", str(model_dir), "--gguf", str(tmp_path / "m.gguf")]) == 2
    assert "pip install 'finetune[gguf]'" in capsys.readouterr().err
    assert not (tmp_path / "m.gguf").exists()
