"""Text helpers for the terminal: slugs, durations, and columns that line up with any script.

Terminal columns are not characters: ``"任务"`` is two characters but four columns wide, and ``"e\u0301"``
(e + combining acute accent) is two characters but one column. `display_width` follows the East Asian Width
property so tables line up for users who write tasks in Chinese, Japanese or Korean.
"""

from __future__ import annotations

import re
import textwrap
import unicodedata

# German and Scandinavian letters have conventional ASCII spellings; NFKD alone would turn "ß" into nothing.
_TRANSLITERATION = str.maketrans(
    {
        "ä": "ae", "ö": "oe", "ü": "ue", "Ä": "Ae", "Ö": "Oe", "Ü": "Ue", "ß": "ss",
        "æ": "ae", "ø": "oe", "å": "aa", "Æ": "Ae", "Ø": "Oe", "Å": "Aa", "ł": "l", "Ł": "L",
    }
)  # fmt: skip
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(w|d|h|m|min|mins|minutes?|hours?|days?|weeks?)(?![a-z])")
_UNIT_MINUTES = {"w": 5 * 8 * 60, "d": 8 * 60, "h": 60, "m": 1}  # work weeks and work days


def slugify(text: str, max_length: int = 48) -> str:
    """A lower-case ASCII slug for file names and URLs.

    >>> slugify("Steuererklärung 2024 abgeben!")
    'steuererklaerung-2024-abgeben'
    >>> slugify("Große Straße")
    'grosse-strasse'
    """
    ascii_text = unicodedata.normalize("NFKD", text.translate(_TRANSLITERATION))
    ascii_text = ascii_text.encode("ascii", "ignore").decode("ascii").lower()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text).strip("-")
    if len(slug) > max_length:
        slug = slug[:max_length].rsplit("-", 1)[0] or slug[:max_length]
    return slug


def char_width(char: str) -> int:
    """Terminal columns taken by one code point: 0 for combining marks, 2 for wide and full-width ones."""
    if unicodedata.combining(char) or unicodedata.category(char) in ("Mn", "Me", "Cf"):
        return 0
    return 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1


def display_width(text: str) -> int:
    """Columns `text` occupies in a terminal.

    >>> display_width("Einkaufen")
    9
    >>> display_width("买菜")
    4
    """
    return sum(char_width(char) for char in text)


def truncate(text: str, width: int, ellipsis: str = "…") -> str:
    """Cut `text` to at most `width` columns, marking the cut with `ellipsis`."""
    if display_width(text) <= width:
        return text
    budget = width - display_width(ellipsis)
    if budget <= 0:
        return ellipsis[:width]
    used = 0
    kept = []
    for char in text:
        columns = char_width(char)
        if used + columns > budget:
            break
        kept.append(char)
        used += columns
    return "".join(kept).rstrip() + ellipsis


def pad(text: str, width: int, align: str = "left") -> str:
    """Pad (or truncate) `text` to exactly `width` columns."""
    text = truncate(text, width)
    gap = width - display_width(text)
    if align == "right":
        return " " * gap + text
    if align == "center":
        left = gap // 2
        return " " * left + text + " " * (gap - left)
    return text + " " * gap


def format_table(rows: list[list[str]], headers: list[str], max_widths: dict[int, int] | None = None) -> str:
    """A plain-text table with one space-separated column per header; numeric columns align right."""
    max_widths = max_widths or {}
    columns = list(zip(headers, *rows, strict=False)) if rows else [(header,) for header in headers]
    widths = []
    for index, column in enumerate(columns):
        widest = max(display_width(cell) for cell in column)
        widths.append(min(widest, max_widths.get(index, widest)))
    numeric = [bool(rows) and all(row[i].strip().lstrip("-").isdigit() for row in rows) for i in range(len(headers))]
    lines = []
    for row in [headers, *rows]:
        cells = [pad(cell, widths[i], "right" if numeric[i] else "left") for i, cell in enumerate(row)]
        lines.append("  ".join(cells).rstrip())
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def parse_duration(text: str) -> int:
    """Minutes in a human duration such as ``"1h30m"``, ``"2 days"``, ``"45"`` or ``"1.5h"``.

    Days and weeks are work days (8 h) and work weeks (5 days), because estimates are about effort.
    """
    value = text.strip().lower()
    if value.isdigit():
        return int(value)
    total = 0.0
    position = 0
    for match in _DURATION_PART.finditer(value):
        if value[position : match.start()].strip():
            raise ValueError(f"cannot read duration {text!r}")
        total += float(match.group(1)) * _UNIT_MINUTES[match.group(2)[0]]
        position = match.end()
    if position == 0 or value[position:].strip():
        raise ValueError(f"cannot read duration {text!r}")
    return round(total)


def format_duration(minutes: int) -> str:
    """The shortest readable form: ``90`` -> ``"1h30m"``, ``480`` -> ``"1d"``."""
    if minutes < 0:
        return "-" + format_duration(-minutes)
    if minutes == 0:
        return "0m"
    parts = []
    for unit in ("w", "d", "h", "m"):
        size = _UNIT_MINUTES[unit]
        count, minutes = divmod(minutes, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


def wrap(text: str, width: int = 72, indent: str = "") -> str:
    """Re-wrap each paragraph of `text` (blank-line separated) to `width`, keeping the paragraph breaks."""
    paragraphs = re.split(r"\n\s*\n", text.strip())
    wrapped = [
        textwrap.fill(" ".join(paragraph.split()), width=width, initial_indent=indent, subsequent_indent=indent)
        for paragraph in paragraphs
        if paragraph.strip()
    ]
    return "\n\n".join(wrapped)


def plural(count: int, singular: str, plural_form: str | None = None) -> str:
    """``plural(1, "task")`` -> ``"1 task"``, ``plural(3, "task")`` -> ``"3 tasks"``."""
    word = singular if count == 1 else (plural_form or singular + "s")
    return f"{count} {word}"
