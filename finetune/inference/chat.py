"""Chat with an instruction-tuned (SFT) model in the chat template its training run saved.

An SFT run saves its template with the tokenizer (`chat_template.jinja`), so the prompt here is that template's
rendering with the generation prompt, tokenized as training tokenized it: the model is asked in exactly the layout
whose answers it learned. Generation stops at EOS or at the token that closes an assistant turn in that template,
found the way training found its loss spans (`ChatEncoder`), so any template the run could train with works.
The model is loaded by `load_completer`, so base, merged, adapter, QLoRA and full runs load as for `complete`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from finetune.data.sft.chat import ChatEncoder
from finetune.data.types import Conversation
from finetune.errors import UserError
from finetune.inference.complete import Completer, Sampling, load_completer

Write = Callable[[str], None]


@dataclass
class Reply:
    """One answer: its text, the ids generated (stop token excluded), the prompt size and the time it took."""

    text: str
    ids: list[int]
    stopped: bool
    prompt_tokens: int
    seconds: float

    @property
    def tokens_per_second(self) -> float:
        return len(self.ids) / self.seconds if self.seconds > 0 else 0.0


@dataclass
class Chat:
    """A conversation with one model: the messages so far, answered in the model's saved chat template."""

    completer: Completer
    stop_ids: list[int]
    system: str | None = None
    history: list[dict[str, str]] = field(default_factory=list)

    @property
    def label(self) -> str:
        return self.completer.label

    def messages(self, message: str) -> list[dict[str, str]]:
        head = [{"role": "system", "content": self.system}] if self.system else []
        return [*head, *self.history, {"role": "user", "content": message}]

    def prompt_ids(self, messages: list[dict[str, str]]) -> list[int]:
        """The ids training would give these messages, followed by the template's assistant header."""
        tokenizer = self.completer.tokenizer
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    def _fitting_prompt(self, message: str) -> list[int]:
        """The prompt, dropping the oldest exchanges until it leaves room for at least one new token."""
        limit = self.completer.max_positions
        while True:
            prompt = self.prompt_ids(self.messages(message))
            if limit is None or len(prompt) < limit:
                return prompt
            if not self.history:
                raise UserError(
                    f"the message needs {len(prompt)} prompt tokens but the model takes {limit}: shorten it"
                )
            self.history = self.history[2:]

    def reply(self, message: str, sampling: Sampling, write: Write) -> Reply:
        """Answer `message`, streaming the text to `write` as it is generated; the exchange joins the history."""
        import torch

        model, tokenizer = self.completer.model, self.completer.tokenizer
        prompt = self._fitting_prompt(message)
        room = sampling.max_new_tokens
        if self.completer.max_positions is not None:
            room = min(room, self.completer.max_positions - len(prompt))
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.stop_ids[0]
        input_ids = torch.tensor([prompt], dtype=torch.long, device=self.completer.device)
        began = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(
                input_ids=input_ids,
                attention_mask=torch.ones_like(input_ids),
                generation_config=sampling.config(self.stop_ids, pad_id, room),
                streamer=_streamer(tokenizer, write),
            )
        seconds = time.perf_counter() - began
        new = out[0, len(prompt) :].tolist()
        cut = next((i for i, token in enumerate(new) if token in self.stop_ids), None)
        ids = new if cut is None else new[:cut]
        text = tokenizer.decode(ids, skip_special_tokens=True)
        self.history += [{"role": "user", "content": message}, {"role": "assistant", "content": text}]
        return Reply(text, ids, cut is not None, len(prompt), seconds)


def _streamer(tokenizer: Any, write: Write):
    """A transformers TextStreamer that hands the answer's text to `write` (not print) as words complete."""
    from transformers import TextStreamer

    class Stream(TextStreamer):
        def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
            if text:
                write(text)

    return Stream(tokenizer, skip_prompt=True, skip_special_tokens=True)


def saved_template(tokenizer: Any, label: str) -> str:
    """The chat template stored with the model's tokenizer; a one-line error when there is none."""
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, dict):  # several named templates: the default one
        template = template.get("default")
    if not isinstance(template, str) or not template.strip():
        raise UserError(
            f"{label} has no chat template: chat with the output of an SFT run (a recipe with instruction sources "
            "saves data.sft.template with its tokenizer), or use `finetune complete` for code completion"
        )
    return template


def end_of_turn_ids(tokenizer: Any, template: str) -> list[int]:
    """EOS and the token that ends an assistant turn in `template` (what training put in the loss after each answer)."""
    encoder = ChatEncoder(tokenizer, template, "saved")  # refuses a template with no end token after answers
    probe = Conversation((("user", "Hello"), ("assistant", "World")), "probe", "messages")
    text, [(start, end)] = encoder.spans(probe)
    end_token = tokenizer(text[start:end], add_special_tokens=False)["input_ids"][-1]
    eos = tokenizer.eos_token_id
    return [end_token] + ([eos] if eos is not None and eos != end_token else [])


def load_chat(model: str | None, adapter: str | None = None, *, dtype: str = "auto", system: str | None = None) -> Chat:
    """A model (and adapter) loaded as `complete` loads it, ready to chat in the template its SFT run saved."""
    completer = load_completer(model, adapter, dtype=dtype)
    template = saved_template(completer.tokenizer, completer.label)
    return Chat(completer, end_of_turn_ids(completer.tokenizer, template), system)


def interact(chat: Chat, sampling: Sampling, read: Callable[[str], str], write: Write, note: Write) -> None:
    """The prompt loop: each line is a message; `/exit` or end of input (Ctrl-D) leaves."""
    note(f"chatting with {chat.label}; /exit or Ctrl-D to leave")
    while True:
        try:
            line = read(">>> ")
        except EOFError:
            write("\n")
            return
        message = line.strip()
        if message == "/exit":
            return
        if not message:
            continue
        try:
            chat.reply(message, sampling, write)
        except UserError as exc:  # a message too long for the model: say so and keep the conversation
            note(f"error: {exc}")
            continue
        write("\n")
