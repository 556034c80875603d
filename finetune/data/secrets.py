"""Replace credentials in source text with a placeholder before a model can memorise them.

A model fine-tuned on a repository will happily complete `AWS_SECRET_ACCESS_KEY = "` with the real key it saw in
training. Two layers find secrets: detect-secrets' plugins (run in memory, line by line, with their false-positive
filters) and this module's own patterns for multi-line private keys, well-known token shapes and `key = value`
assignments in code and configuration files. Every hit becomes a character span; overlapping spans from both layers
merge into one, so each secret is replaced (and counted) once and every character outside it is kept as it was.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache

from detect_secrets.core.plugins.util import get_mapping_from_secret_type_to_class
from detect_secrets.filters import heuristic
from detect_secrets.plugins.base import BasePlugin
from detect_secrets.plugins.high_entropy_strings import HighEntropyStringsPlugin

from finetune.data.languages import detect_language

SECRET_PLACEHOLDER = "<SECRET>"

# detect-secrets' high-entropy plugins flag a quoted string whose Shannon entropy (bits per character) is above a
# limit. A random secret scores about 4.6 (32 base64 characters) to 4.8 (40), or 3.6 (32 hex digits), so the
# defaults below catch nearly all of them; but on their own they also flag checksums, test vectors and alphabets
# (231 strings in the Python stdlib and its tests, none a secret). So a high-entropy string counts only on a line
# that also names a credential (`client_secret = "..."`, `check(token, "...")`): 2 stdlib test vectors are left;
# secrets with a known shape (AWS, GitHub, Slack, JWT ...) are found without that context.
BASE64_ENTROPY_LIMIT = 4.5
HEX_ENTROPY_LIMIT = 3.0
HIGH_ENTROPY_PLUGINS = frozenset({"Base64HighEntropyString", "HexHighEntropyString"})
CREDENTIAL_CONTEXT = re.compile(r"key|secret|token|pass|pwd|auth|credential|bearer", re.IGNORECASE)
# detect-secrets' plugins that are left out. A public IP address is not a credential. KeywordDetector takes any
# identifier that merely contains a keyword (`PASSWORD_PROMPT`, `'MODULE_PWD_STATE': 'yes'` in the stdlib), and it
# is the slowest plugin; this module's assignment patterns cover the same ground with stricter keys.
DISABLED_PLUGINS = frozenset({"IPPublicDetector", "KeywordDetector"})
# detect-secrets' `vendor_key = value` detectors for Cloudant, IBM Cloud and SoftLayer took two thirds of its scan
# time on the stdlib; each needs a value of at least 24 word characters, so they only see lines with such a run.
LONG_VALUE_PLUGINS = frozenset({"CloudantDetector", "IbmCloudIamDetector", "IbmCosHmacDetector", "SoftlayerDetector"})
_LONG_RUN = re.compile(r"[A-Za-z0-9_-]{24}")
# Lines longer than this are not given to detect-secrets (minified data, not credentials; some of its regexes
# backtrack badly on them). This module's own patterns still see them.
MAX_SCAN_LINE_CHARS = 4000

# A value assigned to a secret-looking key must be at least this long (shorter ones are flags and examples).
MIN_ASSIGNED_CHARS = 4
# Languages whose values need no quotes (`PASSWORD=hunter2`, `password: hunter2`); elsewhere only quoted string
# literals count, so that `password = get_password()` in code is left alone.
UNQUOTED_VALUE_LANGUAGES = frozenset({"dotenv", "ini", "properties", "yaml", "shell", "dockerfile", "makefile"})


@dataclass(frozen=True)
class Finding:
    """One secret's character span in the text and the detector that found it (`kind`)."""

    start: int
    end: int
    kind: str


def scrub_secrets(text: str, path: str, *, placeholder: str | None = None) -> tuple[str, int]:
    """`text` with every secret replaced by SECRET_PLACEHOLDER, and how many were replaced.

    `path` picks the file type (values in .env/YAML/INI files need no quotes). Overlapping hits count once.
    """
    spans = merge_spans(find_secrets(text, path))
    return replace_spans(text, spans, SECRET_PLACEHOLDER if placeholder is None else placeholder), len(spans)


def find_secrets(text: str, path: str) -> list[Finding]:
    """Every hit of every detector, unmerged (so a caller can see which detector found what)."""
    language = detect_language(path) or ""
    lowered = text.lower()  # for the cheap substring tests that let most files skip most regexes
    findings = [*_pem_findings(text), *_shape_findings(text, lowered)]
    findings += _assignment_findings(text, lowered, unquoted=language in UNQUOTED_VALUE_LANGUAGES)
    findings += _detect_secrets_findings(text, path)
    return [finding for finding in findings if text[finding.start : finding.end] != SECRET_PLACEHOLDER]


def merge_spans(findings: Iterable[Finding]) -> list[tuple[int, int]]:
    """Sorted, non-overlapping (start, end) spans covering every finding."""
    merged: list[tuple[int, int]] = []
    for start, end in sorted((finding.start, finding.end) for finding in findings if finding.end > finding.start):
        if merged and start < merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def replace_spans(text: str, spans: list[tuple[int, int]], placeholder: str) -> str:
    """`text` with each (sorted, disjoint) span replaced; everything between spans is copied unchanged."""
    pieces: list[str] = []
    position = 0
    for start, end in spans:
        pieces += [text[position:start], placeholder]
        position = end
    pieces.append(text[position:])
    return "".join(pieces)


# --- private keys -------------------------------------------------------------------------------------------------

# A whole PEM/PGP/OpenSSH private key block, also inside a string literal with `\n` escapes (a JSON service account).
_PEM_BLOCK = re.compile(
    r"-----BEGIN (?P<kind>[A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?)-----.*?-----END (?P=kind)-----", re.DOTALL
)
# A truncated block (no END line): the header and the base64 lines that follow it.
_PEM_HEADER = re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----(?:[ \t]*\r?\n[ \t]*[A-Za-z0-9+/=]{16,})*")


def _pem_findings(text: str) -> Iterator[Finding]:
    if "PRIVATE KEY" not in text:
        return
    for pattern in (_PEM_BLOCK, _PEM_HEADER):
        for match in pattern.finditer(text):
            yield Finding(match.start(), match.end(), "private_key")


# --- well-known token shapes --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Shape:
    """A token shape; `needles` are lower-case strings one of which the text must hold (a cheap test that lets
    most files skip the regex). The `secret` group, when the regex has one, is the part that is replaced."""

    kind: str
    needles: tuple[str, ...]
    regex: re.Pattern[str]


_B = r"(?<![A-Za-z0-9_])"  # the token starts a word ...
_E = r"(?![A-Za-z0-9_])"  # ... and ends one
_AWS_ID_PREFIXES = ("AKIA", "ASIA", "ABIA", "ACCA", "AGPA", "AIDA", "AIPA", "AROA", "ANPA", "ANVA", "APKA")
_SHAPES = (
    _Shape(
        "aws_access_key_id",
        tuple(prefix.lower() for prefix in _AWS_ID_PREFIXES),
        re.compile(_B + f"(?:{'|'.join(_AWS_ID_PREFIXES)})[0-9A-Z]{{16}}" + _E),
    ),
    _Shape(
        "aws_secret_access_key",
        ("aws",),
        re.compile(
            r"aws_?secret(?:_?access)?_?key[\"']?\s*(?:=|:|:=|=>)\s*[\"']?(?P<secret>[A-Za-z0-9/+]{40})(?![A-Za-z0-9/+])",
            re.IGNORECASE,
        ),
    ),
    _Shape(
        "github_token",
        ("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"),
        re.compile(_B + r"(?:gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{22,255})" + _E),
    ),
    _Shape("slack_token", ("xox",), re.compile(_B + r"xox[abposr]-[A-Za-z0-9-]{10,250}" + _E)),
    _Shape("google_api_key", ("aiza",), re.compile(_B + r"AIza[0-9A-Za-z_-]{35}(?![A-Za-z0-9_-])")),
    # OpenAI (sk-..., sk-proj-...) and Anthropic (sk-ant-...) keys: at least 20 characters with a digit in them.
    _Shape(
        "sk_api_key",
        ("sk-",),
        re.compile(_B + r"sk-(?=[A-Za-z0-9_-]{0,200}[0-9])[A-Za-z0-9_-]{20,250}(?![A-Za-z0-9_-])"),
    ),
    _Shape(
        "stripe_key",
        ("_live_", "_test_", "whsec_"),
        re.compile(_B + r"(?:(?:sk|rk)_(?:live|test)_[0-9A-Za-z]{10,250}|whsec_[A-Za-z0-9]{20,250})" + _E),
    ),
    _Shape(
        "jwt", ("eyj",), re.compile(_B + r"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*(?![A-Za-z0-9_-])")
    ),
    # `Authorization: Bearer <token>` (at least 16 characters, so prose about "bearer tokens" is left alone).
    _Shape("bearer_token", ("bearer",), re.compile(r"\b[Bb]earer[ \t]+(?P<secret>[A-Za-z0-9._~+/-]{16,}=*)")),
    # scheme://user:password@host: only the password is replaced, so the model still learns the URL's shape.
    _Shape(
        "url_password",
        ("://",),
        re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]{1,30}://[^\s:@/'\"`<>]*:(?P<secret>[^\s@/'\"`<>]+)@"),
    ),
)


def _shape_findings(text: str, lowered: str) -> Iterator[Finding]:
    for shape in _SHAPES:
        if not any(needle in lowered for needle in shape.needles):
            continue
        group = "secret" if "secret" in shape.regex.groupindex else 0
        for match in shape.regex.finditer(text):
            if group == 0 or _plausible_value(match.group(group)):
                yield Finding(match.start(group), match.end(group), shape.kind)


# --- `secret_key = value` assignments -----------------------------------------------------------------------------

# A key that names a credential ends in one of these words (whatever comes before: `DB_PASSWORD`, `db.password`,
# `x-api-key`); `password_hash`, `token_type` and `tokens` do not, so they are left alone.
_SECRET_KEY = (
    r"(?:pass(?:word|wd|phrase)|secret(?:[_-]?key)?|token|credentials?|a(?:pi[_-]?key|pikey|ccess[_-]?key|uth[_-]?key)"
    r"|(?:private|client|master|signing|encryption)[_-]?key)"
)
# Where a key can start; found in the lower-cased text first because a case-insensitive alternation is slow.
_KEY_STARTS = re.compile(r"(?=pass|secret|token|credential|api|access|auth|private|client|master|signing|encryption)")
# `=`, `:`, `:=`, `=>`, and a type annotation (`name: str = ...`); never across a line break.
_ASSIGN = r"[\"'\]]{0,2}[ \t]*(?::[ \t]*[\w.\[\], |]+?[ \t]*=|:=|=>|=|:)[ \t]*"
_QUOTED = r"[bBrRuU]?(?:\"(?P<dq>[^\"\s\\]+)\"|'(?P<sq>[^'\s\\]+)')"
_UNQUOTED = r"(?P<bare>[^\s'\"]*[^\s'\",;])"
_ASSIGNMENT_QUOTED = re.compile(_SECRET_KEY + _ASSIGN + _QUOTED, re.IGNORECASE)
_ASSIGNMENT_ANY = re.compile(_SECRET_KEY + _ASSIGN + f"(?:{_QUOTED}|{_UNQUOTED})", re.IGNORECASE)
# Values that are references, templates or masks, not secrets: ${VAR}, $VAR, {{ var }}, <your-key>, [PAD],
# `%s:%s` and `{user}:{password}` format strings, `****`, `xxxx`, `...`.
_TEMPLATED = re.compile(r"^(?:\$.*|<.*>|\[.*\]|.*\{[\w.]*\}.*|.*\{\{.*|.*%[sdr(].*|\*+|x+|\.\.\.)$", re.IGNORECASE)
# `user, password = "wile", "coyote"`: the first literal belongs to another name, so the pair is left alone.
_TUPLE_REST = re.compile(r"[ \t]*,[ \t]*[bBrRuU]?[\"']")
_WORD_CHAR = re.compile(r"[A-Za-z0-9]")


def _assignment_findings(text: str, lowered: str, *, unquoted: bool) -> Iterator[Finding]:
    pattern = _ASSIGNMENT_ANY if unquoted else _ASSIGNMENT_QUOTED
    for match in _assignments(pattern, text, lowered):
        group = next(name for name, value in match.groupdict().items() if value is not None)
        value = match.group(group)
        if _TUPLE_REST.match(text, match.end()):
            continue
        if len(value) >= MIN_ASSIGNED_CHARS and _plausible_value(value):
            yield Finding(match.start(group), match.end(group), "assignment")


def _assignments(pattern: re.Pattern[str], text: str, lowered: str) -> Iterator[re.Match[str]]:
    """`pattern`'s matches, tried only where a key word starts (several may report one value; spans merge)."""
    if len(lowered) != len(text):  # a character whose lower case is longer shifts the offsets: the slow way
        yield from pattern.finditer(text)
        return
    for start in _KEY_STARTS.finditer(lowered):
        match = pattern.match(text, start.start())
        if match:
            yield match


def _plausible_value(value: str) -> bool:
    """Whether an assigned value can be a secret: not a template, a reference, a masked value or the placeholder."""
    return value != SECRET_PLACEHOLDER and bool(_WORD_CHAR.search(value)) and not _TEMPLATED.match(value)


# --- detect-secrets -----------------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def detect_secrets_plugins() -> tuple[BasePlugin, ...]:
    """detect-secrets' default plugin set (less DISABLED_PLUGINS), with this module's entropy limits."""
    limits = {"Base64HighEntropyString": BASE64_ENTROPY_LIMIT, "HexHighEntropyString": HEX_ENTROPY_LIMIT}
    plugins: list[BasePlugin] = []
    for plugin_class in get_mapping_from_secret_type_to_class().values():
        name = plugin_class.__name__
        if name in DISABLED_PLUGINS:
            continue
        plugins.append(plugin_class(limit=limits[name]) if name in limits else plugin_class())
    return tuple(sorted(plugins, key=lambda plugin: type(plugin).__name__))


def _detect_secrets_findings(text: str, path: str) -> Iterator[Finding]:
    """Each plugin runs on the lines that hold one of its candidates in the whole text (most files have none)."""
    lines = _lines(text)
    long_runs = "\n".join(line for _, line in lines if _LONG_RUN.search(line))
    for plugin in detect_secrets_plugins():
        candidates = _candidates(plugin, long_runs if type(plugin).__name__ in LONG_VALUE_PLUGINS else text)
        if not candidates:
            continue
        needs_context = type(plugin).__name__ in HIGH_ENTROPY_PLUGINS
        for offset, line in lines:
            if not any(candidate in line for candidate in candidates):
                continue
            if needs_context and not CREDENTIAL_CONTEXT.search(line):
                continue
            if not heuristic.is_indirect_reference(line):
                for value in _plugin_values(plugin, path, line):
                    for start, end in _locate(value, line):
                        yield Finding(offset + start, offset + end, type(plugin).__name__)


def _lines(text: str) -> list[tuple[int, str]]:
    """(offset, line without its line break and trailing blanks) for the lines detect-secrets should see."""
    lines = []
    offset = 0
    for raw_line in text.splitlines(keepends=True):
        line = raw_line.rstrip()
        if 6 <= len(line) <= MAX_SCAN_LINE_CHARS:
            lines.append((offset, line))
        offset += len(raw_line)
    return lines


def _candidates(plugin: BasePlugin, text: str) -> set[str]:
    """What `plugin` finds in the whole text: a superset of what it finds line by line, as its patterns do not
    cross line breaks (high-entropy strings are quoted runs without blanks), so a line without one is skipped."""
    values = set(plugin.analyze_string(text))
    if isinstance(plugin, HighEntropyStringsPlugin):
        values = {value for value in values if _entropy_above_limit(plugin, value)}
    return values


def _entropy_above_limit(plugin: HighEntropyStringsPlugin, value: str) -> bool:
    """The plugin's entropy test; entropy is at most log2(distinct characters), so most strings need no count."""
    if len(set(value)) <= 2**plugin.entropy_limit:
        return False
    return plugin.calculate_shannon_entropy(value) > plugin.entropy_limit


def _plugin_values(plugin: BasePlugin, path: str, line: str) -> set[str]:
    """The secret values `plugin` finds in `line` that pass detect-secrets' own false-positive filters."""
    values = {secret.secret_value for secret in plugin.analyze_line(filename=path, line=line, line_number=0)}
    return {value for value in values if value and not _filtered(value, line, plugin)}


def _filtered(value: str, line: str, plugin: BasePlugin) -> bool:
    """detect-secrets' default heuristic filters that look at the secret and its line, and an alphabet test."""
    return (
        _is_alphabet(value)
        or heuristic.is_sequential_string(value)
        or heuristic.is_potential_uuid(value)
        or heuristic.is_likely_id_string(value, line, plugin)
        or heuristic.is_templated_secret(value)
        or heuristic.is_prefixed_with_dollar_sign(value)
        or heuristic.is_not_alphanumeric_string(value)
    )


def _is_alphabet(value: str) -> bool:
    """Mostly runs of consecutive characters ('ABC...XYZ0123456789_', '1234567890ABCDEF'): a charset, not a key."""
    steps = sum(ord(b) - ord(a) == 1 for a, b in zip(value[:-1], value[1:], strict=True))
    return steps >= (len(value) - 1) / 2


def _locate(value: str, line: str) -> Iterator[tuple[int, int]]:
    """Where `value` stands in `line` as a whole word (so `pass` is never cut out of `password`)."""
    pattern = re.compile(r"(?<![A-Za-z0-9])" + re.escape(value) + r"(?![A-Za-z0-9])")
    for match in pattern.finditer(line):
        yield match.start(), match.end()
