"""`finetune merge`: merged logits equal PEFT's for LoRA/DoRA/rsLoRA/QLoRA, combinations load, bad input is one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

from finetune.cli.main import main
from finetune.dev.tiny import build_tiny_model
from finetune.merge.verify import compute_logits, prompt_ids

TIGHT = 1e-4  # fp32 merge: W + s*B@A vs W x + s*B(A x) differ only by the order of additions
QLORA_TOL = 1e-4  # dequantized 4-bit base: the same NF4 values training computed with, so as tight


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny matrices: one thread is faster than two, and much faster when other jobs share the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _bnb_config() -> BitsAndBytesConfig:
    # what finetune.training.model.quantization_config builds for a CPU run (compute = storage = fp32)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.float32,
        bnb_4bit_quant_storage=torch.float32,
    )


def make_adapter(
    base: Path,
    out: Path,
    *,
    r: int = 4,
    seed: int = 0,
    dora: bool = False,
    rslora: bool = False,
    qlora: bool = False,
    new_token: bool = False,
    chat_template: str | None = None,
    device: str = "cpu",
) -> Path:
    """A non-trivial adapter without training: PEFT's random init for both A and B (init_lora_weights=False)."""
    tokenizer = AutoTokenizer.from_pretrained(base)
    kwargs = {"quantization_config": _bnb_config()} if qlora else {}
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32, device_map={"": device}, **kwargs)
    extra: dict = {}
    if new_token:  # like training with model.add_fim_tokens: a new row, trained through trainable tokens + lm_head
        tokenizer.add_tokens(["<new_fim_token>"], special_tokens=True)
        model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
        extra = {"trainable_token_indices": {"embed_tokens": [len(tokenizer) - 1]}, "modules_to_save": ["lm_head"]}
    torch.manual_seed(seed)
    config = LoraConfig(
        r=r,
        lora_alpha=2 * r,
        target_modules="all-linear",
        use_dora=dora,
        use_rslora=rslora,
        init_lora_weights=False,
        task_type="CAUSAL_LM",
        **extra,
    )
    peft_model = get_peft_model(model, config)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name or "lora_A" in name:
                param.mul_(0.3)  # keep the logits in a sane range
            if new_token and ("trainable_tokens_delta" in name or "modules_to_save" in name):
                param.add_(torch.randn_like(param) * 0.1)
    peft_model.save_pretrained(out)
    if chat_template:
        tokenizer.chat_template = chat_template
    tokenizer.save_pretrained(out)
    method = "qlora" if qlora else "dora" if dora else "lora"
    recipe = {"method": method, "model": {"name_or_path": str(base), "dtype": "fp32"}}
    (out / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    return out


def peft_logits(base: Path, adapter: Path, prompts, qlora: bool = False, device: str = "cpu") -> list[torch.Tensor]:
    """Reference logits computed here, independently of finetune.merge.options: base (4-bit for QLoRA) + PeftModel."""
    tokenizer = AutoTokenizer.from_pretrained(adapter)
    kwargs = {"quantization_config": _bnb_config()} if qlora else {}
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32, device_map={"": device}, **kwargs)
    if model.get_input_embeddings().weight.shape[0] < len(tokenizer):
        model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    peft_model = PeftModel.from_pretrained(model, adapter)
    # train mode (dropout is 0) computes 4-bit layers as training did: in eval mode on AVX512-BF16 CPUs
    # bitsandbytes switches to a fused kernel that rounds the input to bf16
    return compute_logits(peft_model.train() if qlora else peft_model.eval(), prompts)


def merged_logits(out: Path, prompts, device: str = "cpu") -> list[torch.Tensor]:
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32, device_map={"": device})
    return compute_logits(model.eval(), prompts)


def max_diff(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return max(float((x - y).abs().max()) for x, y in zip(a, b, strict=True))


def run(*argv: str) -> int:
    return main(["merge", *map(str, argv)])


def one_line_error(capsys, *parts: str) -> None:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    for part in parts:
        assert part in err, err


@pytest.fixture(scope="module")
def lora_adapter(tiny_model_dir: Path, tmp_path_factory) -> Path:
    return make_adapter(tiny_model_dir, tmp_path_factory.mktemp("lora"), chat_template="{{ messages }}")


# ------------------------------------------------------------------------------------------------ single adapters


@pytest.mark.parametrize("kind", ["lora", "dora", "rslora"])
def test_merged_logits_equal_peft(kind, tiny_model_dir, lora_adapter, tmp_path):
    adapter = (
        lora_adapter
        if kind == "lora"
        else make_adapter(tiny_model_dir, tmp_path / "adapter", dora=kind == "dora", rslora=kind == "rslora")
    )
    out = tmp_path / "merged"
    assert run(adapter, "--out", out, "--dtype", "fp32", "--verify", "--tolerance", TIGHT) == 0
    prompts = prompt_ids(AutoTokenizer.from_pretrained(out))
    reference = peft_logits(tiny_model_dir, adapter, prompts)
    assert max_diff(merged_logits(out, prompts), reference) < TIGHT
    base_only = compute_logits(AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval(), prompts)
    assert max_diff(base_only, reference) > 100 * TIGHT  # the adapter really changes the model
    record = json.loads((out / "merge.json").read_text())
    assert record["verify"]["passed"] and record["verify"]["max_abs_diff"] < TIGHT
    assert record["adapters"][0]["kind"] == kind


def test_merged_output_is_a_plain_model(lora_adapter, tmp_path, capsys):
    out = tmp_path / "merged"
    assert run(lora_adapter, "--out", out, "--max-shard-size", "200KB") == 0
    config = json.loads((out / "config.json").read_text())
    assert "quantization_config" not in config
    assert config["dtype"] == "float32"  # --dtype auto keeps the base's precision (the tiny base is fp32)
    assert not list(out.glob("adapter_*"))
    shards = sorted(out.glob("model-*.safetensors"))
    assert len(shards) > 1 and (out / "model.safetensors.index.json").is_file()
    assert (out / "generation_config.json").is_file()
    assert AutoTokenizer.from_pretrained(out).chat_template == "{{ messages }}"
    model = AutoModelForCausalLM.from_pretrained(out)
    assert type(model).__name__ == "LlamaForCausalLM" and not hasattr(model, "peft_config")
    assert oct(out.stat().st_mode & 0o777) != oct(0o700)
    summary = capsys.readouterr().out
    assert "peak RSS" in summary and str(out) in summary


def test_bf16_output_within_default_tolerance(lora_adapter, tmp_path):
    out = tmp_path / "merged"
    assert run(lora_adapter, "--out", out, "--dtype", "bf16", "--verify") == 0
    record = json.loads((out / "merge.json").read_text())
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"
    assert 0 < record["verify"]["max_abs_diff"] <= record["verify"]["tolerance"]


def test_added_tokens_are_merged(tiny_model_dir, tmp_path):
    adapter = make_adapter(tiny_model_dir, tmp_path / "adapter", new_token=True)
    out = tmp_path / "merged"
    assert run(adapter, "--out", out, "--dtype", "fp32", "--verify", "--tolerance", TIGHT) == 0
    tokenizer = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.get_input_embeddings().weight.shape[0] == len(tokenizer)
    prompts = [tokenizer("x = 1 <new_fim_token> y")["input_ids"]]
    assert max_diff(merged_logits(out, prompts), peft_logits(tiny_model_dir, adapter, prompts)) < TIGHT


def test_qlora_merged_into_dequantized_base(tiny_model_dir, tmp_path):
    adapter = make_adapter(tiny_model_dir, tmp_path / "adapter", qlora=True)
    faithful, original = tmp_path / "faithful", tmp_path / "original"
    assert run(adapter, "--out", faithful, "--dtype", "fp32", "--verify", "--tolerance", QLORA_TOL) == 0
    # merging onto the full-precision weights is not what was trained: --verify says so with exit status 1
    assert run(adapter, "--out", original, "--dtype", "fp32", "--qlora-base", "original", "--verify") == 1
    prompts = prompt_ids(AutoTokenizer.from_pretrained(faithful))
    reference = peft_logits(tiny_model_dir, adapter, prompts, qlora=True)
    faithful_diff = max_diff(merged_logits(faithful, prompts), reference)
    original_diff = max_diff(merged_logits(original, prompts), reference)
    assert faithful_diff < QLORA_TOL
    assert original_diff > 100 * faithful_diff, (faithful_diff, original_diff)
    print(
        f"QLoRA merge, max |logit diff| vs 4-bit base + adapter: dequantized {faithful_diff:.3g}, "
        f"original {original_diff:.3g}"
    )
    assert "quantization_config" not in json.loads((faithful / "config.json").read_text())


@pytest.mark.gpu
def test_qlora_merge_on_gpu(tiny_model_dir, tmp_path):
    """On CUDA: the adapter is made on a GPU-quantized base and merged there (`--device cuda`), bf16 output."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    adapter = make_adapter(tiny_model_dir, tmp_path / "adapter", qlora=True, device="cuda")
    faithful, original = tmp_path / "faithful", tmp_path / "original"
    assert run(adapter, "--out", faithful, "--device", "cuda", "--dtype", "fp32", "--verify", "--tolerance", 1e-3) == 0
    assert run(adapter, "--out", original, "--device", "cuda", "--qlora-base", "original", "--dtype", "fp32") == 0
    prompts = prompt_ids(AutoTokenizer.from_pretrained(faithful))
    reference = peft_logits(tiny_model_dir, adapter, prompts, qlora=True, device="cuda")
    faithful_diff = max_diff(merged_logits(faithful, prompts, "cuda"), reference)
    assert faithful_diff < 1e-3
    assert max_diff(merged_logits(original, prompts, "cuda"), reference) > 100 * faithful_diff
    assert run(adapter, "--out", tmp_path / "bf16", "--device", "cuda", "--dtype", "bf16", "--verify") == 0


# ------------------------------------------------------------------------------------------------ combinations


@pytest.fixture(scope="module")
def two_adapters(tiny_model_dir: Path, tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("pair")
    return make_adapter(tiny_model_dir, root / "a", seed=1), make_adapter(tiny_model_dir, root / "b", seed=2)


@pytest.mark.parametrize("method", ["linear", "cat", "svd", "ties", "dare_linear", "dare_ties"])
def test_each_combination_gives_an_adapter_that_loads(method, tiny_model_dir, two_adapters, tmp_path):
    out = tmp_path / "combined"
    extra = ["--density", "0.7"] if method in ("ties", "dare_linear", "dare_ties") else []
    assert run(*two_adapters, "--method", method, "--weights", "0.6,0.4", *extra, "--out", out, "--verify") == 0
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(tiny_model_dir)
    assert config["r"] == (8 if method == "cat" else 4)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    model = PeftModel.from_pretrained(base, out)
    assert list(model.peft_config) == ["default"]
    assert json.loads((out / "merge.json").read_text())["verify"]["passed"]


def test_cat_with_one_weight_reproduces_that_adapter(tiny_model_dir, tmp_path):
    """An independent check of the combination (rsLoRA: PEFT's combined config would rescale it by sqrt(r))."""
    a = make_adapter(tiny_model_dir, tmp_path / "a", seed=1, rslora=True)
    b = make_adapter(tiny_model_dir, tmp_path / "b", seed=2, r=8, rslora=True)
    out = tmp_path / "merged"
    assert run(a, b, "--method", "cat", "--weights", "1,0", "--into-base", "--dtype", "fp32", "--out", out) == 0
    prompts = prompt_ids(AutoTokenizer.from_pretrained(out))
    assert max_diff(merged_logits(out, prompts), peft_logits(tiny_model_dir, a, prompts)) < TIGHT


def test_combination_into_base_matches_weighted_adapter(two_adapters, tmp_path):
    out = tmp_path / "merged"
    args = ["--method", "ties", "--density", "0.5", "--into-base", "--dtype", "fp32", "--tolerance", TIGHT]
    assert run(*two_adapters, *args, "--out", out, "--verify") == 0
    assert (out / "config.json").is_file() and not (out / "adapter_config.json").exists()


# ------------------------------------------------------------------------------------------------ bad input


def test_missing_adapter_config(tmp_path, capsys):
    (tmp_path / "not-an-adapter").mkdir()
    assert run(tmp_path / "not-an-adapter", "--out", tmp_path / "out") == 2
    one_line_error(capsys, "adapter_config.json")


def test_adapter_for_another_base(tmp_path, lora_adapter, bpe_tokenizer, capsys):
    other = tmp_path / "other-base"
    build_tiny_model(bpe_tokenizer("starcoder"), hidden_size=32, num_layers=2).save_pretrained(other)
    capsys.readouterr()
    assert run(lora_adapter, "--base", other, "--out", tmp_path / "out") == 2
    one_line_error(capsys, "does not fit base", "--base")
    assert not (tmp_path / "out").exists()


def test_output_exists_and_force(lora_adapter, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    assert run(lora_adapter, "--out", out) == 2
    one_line_error(capsys, "already exists", "--force")
    assert (out / "keep.txt").is_file()
    assert run(lora_adapter, "--out", out, "--force") == 0
    assert not (out / "keep.txt").exists() and (out / "config.json").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temporary or old directories left behind


def test_empty_output_dir_is_fine(lora_adapter, tmp_path):
    (tmp_path / "out").mkdir()
    assert run(lora_adapter, "--out", tmp_path / "out") == 0


def test_base_not_found_offline(lora_adapter, tmp_path, capsys):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    for f in ("adapter_model.safetensors", "adapter_config.json"):
        (adapter / f).write_bytes((lora_adapter / f).read_bytes())
    config = json.loads((adapter / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = "no-such-org/no-such-model-7b"
    (adapter / "adapter_config.json").write_text(json.dumps(config))
    assert run(adapter, "--out", tmp_path / "out") == 2
    one_line_error(capsys, "no-such-org/no-such-model-7b", "offline", "--base")
    assert run(lora_adapter, "--base", tmp_path / "missing", "--out", tmp_path / "out") == 2
    one_line_error(capsys, "not found", "--base")


def test_combining_adapters_of_different_bases(tmp_path, lora_adapter, sp_model_dir, capsys):
    other = make_adapter(sp_model_dir, tmp_path / "other")
    capsys.readouterr()
    assert run(lora_adapter, other, "--out", tmp_path / "out") == 2
    one_line_error(capsys, "different bases")


def test_unequal_ranks_for_linear(tiny_model_dir, lora_adapter, tmp_path, capsys):
    wide = make_adapter(tiny_model_dir, tmp_path / "wide", r=8)
    capsys.readouterr()
    assert run(lora_adapter, wide, "--method", "linear", "--out", tmp_path / "out") == 2
    one_line_error(capsys, "equal rank", "cat or svd")


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--method", "linear", "--density", "0.5"], "--density applies to"),
        (["--weights", "0.5"], "one weight per adapter"),
        (["--weights", "a,b"], "comma-separated"),
        (["--method", "ties", "--density", "1.5"], "--density: '1.5' must be"),
    ],
)
def test_bad_combination_options(two_adapters, tmp_path, capsys, extra, expected):
    assert run(*two_adapters, *extra, "--out", tmp_path / "out") == 2
    one_line_error(capsys, expected)


def test_options_that_need_several_adapters(lora_adapter, tmp_path, capsys):
    assert run(lora_adapter, "--method", "ties", "--out", tmp_path / "out") == 2
    one_line_error(capsys, "--method")


def test_out_must_not_be_an_input(lora_adapter, capsys):
    assert run(lora_adapter, "--out", lora_adapter, "--force") == 2
    one_line_error(capsys, "would overwrite the input")


def test_failure_leaves_nothing_behind(lora_adapter, tmp_path, monkeypatch):
    import finetune.merge.run as merge_run

    def broken(plan, steps, directory):
        (directory / "half-written").write_text("x")
        raise RuntimeError("disk full")

    monkeypatch.setattr(merge_run, "write_output", broken)
    with pytest.raises(RuntimeError):
        run(lora_adapter, "--out", tmp_path / "out")
    assert list(tmp_path.iterdir()) == []
