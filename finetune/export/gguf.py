"""A merged (or fully fine-tuned) Llama-architecture model as one GGUF file, for llama.cpp and Ollama.

The `gguf` package (llama.cpp's, MIT) has the file writer but not llama.cpp's converter script, so this writes only
what it can vouch for: the Llama architecture with a GPT-2-style byte-level BPE tokenizer, the layout of the tiny
models this project builds. Tensors get llama.cpp's names, and the q/k projections the row order of its rotary
embedding (the permutation convert_hf_to_gguf.py applies: Hugging Face rotates two halves of each head, llama.cpp
adjacent pairs). Tokens, their types, merges, special ids and the chat template go into the metadata, so Ollama and
llama-server chat in the template the SFT run saved. Any other architecture or tokenizer is refused with a pointer
to llama.cpp's converter, which identifies pre-tokenizers by hashing their output and knows the other families.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from finetune.errors import UserError
from finetune.io import make_temp_file

OUT_TYPES = ("f16", "bf16", "q8_0", "f32")
_CONVERTER = "convert it with llama.cpp's convert_hf_to_gguf.py instead"


@dataclass
class Exported:
    path: Path
    tensors: int
    bytes: int
    seconds: float


def _gguf():
    try:
        import gguf
    except ImportError:
        raise UserError("GGUF export needs the gguf package: pip install 'finetune[gguf]'") from None
    return gguf


def _llama_config(model_dir: Path) -> Any:
    from transformers import AutoConfig

    if not (model_dir / "config.json").is_file():
        raise UserError(f"{model_dir} holds no config.json: pass a merged model (finetune merge) or a full run's output")
    config = AutoConfig.from_pretrained(model_dir)
    if config.model_type != "llama":
        raise UserError(f"{model_dir} is a {config.model_type} model and GGUF export writes Llama only: {_CONVERTER}")
    rope = getattr(config, "rope_parameters", None) or {}
    if rope.get("rope_type", "default") != "default":
        raise UserError(f"{model_dir} uses {rope['rope_type']} RoPE scaling, which this export does not write: {_CONVERTER}")
    return config


def _check_tokenizer(model_dir: Path) -> None:
    """Only a plain byte-level BPE (GPT-2 split regex) maps onto llama.cpp's `gpt2` model with the `gpt-2` splitter."""
    file = model_dir / "tokenizer.json"
    if not file.is_file():
        raise UserError(f"{model_dir} holds no tokenizer.json: export a merged model, which carries its tokenizer")
    spec = json.loads(file.read_text(encoding="utf-8"))
    pre = spec.get("pre_tokenizer") or {}
    plain = (
        spec["model"].get("type") == "BPE"
        and not spec["model"].get("byte_fallback")
        and pre.get("type") == "ByteLevel"
        and pre.get("use_regex", True)
        and (spec.get("decoder") or {}).get("type") == "ByteLevel"
    )
    if not plain:
        raise UserError(
            f"the tokenizer of {model_dir} is not a plain byte-level BPE (pre-tokenizer {pre.get('type')}), whose "
            f"llama.cpp name this export cannot tell: {_CONVERTER}"
        )


def _vocab(gguf: Any, tokenizer: Any, size: int) -> tuple[list[str], list[int]]:
    """Every id's token and llama.cpp type; added tokens are control (special) or user-defined, holes unused."""
    by_id = {index: token for token, index in tokenizer.get_vocab().items()}
    added = tokenizer.added_tokens_decoder
    tokens, types = [], []
    for index in range(size):
        if index in added:
            tokens.append(added[index].content)
            types.append(gguf.TokenType.CONTROL if added[index].special else gguf.TokenType.USER_DEFINED)
        elif index in by_id:
            tokens.append(by_id[index])
            types.append(gguf.TokenType.NORMAL)
        else:  # embedding rows past the tokenizer (padded vocabularies)
            tokens.append(f"[PAD{index}]")
            types.append(gguf.TokenType.UNUSED)
    return tokens, types


def rotary_permute(weight: Any, heads: int) -> Any:
    """q/k rows from Hugging Face's half-split rotary layout to llama.cpp's interleaved one (per head)."""
    return weight.reshape(heads, 2, weight.shape[0] // heads // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def _weight_files(model_dir: Path) -> list[Path]:
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise UserError(f"{model_dir} holds no .safetensors weights: save the model with safe_serialization")
    return files


def _tensors(files: list[Path]):
    """(name, float32 numpy array) for every weight in the safetensors files, one at a time."""
    import torch
    from safetensors import safe_open

    for file in files:
        with safe_open(file, framework="pt") as handle:
            for name in handle.keys():  # noqa: SIM118 (safe_open is not a dict)
                yield name, handle.get_tensor(name).to(torch.float32).numpy()


def _out_type(gguf: Any, array: Any, outtype: str) -> Any:
    """llama.cpp's rule: 1-D tensors (norms) stay F32; Q8_0 needs rows in whole blocks, else F16."""
    q = gguf.GGMLQuantizationType
    wanted = {"f32": q.F32, "f16": q.F16, "bf16": q.BF16, "q8_0": q.Q8_0}[outtype]
    if array.ndim == 1:
        return q.F32
    if wanted == q.Q8_0 and array.shape[-1] % gguf.GGML_QUANT_SIZES[q.Q8_0][0]:
        return q.F16
    return wanted


def export_gguf(
    model: str, out: str, outtype: str = "f16", on_tensor: Callable[[int, int], None] | None = None
) -> Exported:
    """Write `model` (a Llama directory with safetensors and tokenizer.json) to the GGUF file `out`, atomically."""
    gguf = _gguf()
    from transformers import AutoTokenizer

    if outtype not in OUT_TYPES:
        raise UserError(f"GGUF type {outtype!r} is not one of {', '.join(OUT_TYPES)}")
    model_dir, final = Path(model), Path(out)
    config = _llama_config(model_dir)
    _check_tokenizer(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    started = time.perf_counter()
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = make_temp_file(final)
    os.close(fd)
    try:
        writer = gguf.GGUFWriter(temp, "llama", use_temp_file=True)
        count = _write(gguf, writer, model_dir, config, tokenizer, outtype, on_tensor)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        umask = os.umask(0)
        os.umask(umask)
        temp.chmod(0o666 & ~umask)  # mkstemp's 0600 would keep a server running as another user (ollama) out
        os.replace(temp, final)
    finally:
        temp.unlink(missing_ok=True)
    return Exported(final, count, final.stat().st_size, time.perf_counter() - started)


def _write(gguf, writer, model_dir: Path, config, tokenizer, outtype: str, on_tensor) -> int:
    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    rope = getattr(config, "rope_parameters", None) or {}
    writer.add_name(model_dir.resolve().name)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_rope_freq_base(float(rope.get("rope_theta", getattr(config, "rope_theta", 10000.0))))
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_rope_dimension_count(head_dim)
    if head_dim * heads != config.hidden_size:
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    writer.add_vocab_size(config.vocab_size)
    file_type = {"f32": "ALL_F32", "f16": "MOSTLY_F16", "bf16": "MOSTLY_BF16", "q8_0": "MOSTLY_Q8_0"}[outtype]
    writer.add_file_type(gguf.LlamaFileType[file_type])
    tokens, types = _vocab(gguf, tokenizer, config.vocab_size)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    gguf.SpecialVocab(model_dir, load_merges=True, n_vocab=len(tokens)).add_to_gguf(writer, quiet=True)

    from safetensors import safe_open

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)
    files = _weight_files(model_dir)
    total = 0
    for file in files:
        with safe_open(file, framework="pt") as handle:
            total += len(handle.keys())
    count = 0
    for name, array in _tensors(files):
        if name.endswith("rotary_emb.inv_freq"):
            continue
        if name.endswith(("q_proj.weight", "q_proj.bias")):
            array = rotary_permute(array, heads)
        elif name.endswith(("k_proj.weight", "k_proj.bias")):
            array = rotary_permute(array, kv_heads)
        new_name = names.get_name(name, try_suffixes=(".weight", ".bias"))
        if new_name is None:
            raise UserError(f"{model_dir} has a tensor {name} that a Llama GGUF has no place for: {_CONVERTER}")
        qtype = _out_type(gguf, array, outtype)
        writer.add_tensor(new_name, gguf.quants.quantize(array, qtype), raw_dtype=qtype)
        count += 1
        if on_tensor:
            on_tensor(count, total)  # total counts inv_freq buffers too: a bound, not a promise
    return count
