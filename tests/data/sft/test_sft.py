"""Instruction data: shapes, templates, exact loss masks, truncation, decontamination, mixtures, `data sft`."""

from __future__ import annotations

import copy
import json
from collections import Counter
from pathlib import Path

import pytest

from finetune.cli.main import main
from finetune.data.sft.chat import (
    AIXCODER_TOKENS,
    CHATML_TOKENS,
    TEMPLATES,
    ChatEncoder,
    resolve_template,
    setup_chat_tokenizer,
)
from finetune.data.sft.decontam import Decontaminator, ngrams
from finetune.data.sft.mixture import repeat_counts, select_documents
from finetune.data.sft.records import Conversation, InstructionFile, load_conversations
from finetune.data.tokenize.pieces import PieceEncoder
from finetune.data.types import IGNORE_INDEX, Document
from finetune.errors import UserError

DATA = Path(__file__).resolve().parents[3] / "data"

MULTI = Conversation(
    (
        ("system", "Answer with code."),
        ("user", "Write add"),
        ("assistant", "def add(a, b):\n    return a + b\n"),
        ("user", "Now subtract, s'il vous plaît"),
        ("assistant", "def sub(a, b):\n    return a - b  # différence ✨"),
    ),
    "test:1",
    "messages",
)


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n" for r in rows))
    return path


# ------------------------------------------------------------------------------------------------------- shapes


def test_every_shape_is_detected_and_becomes_turns(tmp_path: Path) -> None:
    rows = [
        {"instruction": "Say hi", "output": "hi"},
        {"instruction": "Add", "input": "1 + 2", "output": "3"},
        {"instruction": "Quote", "input": "", "output": "ok"},
        {"prompt": "def f():\n", "completion": "    return 1\n"},
        {"conversations": [{"from": "system", "value": "S"}, {"from": "human", "value": "Q"},
                           {"from": "gpt", "value": "A"}]},
        {"messages": [{"role": "user", "content": "Q1"}, {"role": "assistant", "content": "A1"},
                      {"role": "user", "content": "Q2"}, {"role": "assistant", "content": "A2"}]},
    ]
    convs, report = load_conversations(InstructionFile(str(write_jsonl(tmp_path / "d.jsonl", rows))))
    assert [c.shape for c in convs] == ["evol", "alpaca", "alpaca", "prompt-completion", "sharegpt", "messages"]
    assert convs[0].turns == (("user", "Say hi"), ("assistant", "hi"))
    assert convs[1].turns == (("user", "Add\n\n1 + 2"), ("assistant", "3"))
    assert convs[2].turns == (("user", "Quote"), ("assistant", "ok"))
    assert convs[3].turns == (("user", "def f():\n"), ("assistant", "    return 1\n"))
    assert convs[4].turns == (("system", "S"), ("user", "Q"), ("assistant", "A"))
    assert [r for r, _ in convs[5].turns] == ["user", "assistant", "user", "assistant"]
    assert convs[5].source == "d.jsonl:line 6" and report.records_kept == 6 and not report.skipped


def test_json_parquet_and_dataset_folders_read_like_jsonl(tmp_path: Path) -> None:
    import datasets

    rows = [{"instruction": f"task {i}", "output": f"answer {i}"} for i in range(3)]
    (tmp_path / "a.json").write_text(json.dumps(rows))
    (tmp_path / "wrapped.json").write_text(json.dumps({"data": rows}))
    datasets.Dataset.from_list(rows).to_parquet(str(tmp_path / "a.parquet"))
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "ds"))
    for name, where in [("a.json", "record 3"), ("wrapped.json", "record 3"), ("a.parquet", "row 3"), ("ds", "row 3")]:
        convs, _ = load_conversations(InstructionFile(str(tmp_path / name)))
        assert [c.turns[1][1] for c in convs] == ["answer 0", "answer 1", "answer 2"], name
        assert convs[-1].source.endswith(where), name


def test_column_mapping_and_forced_format(tmp_path: Path) -> None:
    rows = [{"question": "Why?", "answer": "Because.", "context": "x"}]
    path = write_jsonl(tmp_path / "q.jsonl", rows)
    spec = InstructionFile(str(path), columns={"instruction": "question", "output": "answer"})
    convs, _ = load_conversations(spec)
    assert convs[0].shape == "evol" and convs[0].turns[1] == ("assistant", "Because.")
    alpaca = InstructionFile(str(path), "alpaca", {"instruction": "question", "input": "context", "output": "answer"})
    assert load_conversations(alpaca)[0][0].turns[0] == ("user", "Why?\n\nx")
    chat = write_jsonl(tmp_path / "c.jsonl", [{"dialog": [{"speaker": "user", "text": "hi"},
                                                         {"speaker": "assistant", "text": "yo"}]}])
    spec = InstructionFile(str(chat), "messages", {"messages": "dialog", "role": "speaker", "content": "text"})
    assert load_conversations(spec)[0][0].turns == (("user", "hi"), ("assistant", "yo"))


def test_bad_records_are_counted_with_line_numbers_or_fail(tmp_path: Path) -> None:
    rows = [
        {"instruction": "ok", "output": "fine"},
        "{not json",
        {"instruction": "empty answer", "output": "  "},
        {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                      {"role": "user", "content": "dangling"}]},
        {"colour": "blue"},
        {"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]},
        [1, 2],
        {"conversations": [{"from": "tool", "value": "x"}]},
    ]
    path = write_jsonl(tmp_path / "bad.jsonl", rows)
    convs, report = load_conversations(InstructionFile(str(path)))
    assert len(convs) == 1 and report.records_seen == 8
    assert report.examples == {
        "bad_json": ["line 2"],
        "empty_response": ["line 3"],
        "ends_with_user": ["line 4"],
        "no_shape": ["line 5"],
        "roles_not_alternating": ["line 6"],
        "not_an_object": ["line 7"],
        "unknown_role": ["line 8"],
    }
    assert "bad_json 1 (line 2)" in " ".join(report.lines())
    with pytest.raises(UserError, match=r"bad\.jsonl line 2: not valid JSON .*on_bad_line: skip"):
        load_conversations(InstructionFile(str(path), on_bad_line="fail"))


def test_file_level_errors_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="not found"):
        load_conversations(InstructionFile(str(tmp_path / "missing.jsonl")))
    nothing = write_jsonl(tmp_path / "n.jsonl", [{"title": "a", "body": "b"}])
    with pytest.raises(UserError, match="no record fits a known shape.*columns are body, title"):
        load_conversations(InstructionFile(str(nothing)))
    good = write_jsonl(tmp_path / "g.jsonl", [{"instruction": "a", "output": "b"}])
    with pytest.raises(UserError, match="maps output to 'answer', but no record has that column"):
        load_conversations(InstructionFile(str(good), columns={"output": "answer"}))
    with pytest.raises(UserError, match="unknown key 'outptu'"):
        load_conversations(InstructionFile(str(good), columns={"outptu": "x"}))
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(UserError, match="has no records"):
        load_conversations(InstructionFile(str(tmp_path / "empty.jsonl")))
    empties = write_jsonl(tmp_path / "e.jsonl", [{"instruction": "a", "output": ""}])
    with pytest.raises(UserError, match="no usable record .*empty_response 1"):
        load_conversations(InstructionFile(str(empties)))


def test_shipped_instruction_data_is_varied_and_clean() -> None:
    convs, report = load_conversations(InstructionFile(str(DATA / "instructions.jsonl"), on_bad_line="fail"))
    assert 30 <= len(convs) <= 60 and set(report.shapes) == {"evol", "alpaca", "prompt-completion", "sharegpt",
                                                             "messages"}
    assert sum(len(c.turns) > 3 for c in convs) >= 4  # multi-turn
    assert sum(any(ord(ch) > 127 for ch in c.text) for c in convs) >= 4  # non-ASCII


# ---------------------------------------------------------------------------------------------------- templates


def chat_tokenizer(factory, family: str):
    tokenizer = copy.deepcopy(factory(family))
    from tokenizers import AddedToken

    tokenizer.add_tokens([AddedToken(t, special=True, normalized=False) for t in AIXCODER_TOKENS + CHATML_TOKENS],
                         special_tokens=True)
    return tokenizer


def expected_row(tokenizer, parts: list[tuple[str, str]]) -> tuple[list[int], list[int]]:
    """ids/labels from parts: ("special", token), ("text", prompt text), ("loss", response text), ("end", token)."""
    pieces = PieceEncoder(tokenizer)
    ids: list[int] = []
    labels: list[int] = []
    for kind, value in parts:
        if kind in ("special", "end"):
            new = [tokenizer.convert_tokens_to_ids(value)]
        else:  # text follows a special token or starts the string: no dummy-prefix `▁` either way here
            new = pieces.continuation(value) if ids else pieces.raw(value)
        ids += new
        labels += new if kind in ("loss", "end") else [IGNORE_INDEX] * len(new)
    return ids, labels


def encoder_for(tokenizer, name: str, system: str | None = None) -> ChatEncoder:
    setup_chat_tokenizer(tokenizer, TEMPLATES[name], system, add_tokens=False)
    return ChatEncoder(tokenizer, tokenizer.chat_template, name)


@pytest.mark.parametrize("kind", ["bpe", "sp"])
def test_aixcoder_template_masks_exactly(kind: str, bpe_tokenizer, sp_tokenizer) -> None:
    tokenizer = chat_tokenizer(bpe_tokenizer if kind == "bpe" else sp_tokenizer, "aixcoder")
    row = encoder_for(tokenizer, "aixcoder").encode(MULTI)
    assert row.text == (
        "<s>▁<AIX-SYSTEM>Answer with code.▁<AIX-END-TURN>▁<AIX-USER>Write add▁<AIX-END-TURN>▁<AIX-ASSISTANT>"
        "def add(a, b):\n    return a + b\n▁<AIX-END-TURN>▁<AIX-USER>Now subtract, s'il vous plaît▁<AIX-END-TURN>"
        "▁<AIX-ASSISTANT>def sub(a, b):\n    return a - b  # différence ✨▁<AIX-END-TURN>"
    )
    ids, labels = expected_row(tokenizer, [
        ("special", "<s>"), ("special", "▁<AIX-SYSTEM>"), ("text", "Answer with code."), ("special", "▁<AIX-END-TURN>"),
        ("special", "▁<AIX-USER>"), ("text", "Write add"), ("special", "▁<AIX-END-TURN>"),
        ("special", "▁<AIX-ASSISTANT>"), ("loss", "def add(a, b):\n    return a + b\n"), ("end", "▁<AIX-END-TURN>"),
        ("special", "▁<AIX-USER>"), ("text", "Now subtract, s'il vous plaît"), ("special", "▁<AIX-END-TURN>"),
        ("special", "▁<AIX-ASSISTANT>"), ("loss", "def sub(a, b):\n    return a - b  # différence ✨"),
        ("end", "▁<AIX-END-TURN>"),
    ])
    assert row.input_ids == ids and row.labels == labels


def test_chatml_template_masks_exactly_with_a_default_system_prompt(bpe_tokenizer) -> None:
    tokenizer = chat_tokenizer(bpe_tokenizer, "qwen")
    conv = Conversation(MULTI.turns[1:], "t", "messages")  # no system turn: the default one is used
    row = encoder_for(tokenizer, "chatml", system="Sois bref ✨ \"quoted\"").encode(conv)
    assert row.text.startswith('<|im_start|>system\nSois bref ✨ "quoted"<|im_end|>\n<|im_start|>user\nWrite add')
    ids, labels = expected_row(tokenizer, [
        ("special", "<|im_start|>"), ("text", 'system\nSois bref ✨ "quoted"'), ("special", "<|im_end|>"),
        ("text", "\n"), ("special", "<|im_start|>"), ("text", "user\nWrite add"), ("special", "<|im_end|>"),
        ("text", "\n"), ("special", "<|im_start|>"), ("text", "assistant\n"),
        ("loss", "def add(a, b):\n    return a + b\n"), ("end", "<|im_end|>"),
        ("text", "\n"), ("special", "<|im_start|>"), ("text", "user\nNow subtract, s'il vous plaît"),
        ("special", "<|im_end|>"), ("text", "\n"), ("special", "<|im_start|>"), ("text", "assistant\n"),
        ("loss", "def sub(a, b):\n    return a - b  # différence ✨"), ("end", "<|im_end|>"), ("text", "\n"),
    ])
    assert row.input_ids == ids and row.labels == labels


@pytest.mark.parametrize("kind", ["bpe", "sp"])
def test_alpaca_and_plain_templates_mask_exactly(kind: str, bpe_tokenizer, sp_tokenizer) -> None:
    tokenizer = chat_tokenizer(bpe_tokenizer if kind == "bpe" else sp_tokenizer, "aixcoder")
    bos, eos = tokenizer.bos_token, tokenizer.eos_token
    row = encoder_for(tokenizer, "alpaca").encode(MULTI)
    ids, labels = expected_row(tokenizer, [
        ("special", bos), ("text", "Answer with code.\n\n### Instruction:\nWrite add\n\n### Response:\n"),
        ("loss", "def add(a, b):\n    return a + b\n"), ("end", eos),
        ("text", "\n\n### Instruction:\nNow subtract, s'il vous plaît\n\n### Response:\n"),
        ("loss", "def sub(a, b):\n    return a - b  # différence ✨"), ("end", eos), ("text", "\n\n"),
    ])
    assert row.input_ids == ids and row.labels == labels
    prompt_completion = Conversation((("user", "# add two numbers\ndef add(a, b):\n"), ("assistant", "    return a + b\n")),
                                     "t", "prompt-completion")
    plain = encoder_for(copy.deepcopy(tokenizer), "plain").encode(prompt_completion)
    ids, labels = expected_row(tokenizer, [
        ("special", bos), ("text", "# add two numbers\ndef add(a, b):\n"), ("loss", "    return a + b\n"), ("end", eos),
    ])
    assert plain.text == f"{bos}# add two numbers\ndef add(a, b):\n    return a + b\n{eos}"
    assert plain.input_ids == ids and plain.labels == labels


def test_the_tokenizers_own_template_is_used_and_masked(bpe_tokenizer) -> None:
    tokenizer = chat_tokenizer(bpe_tokenizer, "starcoder")
    tokenizer.chat_template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}: {{ m['content'] }}"
        "{% if m['role'] == 'assistant' %}{{ eos_token }}{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant: {% endif %}"
    )
    template = resolve_template(tokenizer, "auto", None, "starcoder")
    assert template.name == "tokenizer" and template.source == tokenizer.chat_template
    assert resolve_template(tokenizer, "alpaca").name == "alpaca"  # an explicit name wins
    encoder = ChatEncoder(tokenizer, template.source, template.name)
    row = encoder.encode(Conversation((("user", "Hi"), ("assistant", "Hello there")), "t", "messages"))
    ids, labels = expected_row(tokenizer, [
        ("special", "<|im_start|>"), ("text", "user: Hi"), ("special", "<|im_start|>"), ("text", "assistant: "),
        ("loss", "Hello there"), ("end", tokenizer.eos_token),
    ])
    assert row.input_ids == ids and row.labels == labels


def test_template_resolution_defaults_custom_jinja_and_bad_templates(bpe_tokenizer, tmp_path: Path) -> None:
    bare = copy.deepcopy(bpe_tokenizer("starcoder"))
    assert resolve_template(bare, "auto", None, "aixcoder").name == "aixcoder"
    assert resolve_template(bare, "auto", None, "starcoder").name == "chatml"
    with pytest.raises(UserError, match="lacks the chatml template's tokens <\\|im_start\\|>, <\\|im_end\\|>"):
        setup_chat_tokenizer(bare, TEMPLATES["chatml"], None, add_tokens=False)
    size = len(bare)
    assert setup_chat_tokenizer(bare, TEMPLATES["chatml"], None, add_tokens=True) == 2 and len(bare) == size + 2
    file = tmp_path / "t.jinja"
    file.write_text("{% for m in messages %}{{ m['content'] }}\n{% if m['role'] == 'assistant' %}{{ eos_token }}"
                    "{% endif %}{% endfor %}")
    custom = resolve_template(bare, "chatml", str(file))
    assert custom.name == "custom" and "eos_token" in custom.source
    ChatEncoder(bare, custom.source, "custom")
    with pytest.raises(UserError, match="puts no end-of-turn or EOS token after an assistant message"):
        ChatEncoder(bare, "{% for m in messages %}{{ m['content'] }}\n{% endfor %}", "custom")
    with pytest.raises(UserError, match="not prefix-stable"):
        ChatEncoder(bare, "{{ messages|length }}{% for m in messages %}{{ m['content'] }}{{ eos_token }}{% endfor %}")
    with pytest.raises(UserError, match="neither Jinja text nor an existing file"):
        resolve_template(bare, "auto", "missing.jinja")


def test_long_samples_lose_prompt_first_and_unlearnable_ones_are_dropped(bpe_tokenizer) -> None:
    tokenizer = chat_tokenizer(bpe_tokenizer, "aixcoder")
    encoder = encoder_for(tokenizer, "aixcoder")
    long_prompt = "Please explain carefully " * 40 + "then write add"
    conv = Conversation((("user", long_prompt), ("assistant", "def add(a, b):\n    return a + b\n")), "t", "evol")
    full = encoder.encode(conv)
    response = [i for i, label in zip(full.input_ids, full.labels, strict=True) if label != IGNORE_INDEX]
    row = encoder.encode(conv, max_length=40)
    assert row.note == "prompt_truncated" and len(row.input_ids) <= 40
    assert [i for i, label in zip(row.input_ids, row.labels, strict=True) if label != IGNORE_INDEX] == response
    assert row.text.startswith("<s>▁<AIX-USER>Please explain") and "then write add" not in row.text
    stats: Counter[str] = Counter()
    assert encoder.encode_counted(conv, 4, stats) is None and stats["chat_dropped_no_loss"] == 1
    barely = encoder.encode_counted(conv, 5, stats)  # empty prompt + template tokens + one response token
    assert barely is not None and barely.labels[-1] != IGNORE_INDEX and stats["chat_response_truncated"] == 1
    cut = encoder.encode(conv, max_length=len(full.input_ids) - len(response) + 3)
    assert cut.note in ("prompt_truncated", "response_truncated") and len(cut.input_ids) <= len(full.input_ids)


# -------------------------------------------------------------------------------------------- decontamination


def test_decontamination_finds_a_pasted_benchmark_prompt_only() -> None:
    prompt = 'def below_threshold(values: list, limit: int):\n    """Return True if every number in values is below limit."""\n'
    checker = Decontaminator([prompt, "def unrelated_helper(x):\n    return x\n"], n=5, threshold=0.5)
    planted = "Complete this function, and explain it:\n\n" + prompt.replace("    ", "\t") + "\nThanks! " * 30
    assert checker.contaminated(planted) and checker.overlap(planted) == 1.0
    assert not checker.contaminated("def add(a, b):\n    return a + b  # values below limit")
    assert ngrams("a b", 5) == {("a", "b")} and ngrams("", 3) == set()


# ------------------------------------------------------------------------------------------------------ mixtures


def test_repeat_counts_and_document_selection_are_deterministic() -> None:
    keys = [f"k{i}" for i in range(10)]
    assert sum(repeat_counts(keys, 2.5)) == 25 and set(repeat_counts(keys, 2.5)) == {2, 3}
    assert repeat_counts(keys, samples=4) == repeat_counts(keys, samples=4) and sum(repeat_counts(keys, samples=4)) == 4
    assert sum(repeat_counts(keys, samples=23)) == 23 and repeat_counts([], 3.0) == []
    assert repeat_counts(keys, 0.0) == [0] * 10

    class Source:
        path, weight, samples = "repo", 0.5, None

    docs = [Document(f"f{i}.py", "python", "x\n") for i in range(8)]
    half = select_documents(docs, Source())
    assert len(half) == 4 and half == select_documents(list(docs), Source())
    Source.weight, Source.samples = 1.0, 20
    assert select_documents(docs, Source()) == docs  # a cap, never repeats of a file


# ------------------------------------------------------------------------------------------------------- data sft


def test_data_sft_writes_one_line_per_record_in_order(tmp_path: Path, tiny_model_dir: Path, capsys) -> None:
    rows = [
        {"instruction": "Say hi", "output": "hi"},
        "{broken",
        {"messages": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A ✓"}]},
        {"instruction": "no answer", "output": ""},
    ]
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.jsonl"
    code = main(["data", "sft", str(src), "--tokenizer", str(tiny_model_dir), "--template", "chatml", "--out", str(out)])
    assert code == 0
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["source"] for line in lines] == ["line 1", "line 2", "line 3", "line 4"]
    assert [line.get("skipped") for line in lines] == [None, "bad_json", None, "empty_response"]
    first = lines[0]
    assert first["shape"] == "evol" and first["text"].startswith("<|im_start|>user\nSay hi<|im_end|>")
    assert len(first["input_ids"]) == len(first["labels"])
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    setup_chat_tokenizer(tokenizer, TEMPLATES["chatml"], None, add_tokens=True)
    labelled = [i for i, label in zip(first["input_ids"], first["labels"], strict=True) if label != IGNORE_INDEX]
    assert tokenizer.decode(labelled) == "hi<|im_end|>"
    assert "kept 2 of 4 records" in capsys.readouterr().out
    assert main(["data", "sft", str(tmp_path / "missing.jsonl"), "--tokenizer", str(tiny_model_dir),
                 "--out", str(out)]) == 2
    assert "not found" in capsys.readouterr().err


def test_template_tokens_already_in_the_vocabulary_become_single_ids_without_new_ids() -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {c: i for i, c in enumerate(sorted(set("abcdefghijklmnopqrstuvwxyz<|>_ \n")))}
    for token in (*CHATML_TOKENS, "</s>"):
        vocab[token] = len(vocab)  # ordinary vocabulary entries, as after a SentencePiece conversion
    backend = Tokenizer(models.WordLevel(vocab, unk_token="a"))
    backend.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="</s>")
    assert len(tokenizer("<|im_end|>", add_special_tokens=False)["input_ids"]) > 1
    assert setup_chat_tokenizer(tokenizer, TEMPLATES["chatml"], None, add_tokens=False) == 0
    assert tokenizer("<|im_end|>", add_special_tokens=False)["input_ids"] == [vocab["<|im_end|>"]]
    assert len(tokenizer) == len(vocab)
