"""Early stopping: a completion stops once its truncation rule has cut it for good, and no truncated prediction
changes. The rule on hand-written completions, every prefix of real and perturbed ones, and a tiny model's
generations with and without stopping."""

from __future__ import annotations

import random
from functools import partial
from pathlib import Path

import pytest

from finetune.data.ingest.walk import walk_repository
from finetune.evaluate.items import build_items
from finetune.evaluate.truncate import settled, truncate
from finetune.inference.complete import Sampling, generate, load_completer

SAMPLE_REPO = Path(__file__).resolve().parents[2] / "data" / "sample-repo"

# What a model might write next: words that would change a cut if the rule stopped too early.
CONTINUATIONS = ["", "\n", "lse:\n", "else {\n", "if x:\n", "&& y", "/ 2", "/* c */", "# c\n", "}\n", ")\n", "'", "ing = 1\n", "\ufffd"]

SETTLED_CASES = [
    # (language, mode, prefix, completion, settled?)
    ("python", "line", "", "x = f(1)", False),
    ("python", "line", "", "x = f(1)\n", True),
    ("python", "header", "", "def f(a, b)", False),
    ("python", "header", "", "def f(a, b):", True),
    ("python", "header", "", "def f(a: dict[str,", False),
    ("python", "unit", "    ", "if a:\n        b()\n", False),  # the next line may be `else:`
    ("python", "unit", "    ", "if a:\n        b()\n    el", False),  # `el` may become `elif`
    ("python", "unit", "    ", "if a:\n        b()\n    elif", False),  # ... or `elifant = 1`
    ("python", "unit", "    ", "if a:\n        b()\n    elif c:\n", False),
    ("python", "unit", "    ", "if a:\n        b()\n    x = 1", True),  # `x` is whole: the block is over
    ("python", "unit", "    ", "if a:\n        b()\n\n    # done\n", False),  # blank and comment lines say nothing
    ("python", "unit", "    ", "if a:\n        b()\nx", True),  # back left of the unit: over, whatever follows
    ("python", "unit", "", "@dec\n", False),
    ("python", "unit", "", "@dec\ndef f():\n    return 1\n\ndef", False),
    ("python", "unit", "", "@dec\ndef f():\n    return 1\n\ndef g", True),
    ("python", "statements", "        ", "a = 1\n        b = 2\n", False),
    ("python", "statements", "        ", "a = 1\n        b = 2\n    return c", True),
    ("python", "unit", "    ", 'x = """\n    not code\n', False),  # inside a string nothing counts
    ("c", "unit", "", 'int x = f("}")', False),
    ("c", "unit", "", 'int x = f("}");', True),
    ("c", "unit", "", "a() /* ; */", False),
    ("c", "unit", "    ", "if (a) {\n  b();\n}", False),  # `else` may follow
    ("c", "unit", "    ", "if (a) {\n  b();\n} el", False),
    ("c", "unit", "    ", "if (a) {\n  b();\n} else {\n  c();\n}\nreturn", False),  # `return` or `returned`?
    ("c", "unit", "    ", "if (a) {\n  b();\n} else {\n  c();\n}\nreturn 1;", True),
    ("c", "statements", "  ", "a();\n  b();\n}", True),
    ("c", "header", "", "int f(int a) {", True),
    ("javascript", "unit", "", "const a = 1\n", False),
    ("javascript", "unit", "", "const a = 1\nconst", False),
    ("javascript", "unit", "", "const a = 1\nconst ", True),
    ("javascript", "unit", "", "const a = xs\n  .map(f)\n", False),
    ("javascript", "unit", "", "const a = b\n&", False),  # `&` may become `&&`, which continues the statement
    ("javascript", "unit", "", "const a = 1\nfoo\ufffd", False),  # half a UTF-8 character is not an end
    ("go", "unit", "\t", "for i := range xs {\n\t\tf(i)\n\t}\n\treturn ", True),
    ("rust", "header", "", "fn f(a: i32) -> i32 {", True),
    ("ruby", "unit", "", "def f\n  1\nend\n", False),
    ("ruby", "unit", "", "def f\n  1\nend\nputs 1", True),
    ("shell", "unit", "", "if [ -f x ]; then\n  y\nfi\necho ", True),
    ("sql", "unit", "", "SELECT 1;\nSELECT 2;\n", False),  # no rule for the language: only EOS ends it
    ("python", "none", "", "x\n\ny\n", False),
]


@pytest.mark.parametrize(("language", "mode", "prefix", "completion", "expected"), SETTLED_CASES)
def test_settled_on_hand_written_completions(language, mode, prefix, completion, expected) -> None:
    assert settled(completion, language, mode, prefix) == expected
    if expected:
        cut = truncate(completion, language, mode, prefix)
        for more in CONTINUATIONS:  # once settled, nothing a model writes next moves the cut
            assert truncate(completion + more, language, mode, prefix) == cut, more


def _perturbed(text: str, rng: random.Random) -> str:
    i = rng.randrange(len(text) + 1)
    return text[:i] + rng.choice(["\n", "}", ")", "el", "else", "&", "/", "#", "'", '"""', "\n    ", "/*", "end"]) + text[i:]


def test_every_settled_prefix_truncates_like_the_whole_text() -> None:
    """Files continue past each item's middle as a model that does not stop would: cut early or not, same result."""
    documents, _ = walk_repository(SAMPLE_REPO)
    items = build_items(documents, per_category=2, seed=0)
    assert len({it.language for it in items}) >= 5
    rng = random.Random(0)
    early = 0
    for item in items:
        whole = item.middle + item.suffix[:120]
        for text in (whole, _perturbed(whole, rng), _perturbed(whole, rng)):
            target = truncate(text, item.language, item.mode, item.prefix)
            ends = [end for end in range(len(text) + 1) if settled(text[:end], item.language, item.mode, item.prefix)]
            for end in ends:
                assert truncate(text[:end], item.language, item.mode, item.prefix) == target, (item.id, text[:end])
            early += bool(ends) and ends[0] < len(text)
    assert early > len(items)  # the rule fires on most texts, well before their end


def test_early_stopping_keeps_every_truncated_prediction(tiny_model_dir: Path) -> None:
    """The invariant on a model's own output: with stopping, the same truncated predictions from fewer tokens."""
    documents, _ = walk_repository(SAMPLE_REPO)
    items = build_items(documents, per_category=3, seed=1, max_context_chars=600)
    completer = load_completer(str(tiny_model_dir))
    prompts = [completer.prompt_ids(it.prefix, it.suffix, it.path, it.language) for it in items]
    stops = [partial(settled, language=it.language, mode=it.mode, prefix=it.prefix) for it in items]
    sampling = Sampling(max_new_tokens=64)
    early, early_stats = generate(completer, prompts, sampling, batch_size=8, stops=stops)
    full, full_stats = generate(completer, prompts, sampling, batch_size=8)
    for item, a, b in zip(items, early, full, strict=True):
        assert a is not None and b is not None
        assert b.ids[: len(a.ids)] == a.ids  # the stopped completion is the start of the full one
        assert truncate(a.text, item.language, item.mode, item.prefix) == truncate(
            b.text, item.language, item.mode, item.prefix
        ), item.id
    assert len({it.language for it in items}) >= 5
    assert early_stats.rule_stops >= 5  # a random model rarely ends a unit; a trained one does far more often
    assert early_stats.new_tokens < full_stats.new_tokens
    assert early_stats.tokens_saved_at_most >= full_stats.new_tokens - early_stats.new_tokens
