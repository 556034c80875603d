"""Secrets that only their surroundings give away, or that are hidden in another form.

Real leaks are rarely a tidy `API_KEY = "..."`: a comment says `# prod password is X`, a YAML file holds `auth: X`
under an odd key, an AWS secret key sits in a docstring next to its key id, a Stripe key is split over two string
literals, a token is written as hex or base64. Each rule here finds one such placement; all of them yield
`Finding`s in the original text's coordinates, so scrubbing replaces exactly the secret's characters.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from collections import Counter
from collections.abc import Iterator

from finetune.data.ingest.secret_shapes import (
    AWS_ACCESS_KEY_ID_PREFIXES,
    Finding,
    known_format_findings,
    plausible_value,
)

# --- credentials in prose and comments ----------------------------------------------------------------------------

# `password is X`, `# old api key: X`, `creds: user admin / pass X`. The keyword must be a whole word (so
# `password_hash` and `tokens` do not count); a bare blank as separator only after the password words.
_PROSE = re.compile(
    r"(?<![A-Za-z0-9_.])(?P<kw>pass(?:word|wd|phrase)?s?|pwd|secret(?:[ _-]?key)?|(?:access[ _-]?)?token|"
    r"api[ _-]?key|apikey|credentials?|creds)(?![A-Za-z0-9_])"
    r"(?:[ \t]*(?:\([^)\n]{0,30}\))?[ \t]*(?P<sep>:|=>|->|=|\bis\b|\bwas\b|\bare\b)[ \t]*|(?P<blank>[ \t]+))"
    r"[\"'`]?(?P<value>[A-Za-z0-9!@$%^&*+~][^\s\"'`,;()\[\]{}<>|]{5,127})",
    re.IGNORECASE,
)
_PROSE_STARTS = re.compile(r"(?=pass|pwd|secret|token|access|api|cred)")  # in the lower-cased text (fast)
_BARE_KEYWORDS = ("pass", "pwd")  # `pass X`, `password X`, `pwd X`; `token the` is prose, not a credential
_SPECIAL = set("!@#$%^&*+=~?")
_DOTTED_NAME = re.compile(r"^[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+$")  # os.environ, self.pass2, config2.yaml
# sha256, utf8, base64, py3k (a long run of letters with a digit at the end is a random key, not a word)
_WORDISH = re.compile(r"^[a-z]{1,10}[0-9]{1,3}$|^[a-z]{1,10}[0-9]+_?[a-z]{0,10}$", re.IGNORECASE)
_PATHISH = re.compile(r"^(?:~?/|\.\.?/)|://")
_DIGIT_IN_WORD = re.compile(r"[0-9][A-Za-z]")  # p4ssw0rd, not zip64
_KEYWORD_ARGUMENT = re.compile(r"^[A-Za-z_]\w*=")  # `pass stdout=PIPE`: an argument, not a password
# Languages whose lines are code: there `password = x2` is a variable (the assignment rules handle literals).
_CODE_LANGUAGES_WITHOUT_EQUALS = frozenset(
    {"python", "java", "javascript", "typescript", "tsx", "jsx", "c", "c++", "c#", "go", "rust", "php", "ruby",
     "kotlin", "scala", "swift", "dart", "lua", "perl", "r", "julia", "elixir", "zig", "vue", "ocaml", "haskell"}
)


def prose_findings(text: str, lowered: str, language: str) -> Iterator[Finding]:
    """Credentials written as prose: a credential word, `is`/`:`/a blank, then a value that looks like a password."""
    code = language in _CODE_LANGUAGES_WITHOUT_EQUALS
    if len(lowered) != len(text):  # a character whose lower case is longer shifts the offsets: the slow way
        matches = _PROSE.finditer(text)
    else:
        matches = (_PROSE.match(text, start.start()) for start in _PROSE_STARTS.finditer(lowered))
    for match in matches:
        if match is None:
            continue
        keyword, separator = match.group("kw").lower(), match.group("sep")
        if match.group("blank") is not None and not keyword.startswith(_BARE_KEYWORDS):
            continue
        if code and separator in ("=", "=>", "->"):
            continue
        value = match.group("value").rstrip(".,:;?")
        end = match.start("value") + len(value)
        if text[end : end + 1] in ("(", "[") or not looks_like_password(value, strict=match.group("blank") is not None):
            continue
        yield Finding(match.start("value"), end, "prose_credential")


def looks_like_password(value: str, *, strict: bool = False) -> bool:
    """Letters with digits or symbols, not a word with a number (`sha256`), a dotted name, a path or a template.

    `strict` (after a bare `pass`, where prose says `pass force_zip64 to ...`): a symbol, or a digit inside a word.
    """
    if len(value) < 6 or not plausible_value(value):
        return False
    has_letter = any(c.isalpha() for c in value)
    has_digit = any(c.isdigit() for c in value)
    has_special = any(c in _SPECIAL for c in value)
    if not has_letter or not (has_digit or has_special):
        return False
    if strict and not has_special and not _DIGIT_IN_WORD.search(value):
        return False
    return not (
        _DOTTED_NAME.match(value) or _WORDISH.match(value) or _PATHISH.search(value) or _KEYWORD_ARGUMENT.match(value)
    )


# --- configuration values with high entropy, whatever their key ---------------------------------------------------

CONFIG_LANGUAGES = frozenset({"yaml", "ini", "properties", "dotenv", "json", "toml"})
MIN_CONFIG_VALUE_CHARS = 16
CONFIG_ENTROPY_LIMIT = 3.5  # bits per character; 16 random alphanumerics score about 3.9, English words about 3.0
_CONFIG_PAIR = re.compile(
    r"[\"']?(?P<key>[A-Za-z_][\w.-]{0,80})[\"']?[ \t]*[:=][ \t]*[\"']?(?P<value>[A-Za-z0-9+/_~.-]{16,512}={0,2})"
    r"(?=[\"'\s,}\]]|$)",
    re.MULTILINE,
)
# Keys whose values are meant to be long and random-looking but are not secrets.
_PUBLIC_KEYS = re.compile(
    r"(?:hash|checksum|sha\d*|md5|digest|integrity|commit|rev|revision|version|uuid|guid|(?:^|[_.-])id|name|url|uri|"
    r"path|file|image|etag|fingerprint|pubkey|public[_-]?key|cert(?:ificate)?|thumbprint|nonce_public)$",
    re.IGNORECASE,
)
_UUID = re.compile(r"^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$", re.IGNORECASE)


def config_findings(text: str, language: str) -> Iterator[Finding]:
    """A value in a YAML/INI/ENV/TOML/JSON/properties file that looks random, under any key (`auth: X`)."""
    if language not in CONFIG_LANGUAGES:
        return
    for match in _CONFIG_PAIR.finditer(text):
        key, value = match.group("key"), match.group("value")
        if _PUBLIC_KEYS.search(key) or not high_entropy(value):
            continue
        yield Finding(match.start("value"), match.end("value"), "config_entropy")


def high_entropy(value: str, limit: float = CONFIG_ENTROPY_LIMIT) -> bool:
    """Random-looking: long enough, two or more character classes, no dotted words (hosts), not a UUID."""
    if len(value) < MIN_CONFIG_VALUE_CHARS or _UUID.match(value):
        return False
    classes = sum((any(c.islower() for c in value), any(c.isupper() for c in value), any(c.isdigit() for c in value)))
    if classes < 2 or re.search(r"[a-z]{2,}\.[a-z]{2,}", value):
        return False
    return shannon_entropy(value) > limit


def shannon_entropy(value: str) -> float:
    counts = Counter(value)
    return -sum(n / len(value) * math.log2(n / len(value)) for n in counts.values())


# --- an AWS secret access key near its key id ---------------------------------------------------------------------

AWS_PAIR_WINDOW_CHARS = 600  # how far from an AWS key id a 40-character secret key is looked for
_AWS_ID = re.compile(rf"(?<![A-Za-z0-9])(?:{'|'.join(AWS_ACCESS_KEY_ID_PREFIXES)})[0-9A-Z]{{16}}(?![A-Za-z0-9])")
_AWS_SECRET = re.compile(r"(?<![A-Za-z0-9/+])[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=])")


def aws_pair_findings(text: str) -> Iterator[Finding]:
    """A 40-character base64-ish run with mixed case and digits within AWS_PAIR_WINDOW_CHARS of an AWS key id."""
    if not any(prefix in text for prefix in AWS_ACCESS_KEY_ID_PREFIXES):
        return
    for key_id in _AWS_ID.finditer(text):
        start = max(0, key_id.start() - AWS_PAIR_WINDOW_CHARS)
        for match in _AWS_SECRET.finditer(text, start, key_id.end() + AWS_PAIR_WINDOW_CHARS):
            value = match.group()
            if any(c.islower() for c in value) and any(c.isupper() for c in value) and any(c.isdigit() for c in value):
                yield Finding(match.start(), match.end(), "aws_secret_access_key")


# --- string literals joined by the language -----------------------------------------------------------------------

# A one-line string literal; a run of them with only blanks, `+`, `.` (PHP) or a line continuation between them is
# one string to the language (`"sk_live_abc" "def"`, `'ab' + 'cd'`).
_LITERAL_TEXT = r"\"([^\"\\\n]*)\"|'([^'\\\n]*)'"
_JOINER_TEXT = r"[ \t]*(?:[+.][ \t]*)?(?:\\?\r?\n[ \t]*(?:[+.][ \t]*)?)?"
_LITERAL = re.compile(_LITERAL_TEXT)
_ANY_LITERAL = r"\"[^\"\\\n]*\"|'[^'\\\n]*'"
_RUN = re.compile(f"(?:{_ANY_LITERAL})(?:{_JOINER_TEXT}(?:{_ANY_LITERAL}))+")


def joined_literal_findings(text: str) -> Iterator[Finding]:
    """Known formats in adjacent string literals joined, mapped back to the characters of the original text."""
    for run in _RUN.finditer(text):
        yield from _joined(text, list(_LITERAL.finditer(text, run.start(), run.end())))


def _joined(text: str, run: list[re.Match[str]]) -> Iterator[Finding]:
    if len(run) < 2:
        return
    pieces, offsets = [], []
    for literal in run:
        group = 1 if literal.group(1) is not None else 2
        pieces.append(literal.group(group))
        offsets += range(literal.start(group), literal.end(group))
    joined = "".join(pieces)
    for found in known_format_findings(joined):
        start, end = offsets[found.start], offsets[found.end - 1] + 1
        if any(literal.start() < start < literal.end() < end for literal in run):  # crosses a joint
            yield Finding(start, end, "split_" + found.kind)


# --- hex and base64 payloads that decode to a known format ---------------------------------------------------------

MIN_HEX_DIGITS = 32  # 16 bytes: the shortest known-format token is longer
MIN_BASE64_CHARS = 20
# A hex run is also a base64-alphabet run, so one scan finds both; hex bytes split by blanks (`bytes.fromhex` takes
# them) are looked for only in text that calls `fromhex`, as a second scan costs as much as the first.
_ENCODED_RUN = re.compile(r"[A-Za-z0-9+/_-]{20,}={0,2}")
_SPACED_HEX = re.compile(r"(?<![0-9A-Za-z])(?:[0-9A-Fa-f]{2} ){15,}[0-9A-Fa-f]{2}(?![0-9A-Za-z])")
_HEX = re.compile(r"(?:[0-9A-Fa-f]{2})+")
_PRINTABLE = re.compile(rb"[\x20-\x7e\t\r\n]")


def encoded_findings(text: str) -> Iterator[Finding]:
    """Hex and base64 runs whose decoded bytes hold a known-format secret (the whole run is the secret)."""
    for match in _ENCODED_RUN.finditer(text):
        value = match.group()
        if len(value) >= MIN_HEX_DIGITS and _HEX.fullmatch(value):
            yield from _decoded(match.start(), match.end(), bytes.fromhex(value), "hex")
        elif _mixed(value):
            data = _b64decode(value)
            if data:
                yield from _decoded(match.start(), match.end(), data, "base64")
    if "fromhex(" in text:
        for match in _SPACED_HEX.finditer(text):
            yield from _decoded(match.start(), match.end(), bytes.fromhex(match.group()), "hex")


def _mixed(value: str) -> bool:
    """Base64 of text has upper and lower case letters and digits; identifiers and words mostly do not."""
    return not value.islower() and not value.isupper() and any(c.isdigit() for c in value)


def _b64decode(value: str) -> bytes | None:
    body = value.rstrip("=")
    padded = body + "=" * (-len(body) % 4)
    try:
        if "-" in body or "_" in body:
            return base64.urlsafe_b64decode(padded)
        return base64.b64decode(padded, validate=True)
    except (binascii.Error, ValueError):
        return None


def _decoded(start: int, end: int, data: bytes, encoding: str) -> Iterator[Finding]:
    if len(_PRINTABLE.findall(data)) < 0.9 * len(data):
        return
    decoded = data.decode("ascii", errors="replace")
    for found in known_format_findings(decoded):
        yield Finding(start, end, f"{encoding}_{found.kind}")
        return


def context_findings(text: str, lowered: str, language: str) -> Iterator[Finding]:
    """Every rule of this module."""
    yield from prose_findings(text, lowered, language)
    yield from config_findings(text, language)
    yield from aws_pair_findings(text)
    yield from joined_literal_findings(text)
    yield from encoded_findings(text)
