"""The tokenizer a recipe trains with: loaded, its family found, FIM (and chat template) tokens checked or added.

`prepare`, `train` and `data inspect` all start here, so the ids they show and train on come from one tokenizer
set up one way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from finetune.config.inputs import check_model_location
from finetune.config.schema import Recipe
from finetune.data.sft.chat import ChatEncoder
from finetune.data.sft.mixture import chat_setup, has_instructions
from finetune.data.tokenize.encoder import SampleEncoder
from finetune.data.tokenize.families import detect_family, ensure_fim_tokens
from finetune.errors import UserError


@dataclass
class TokenizerSetup:
    """The tokenizer (with any tokens added), its family, how many tokens were added, and the sample encoder."""

    tokenizer: Any
    family: str
    added: int
    encoder: SampleEncoder
    chat: ChatEncoder | None = None  # the chat template's encoder, when the recipe has instruction sources

    @property
    def new_token_ids(self) -> list[int]:
        """Ids of the tokens added to the vocabulary (their embeddings start as the mean of the others)."""
        return list(range(len(self.tokenizer) - self.added, len(self.tokenizer)))


def load_tokenizer(recipe: Recipe):
    from transformers import AutoTokenizer

    check_model_location(recipe.model.name_or_path)
    try:
        return AutoTokenizer.from_pretrained(
            recipe.model.name_or_path, trust_remote_code=recipe.model.trust_remote_code, revision=recipe.model.revision
        )
    except OSError as exc:
        raise UserError(
            f"could not load the tokenizer of {recipe.model.name_or_path} ({str(exc).splitlines()[0]}); "
            "check model.name_or_path, or download the model first"
        ) from None


def load_encoder(recipe: Recipe) -> TokenizerSetup:
    """Tokenizer (FIM tokens checked, or added), its family, how many tokens were added, and the sample encoder."""
    tokenizer = load_tokenizer(recipe)
    family = recipe.model.family if recipe.model.family != "auto" else detect_family(tokenizer)
    added = ensure_fim_tokens(tokenizer, family, add=recipe.model.add_fim_tokens)
    chat = None
    if has_instructions(recipe.data):  # the chat template (and its tokens) go on the tokenizer that gets saved
        chat, chat_tokens = chat_setup(tokenizer, recipe.data, family)
        added += chat_tokens
    encoder = SampleEncoder(tokenizer, family, loss_on=recipe.data.loss_on)
    return TokenizerSetup(tokenizer, family, added, encoder, chat)
