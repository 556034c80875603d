from __future__ import annotations

import pytest

from tasklet.textutils import (
    display_width,
    format_duration,
    format_table,
    pad,
    parse_duration,
    plural,
    slugify,
    truncate,
    wrap,
)


@pytest.mark.parametrize(
    ("text", "slug"),
    [
        ("Hello, World!", "hello-world"),
        ("Ärger über Öl", "aerger-ueber-oel"),
        ("Crème brûlée", "creme-brulee"),
        ("Ålesund → Bergen", "aalesund-bergen"),
        ("  --  ", ""),
        ("任务清单", ""),
    ],
)
def test_slugify(text: str, slug: str) -> None:
    assert slugify(text) == slug


def test_slugify_cuts_at_a_word() -> None:
    assert slugify("alpha beta gamma delta", max_length=14) == "alpha-beta"


@pytest.mark.parametrize(("text", "width"), [("abc", 3), ("日本語", 6), ("e\u0301", 1), ("🎉ok", 4), ("", 0)])
def test_display_width(text: str, width: int) -> None:
    assert display_width(text) == width


def test_truncate_respects_columns() -> None:
    assert truncate("short", 10) == "short"
    assert truncate("a long title here", 8) == "a long…"
    assert truncate("写一份季度报告", 7) == "写一份…"
    assert display_width(truncate("写一份季度报告", 7)) <= 7


def test_pad_alignments() -> None:
    assert pad("ab", 4) == "ab  "
    assert pad("ab", 4, "right") == "  ab"
    assert pad("ab", 5, "center") == " ab  "
    assert pad("中文", 6) == "中文  "


def test_format_table_aligns_wide_characters() -> None:
    table = format_table([["1", "Einkaufen"], ["12", "买菜"]], ["id", "title"])
    lines = table.splitlines()
    assert lines[0] == "id  title"
    assert lines[1] == "--  ---------"
    assert lines[2] == " 1  Einkaufen"
    assert lines[3] == "12  买菜"


@pytest.mark.parametrize(
    ("text", "minutes"),
    [("45", 45), ("45m", 45), ("1h30m", 90), ("1.5h", 90), ("2 hours", 120), ("1d", 480), ("1w 2d", 3360),
     ("30 mins", 30)],
)  # fmt: skip
def test_parse_duration(text: str, minutes: int) -> None:
    assert parse_duration(text) == minutes


@pytest.mark.parametrize("text", ["", "soon", "1h and 5m", "h", "5 parsecs"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="cannot read duration"):
        parse_duration(text)


@pytest.mark.parametrize(("minutes", "text"), [(0, "0m"), (90, "1h30m"), (480, "1d"), (2460, "1w1h"), (-5, "-5m")])
def test_format_duration(minutes: int, text: str) -> None:
    assert format_duration(minutes) == text
    if minutes > 0:
        assert parse_duration(text) == minutes


def test_wrap_keeps_paragraphs() -> None:
    text = "one two three four five\n\n\nsix   seven"
    assert wrap(text, width=10, indent="  ") == "  one two\n  three\n  four\n  five\n\n  six\n  seven"


def test_plural() -> None:
    assert plural(1, "task") == "1 task"
    assert plural(0, "task") == "0 tasks"
    assert plural(2, "child", "children") == "2 children"
