"""Chat templates: conversations -> `input_ids` + `labels`, with the loss on every assistant turn and its end token.

A template is Jinja source in the Hugging Face `chat_template` dialect, so the very same text is saved with the
output tokenizer and `tokenizer.apply_chat_template(..., add_generation_prompt=True)` at inference builds exactly the
prompts training saw. Training ids are the tokenizer's ids for the rendered conversation (as `apply_chat_template`
tokenizes it: special-token strings become their single ids, no extra BOS). The loss mask comes from the template
itself: for each assistant turn, the characters between the rendering of the turns before it (with the generation
prompt) and the rendering that includes it are the response plus the template's end-of-turn token; the tokens over
those characters are labelled, everything else is -100. So masks are right for any prefix-stable template, the
tokenizer's own included, not only for the named ones here.

Named templates (`aixcoder`, `chatml`, `alpaca`, `plain`) are documented in the README. aiXcoder's layout is
`<s>▁<AIX-SYSTEM>{system}▁<AIX-END-TURN>▁<AIX-USER>{user}▁<AIX-END-TURN>▁<AIX-ASSISTANT>{reply}▁<AIX-END-TURN>...`:
the four tokens are single ids in its vocabulary, so no newline or space is needed around them (each would be one
more token to predict, and a `▁`-tokenizer would fold a space into the next word); `▁<AIX-END-TURN>` closes every
turn, and the assistant's is in the loss, so the model learns to stop there; `<s>` starts the sequence as in
aiXcoder's FIM prompts.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tokenizers import AddedToken

from finetune.data.sft.records import Conversation
from finetune.data.tokenize.pieces import PieceEncoder
from finetune.data.types import IGNORE_INDEX
from finetune.errors import UserError

_BOS = "{{ bos_token if bos_token and bos_token != eos_token else '' }}"

AIXCODER_TOKENS = ("▁<AIX-SYSTEM>", "▁<AIX-USER>", "▁<AIX-ASSISTANT>", "▁<AIX-END-TURN>")
CHATML_TOKENS = ("<|im_start|>", "<|im_end|>")


@dataclass(frozen=True)
class ChatTemplate:
    """A template's name, its Jinja source, and the special tokens it needs as single ids."""

    name: str
    source: str
    tokens: tuple[str, ...] = ()


TEMPLATES: dict[str, ChatTemplate] = {
    "aixcoder": ChatTemplate(
        "aixcoder",
        _BOS + "{% for message in messages %}"
        "{% if message['role'] == 'system' %}▁<AIX-SYSTEM>{% elif message['role'] == 'user' %}▁<AIX-USER>"
        "{% else %}▁<AIX-ASSISTANT>{% endif %}{{ message['content'] }}▁<AIX-END-TURN>"
        "{% endfor %}{% if add_generation_prompt %}▁<AIX-ASSISTANT>{% endif %}",
        AIXCODER_TOKENS,
    ),
    "chatml": ChatTemplate(
        "chatml",
        "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
        "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}",
        CHATML_TOKENS,
    ),
    "alpaca": ChatTemplate(
        "alpaca",
        _BOS + "{% if messages[0]['role'] == 'system' %}{{ messages[0]['content'] }}\n\n"
        "{% set turns = messages[1:] %}{% else %}{% set turns = messages %}{% endif %}"
        "{% for message in turns %}{% if message['role'] == 'user' %}### Instruction:\n{{ message['content'] }}"
        "\n\n### Response:\n{% else %}{{ message['content'] }}{{ eos_token }}\n\n{% endif %}{% endfor %}",
    ),
    "plain": ChatTemplate(
        "plain",
        _BOS + "{% for message in messages %}{{ message['content'] }}"
        "{% if message['role'] == 'assistant' %}{{ eos_token }}{% endif %}{% endfor %}",
    ),
}
TEMPLATE_NAMES = ("auto", *TEMPLATES)


def _jinja_string(text: str) -> str:
    """`text` as a Jinja string literal (Jinja unescapes like Python's unicode-escape)."""
    return json.dumps(text, ensure_ascii=False).encode("ascii", "backslashreplace").decode("ascii")


def with_default_system(source: str, system_prompt: str | None) -> str:
    """`source` that puts `system_prompt` first when a conversation has no system turn (any template)."""
    if not system_prompt:
        return source
    literal = _jinja_string(system_prompt)
    return (
        "{%- if messages and messages[0]['role'] != 'system' %}"
        f"{{%- set messages = [{{'role': 'system', 'content': {literal}}}] + messages %}}"
        "{%- endif %}" + source
    )


def _own_template(tokenizer: Any) -> str | None:
    own = getattr(tokenizer, "chat_template", None)
    if isinstance(own, dict):  # several named templates: the default one
        own = own.get("default")
    return own if isinstance(own, str) and own.strip() else None


def resolve_template(
    tokenizer: Any, template: str = "auto", chat_template: str | None = None, family: str | None = None
) -> ChatTemplate:
    """Which template a run uses: custom Jinja, else a named one, else (`auto`) the tokenizer's own, else the family's.

    The family default is `aixcoder` for aiXcoder and `chatml` for the rest. `chat_template` may be Jinja text or
    the path of a file holding it.
    """
    if chat_template:
        file = Path(chat_template)
        if "{" not in chat_template and file.is_file():
            chat_template = file.read_text(encoding="utf-8")
        elif "{" not in chat_template:
            raise UserError(f"chat_template {chat_template!r} is neither Jinja text nor an existing file")
        return ChatTemplate("custom", chat_template)
    if template == "auto":
        own = _own_template(tokenizer)
        if own is not None:
            return ChatTemplate("tokenizer", own)
        template = "aixcoder" if family == "aixcoder" else "chatml"
    if template not in TEMPLATES:
        raise UserError(
            f"template {template!r} is not valid: choose one of {', '.join(TEMPLATE_NAMES)}, or an existing Jinja file"
        )
    return TEMPLATES[template]


def setup_chat_tokenizer(tokenizer: Any, template: ChatTemplate, system_prompt: str | None, add_tokens: bool) -> int:
    """Give the tokenizer the template's special tokens (added when missing and `add_tokens`) and the template.

    Sets `tokenizer.chat_template`, so `save_pretrained` stores it with the output. Returns how many tokens were
    added (the caller resizes the embeddings and trains the new rows).
    """
    vocab = tokenizer.get_vocab()
    missing = [t for t in template.tokens if t not in vocab]
    added = 0
    if missing:
        if not add_tokens:
            raise UserError(
                f"the tokenizer lacks the {template.name} template's tokens {', '.join(missing)}: set "
                "data.sft.add_chat_tokens=true to add them, or choose another data.sft.template"
            )
        added = tokenizer.add_tokens(
            [AddedToken(t, special=True, normalized=False, lstrip=False, rstrip=False) for t in missing],
            special_tokens=True,
        )
    _ensure_atomic(tokenizer, template)
    tokenizer.chat_template = with_default_system(template.source, system_prompt)
    return added


def _ensure_atomic(tokenizer: Any, template: ChatTemplate) -> None:
    """Each template token must come out of the rendered text as its one id, as inference will tokenize it.

    A token that sits in the base vocabulary without being registered as an added token (possible after a
    SentencePiece conversion) would be split into pieces; registering it keeps its id and makes it atomic.
    """
    vocab = tokenizer.get_vocab()
    for token in template.tokens:
        if tokenizer(token, add_special_tokens=False)["input_ids"] == [vocab[token]]:
            continue
        tokenizer.add_tokens([AddedToken(token, special=True, normalized=False)], special_tokens=True)
        if tokenizer(token, add_special_tokens=False)["input_ids"] != [vocab[token]]:
            raise UserError(f"the tokenizer splits the {template.name} template token {token!r}: use another template")


@dataclass
class ChatRow:
    """One encoded conversation: ids, labels, the rendered text, and what truncation did (`note`)."""

    input_ids: list[int]
    labels: list[int]
    text: str
    note: str = ""


class ChatEncoder:
    """Renders conversations with one template and tokenizes them with the loss on the assistant turns.

    `source` is the final Jinja (system prompt included); the tokenizer must already hold the template's tokens.
    """

    def __init__(self, tokenizer: Any, source: str, name: str = "custom") -> None:
        if not getattr(tokenizer, "is_fast", False):
            raise UserError("chat data needs a fast tokenizer (tokenizer.json): convert the tokenizer first")
        self.tokenizer = tokenizer
        self.source = source
        self.name = name
        self._special = sorted({*tokenizer.all_special_tokens, *tokenizer.get_added_vocab()}, key=len, reverse=True)
        self.pieces = PieceEncoder(tokenizer, parse_special=True)
        self._check_template()

    def render(self, messages: list[dict[str, str]], generation_prompt: bool = False) -> str:
        try:
            return self.tokenizer.apply_chat_template(
                messages, chat_template=self.source, tokenize=False, add_generation_prompt=generation_prompt
            )
        except Exception as exc:  # jinja2 TemplateError, or the template's own raise_exception
            raise UserError(f"the {self.name} chat template failed to render: {str(exc).splitlines()[0]}") from None

    def _check_template(self) -> None:
        """Fail early on a template that would train a model that never stops or is asked differently later."""
        probe = Conversation((("user", "Hello"), ("assistant", "World"), ("user", "Again"), ("assistant", "Done")),
                             "probe", "messages")
        text, spans = self.spans(probe)
        for start, end in spans:
            piece = text[start:end]
            if not any(piece.endswith(token) for token in self._special):
                raise UserError(
                    f"the {self.name} chat template puts no end-of-turn or EOS token after an assistant message "
                    f"(it renders {piece!r}): end each assistant message with a special token such as "
                    "{{ eos_token }}"
                )

    def spans(self, conversation: Conversation) -> tuple[str, list[tuple[int, int]]]:
        """The rendered conversation and the character spans of each assistant response + its end token."""
        messages = conversation.messages()
        full = self.render(messages)
        spans: list[tuple[int, int]] = []
        for index, (role, _) in enumerate(conversation.turns):
            if role != "assistant":
                continue
            before = self.render(messages[:index], generation_prompt=True)
            upto = self.render(messages[: index + 1]).rstrip()
            if not (upto.startswith(before) and full.startswith(upto)):
                raise UserError(
                    f"the {self.name} chat template is not prefix-stable (the prompt for turn {index + 1} is not a "
                    "prefix of the conversation that includes its answer), so the loss mask cannot be found: "
                    "use another data.sft.template"
                )
            spans.append((len(before), len(upto)))
        return full, spans

    def _tokens(self, conversation: Conversation) -> ChatRow:
        """Prompt and response stretches tokenized one after the other, so every response starts on a token
        boundary, exactly where generation starts after the prompt (no token spans prompt and response)."""
        text, spans = self.spans(conversation)
        ids: list[int] = []
        labels: list[int] = []
        cursor = 0
        for start, end in [*spans, (len(text), len(text))]:
            for piece, learn in ((text[cursor:start], False), (text[start:end], True)):
                if not piece:
                    continue
                new = self.pieces.continuation(piece) if ids else self.pieces.raw(piece)
                ids += new
                labels += new if learn else [IGNORE_INDEX] * len(new)
            cursor = end
        return ChatRow(ids, labels, text)

    def encode(self, conversation: Conversation, max_length: int | None = None) -> ChatRow:
        """The conversation's ids and labels, at most `max_length` tokens.

        Too long: the prompt side is cut first (user and system text, earliest turn first, each keeping its
        beginning); if the template and responses alone are still too long, the end is cut off (`response_truncated`).
        A row left with no labelled token comes back empty with note `dropped_no_loss`.
        """
        row = self._tokens(conversation)
        if max_length is None or len(row.input_ids) <= max_length:
            return row
        turns = list(conversation.turns)
        for _ in range(4):
            excess = len(row.input_ids) - max_length
            if excess <= 0:
                break
            shortened = self._shorten_prompts(turns, excess)
            if shortened == turns:
                break
            turns = shortened
            row = self._tokens(Conversation(tuple(turns), conversation.source, conversation.shape))
            row.note = "prompt_truncated"
        if len(row.input_ids) > max_length:
            row = ChatRow(row.input_ids[:max_length], row.labels[:max_length], row.text, "response_truncated")
        if all(label == IGNORE_INDEX for label in row.labels):
            return ChatRow([], [], row.text, "dropped_no_loss")
        return row

    def _shorten_prompts(self, turns: list[tuple[str, str]], excess: int) -> list[tuple[str, str]]:
        """Remove about `excess` tokens from the ends of user turns (earliest first), then of the system turn."""
        order = [i for i, (role, _) in enumerate(turns) if role == "user"]
        order += [i for i, (role, _) in enumerate(turns) if role == "system"]
        out = list(turns)
        for index in order:
            if excess <= 0:
                break
            role, text = out[index]
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            keep = max(0, len(ids) - excess - 1)  # one spare token for merges at the cut
            excess -= len(ids) - keep
            out[index] = (role, self.tokenizer.decode(ids[:keep]) if keep else "")
        return out

    def encode_counted(self, conversation: Conversation, max_length: int, stats: Counter[str]) -> ChatRow | None:
        """`encode` for training: truncations and drops counted in `stats`; None when dropped."""
        row = self.encode(conversation, max_length)
        if row.note:
            stats[f"chat_{row.note}"] += 1
        return row if row.input_ids else None
