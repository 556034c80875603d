"""`finetune complete` and batched generation: left padding changes nothing, text decodes exactly, bad input is one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from finetune.cli.complete import split_at_cursor
from finetune.cli.main import main
from finetune.data.tokenize.encoder import SampleEncoder
from finetune.inference.complete import Sampling, _finish, generate, load_completer

CODE = "def add(a, b):\n    return a + b\n\n\ndef sub(a, b):\n    return a - b\n"


def test_batched_generation_equals_one_at_a_time(tiny_model_dir: Path) -> None:
    completer = load_completer(str(tiny_model_dir))
    cuts = [3, 20, 35, 50]  # prompts of different lengths: the batch is left-padded
    prompts = [completer.prompt_ids(CODE[:i], CODE[i:], "m.py", "python") for i in cuts]
    assert len({len(p) for p in prompts}) > 1
    batched, stats = generate(completer, prompts, Sampling(max_new_tokens=8), batch_size=4)
    alone = [generate(completer, [p], Sampling(max_new_tokens=8))[0][0] for p in prompts]
    assert [g.ids for g in batched] == [g.ids for g in alone]
    assert stats.batches == 1 and stats.new_tokens > 0 and stats.tokens_per_second > 0


def test_generation_stops_at_fim_tokens(tiny_model_dir: Path) -> None:
    completer = load_completer(str(tiny_model_dir))
    enc = completer.encoder
    text_ids = enc.pieces.continuation("x = 1")
    for stop in (enc.eos_id, enc.prefix_id, enc.suffix_id, enc.middle_id):
        generation, used = _finish(completer, [*text_ids, stop, *text_ids], set(enc.stop_token_ids))
        assert generation.ids == text_ids and generation.stopped and used == len(text_ids) + 1
        assert generation.text == "x = 1"
    generation, _ = _finish(completer, text_ids, set(enc.stop_token_ids))
    assert not generation.stopped


@pytest.mark.parametrize("kind", ["bpe", "sp"])
def test_decode_keeps_leading_spaces(kind: str, bpe_tokenizer, sp_tokenizer) -> None:
    tokenizer = bpe_tokenizer("starcoder") if kind == "bpe" else sp_tokenizer("aixcoder")
    encoder = SampleEncoder(tokenizer, "starcoder" if kind == "bpe" else "aixcoder")
    for text in [" b)\n", "    return x\n", "x = 1", "  # café 🚀\n\tend"]:
        assert encoder.pieces.decode_continuation(encoder.pieces.continuation(text)) == text


def test_split_at_cursor() -> None:
    assert split_at_cursor("ab\ncd\n", "2:2") == ("ab\nc", "d\n")
    assert split_at_cursor("ab\ncd\n", "1:3") == ("ab", "\ncd\n")
    assert split_at_cursor("ab\ncd\n", "3:1") == ("ab\ncd\n", "")


def test_complete_cli_uses_the_family_format(sp_model_dir: Path, tmp_path: Path, capsys) -> None:
    source = tmp_path / "m.py"
    source.write_text(CODE)
    code = main(["complete", "--model", str(sp_model_dir), "--file", str(source), "--cursor", "2:5",
                 "--max-new-tokens", "3"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 0
    assert "[aixcoder, SPM]" in err and "new tokens" in err and "tokens/s" in err
    code = main(["complete", "--model", str(sp_model_dir), "--file", str(source), "--cursor", "2:5", "--order", "psm",
                 "--max-new-tokens", "2", "--temperature", "0.8", "--seed", "1"])  # fmt: skip
    assert code == 0 and "[aixcoder, PSM]" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--cursor", "99:1"], "line 99 is outside the file"),
        (["--cursor", "1:80"], "column 80 is outside line 1"),
        (["--cursor", "x"], "is not LINE:COL"),
        (["--cursor", "1:1", "--family", "codellama"], "has no codellama FIM tokens"),
    ],
)
def test_complete_bad_input_is_one_line(args, message, tiny_model_dir: Path, tmp_path: Path, capsys) -> None:
    source = tmp_path / "m.py"
    source.write_text(CODE)
    assert main(["complete", "--model", str(tiny_model_dir), "--file", str(source), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.startswith("error: ") and err.count("\n") == 1


@pytest.mark.gpu
def test_batched_generation_on_gpu(tiny_model_dir: Path) -> None:
    """On CUDA the model loads on the GPU and left-padded batches still match one-at-a-time generation."""
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    completer = load_completer(str(tiny_model_dir), dtype="fp32")
    assert completer.device.type == "cuda"
    prompts = [completer.prompt_ids(CODE[:i], CODE[i:], "m.py", "python") for i in (3, 20, 35, 50)]
    batched, stats = generate(completer, prompts, Sampling(max_new_tokens=16), batch_size=4)
    alone = [generate(completer, [p], Sampling(max_new_tokens=16))[0][0] for p in prompts]
    assert [g.ids for g in batched] == [g.ids for g in alone] and stats.tokens_per_second > 0


def test_long_files_keep_the_lines_nearest_the_cursor(tiny_model_dir: Path, tmp_path: Path, capsys) -> None:
    source = tmp_path / "long.py"
    lines = [f"value_{i} = {i}\n" for i in range(400)]
    source.write_text("".join(lines))
    code = main(["complete", "--model", str(tiny_model_dir), "--file", str(source), "--cursor", "200:1",
                 "--max-new-tokens", "4", "--context-tokens", "120"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 0, err
    assert "context trimmed to fit 120 tokens" in err
    prompt_tokens = int(err.split("] ")[1].split(" prompt tokens")[0])
    assert 60 < prompt_tokens <= 120  # trimmed to the budget, not to nothing
    kept, total = (int(x) for x in err.split("tokens: ")[1].split(" lines before")[0].split(" of "))
    assert 0 < kept < total == 199
    kept_after, total_after = (int(x) for x in err.split("cursor, ")[1].split(" after")[0].split(" of "))
    assert 0 < kept_after < total_after == 201
