"""`finetune chat` on the SFT quickstart's output: the prompt training built, streamed greedy answers, the loop."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest

from finetune.cli.main import main
from finetune.data.sft.chat import ChatEncoder
from finetune.data.types import IGNORE_INDEX, Conversation
from finetune.errors import UserError
from finetune.inference.chat import interact, load_chat
from finetune.inference.complete import Sampling

ROOT = Path(__file__).resolve().parents[2]
QUESTION = "Reverse a list in Python"


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Generation of a few tokens: one thread is 10x faster than two on a busy 2-core machine (no spinning)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def in_checkout(monkeypatch) -> None:
    monkeypatch.chdir(ROOT)  # the quickstart recipe (and the run's recipe.yaml) name the tiny model relative to it


@pytest.fixture(scope="module")
def sft_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The SFT quickstart (LoRA on data/tiny-coder, ChatML added), shrunk to one step."""
    out = tmp_path_factory.mktemp("chat") / "sft"
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(ROOT)
        code = main(["train", "recipes/quickstart-sft.yaml", f"output_dir={out}", "training.max_steps=1",
                     "data.max_length=128", "data.sources.0.samples=4", "data.sources.1.samples=1",
                     "data.packing=false", "data.eval_split=0", "training.batch_size=2",
                     "training.gradient_accumulation_steps=1"])  # fmt: skip
    assert code == 0 and (out / "adapter_config.json").is_file()
    return out


def _training_prompt(encoder: ChatEncoder, turns: tuple) -> list[int]:
    """The ids training put before the last answer of `turns` + an answer (the first id of its loss span)."""
    row = encoder.encode(Conversation((*turns, ("assistant", "x")), "test", "messages"))
    labelled = [i for i, label in enumerate(row.labels) if label != IGNORE_INDEX]
    last_span = max(i for i in labelled if i - 1 not in labelled)
    return row.input_ids[:last_span]


def test_prompts_are_the_ids_training_saw(sft_run: Path) -> None:
    chat = load_chat(None, str(sft_run))
    tokenizer = chat.completer.tokenizer
    encoder = ChatEncoder(tokenizer, tokenizer.chat_template)
    one = (("user", QUESTION),)
    two = (("user", "hi"), ("assistant", "Hello! How can I help?"), ("user", QUESTION))
    for turns in (one, two):
        chat.history = [{"role": r, "content": t} for r, t in turns[:-1]]
        assert chat.prompt_ids(chat.messages(QUESTION)) == _training_prompt(encoder, turns)
    assert "You are a helpful coding assistant." in tokenizer.decode(chat.prompt_ids(chat.messages(QUESTION)))
    assert chat.stop_ids == [tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.eos_token_id]


def _greedy_reference(sft_run: Path, message: str, max_new_tokens: int) -> str:
    """The answer computed without chat.py: training's prompt ids, plain generate, cut at <|im_end|>."""
    import torch

    from finetune.inference.complete import load_completer

    completer = load_completer(None, str(sft_run))
    tokenizer = completer.tokenizer
    prompt = _training_prompt(ChatEncoder(tokenizer, tokenizer.chat_template), (("user", message),))
    with torch.inference_mode():
        out = completer.model.generate(torch.tensor([prompt]), max_new_tokens=max_new_tokens, do_sample=False)
    new = out[0, len(prompt) :].tolist()
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    return tokenizer.decode(new[: new.index(end)] if end in new else new, skip_special_tokens=True)


def test_one_shot_and_piped_stdin_stream_the_greedy_answer(sft_run: Path, capsys, monkeypatch) -> None:
    expected = _greedy_reference(sft_run, QUESTION, 6)
    assert main(["chat", "--adapter", str(sft_run), "--message", QUESTION, "--max-new-tokens", "6"]) == 0
    out, err = capsys.readouterr()
    assert out == expected + "\n" and expected.strip()
    assert f"[{sft_run.name}]" in err and "prompt tokens, " in err and "tokens/s" in err
    monkeypatch.setattr(sys, "stdin", io.StringIO(QUESTION + "\n"))  # not a TTY: one message from standard input
    assert main(["chat", "--adapter", str(sft_run), "--max-new-tokens", "6"]) == 0
    assert capsys.readouterr().out == expected + "\n"


def test_prompt_loop_keeps_the_conversation_until_exit(sft_run: Path) -> None:
    chat = load_chat(None, str(sft_run))
    lines = iter(["hello", "   ", "and again", "/exit", "never read"])
    written: list[str] = []
    notes: list[str] = []
    interact(chat, Sampling(max_new_tokens=3), lambda _: next(lines), written.append, notes.append)
    assert next(lines) == "never read"  # /exit left the loop
    assert [m["role"] for m in chat.history] == ["user", "assistant", "user", "assistant"]
    assert [chat.history[0]["content"], chat.history[2]["content"]] == ["hello", "and again"]
    assert "".join(written) == chat.history[1]["content"] + "\n" + chat.history[3]["content"] + "\n"
    assert notes == [f"chatting with {sft_run.name}; /exit or Ctrl-D to leave"]

    def eof(_: str) -> str:
        raise EOFError  # Ctrl-D

    interact(chat, Sampling(max_new_tokens=3), eof, written.append, notes.append)
    assert written[-1] == "\n" and len(chat.history) == 4


def test_stop_token_ends_the_answer(sft_run: Path) -> None:
    chat = load_chat(None, str(sft_run))
    first = chat.reply(QUESTION, Sampling(max_new_tokens=4), lambda _: None)
    assert not first.stopped and len(first.ids) == 4  # one step of training has not taught it to stop yet
    chat.history, chat.stop_ids = [], [first.ids[1], *chat.stop_ids]  # pretend the second token ends the turn
    again = chat.reply(QUESTION, Sampling(max_new_tokens=4), lambda _: None)
    assert again.stopped and again.ids == first.ids[:1]


def test_old_turns_make_room_and_a_message_too_long_is_refused(sft_run: Path) -> None:
    chat = load_chat(None, str(sft_run))
    chat.completer.model.config.max_position_embeddings = 80
    chat.history = [{"role": "user", "content": "word " * 80}, {"role": "assistant", "content": "ok"}]
    reply = chat.reply("hi", Sampling(max_new_tokens=2), lambda _: None)
    assert reply.prompt_tokens < 80 and [m["content"] for m in chat.history] == ["hi", reply.text]
    with pytest.raises(UserError, match="but the model takes 80: shorten it"):
        chat.reply("word " * 100, Sampling(max_new_tokens=2), lambda _: None)


def test_model_without_chat_template_is_one_line_error(tiny_model_dir: Path, capsys, monkeypatch) -> None:
    assert main(["chat", "--model", str(tiny_model_dir), "--message", "hi"]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "has no chat template" in errors[0]
    monkeypatch.setattr(sys, "stdin", io.StringIO("  \n"))
    assert main(["chat", "--model", str(tiny_model_dir)]) == 2
    assert "nothing to say" in capsys.readouterr().err
