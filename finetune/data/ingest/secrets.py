"""Replace credentials in text with a placeholder before a model can memorise them.

A model fine-tuned on a repository will happily complete `AWS_SECRET_ACCESS_KEY = "` with the real key it saw in
training. Three layers find secrets: detect-secrets' plugins (run in memory, line by line, with their false-positive
filters); known formats (`secret_shapes`: private keys, AWS/GitHub/Slack/Stripe/... token shapes) and `key = value`
assignments in code and configuration files; and rules for what only the surroundings or an encoding give away
(`secret_rules`: credentials in prose, random-looking config values, an AWS secret next to its key id, split string
literals, hex/base64 payloads). Every hit becomes a character span; overlapping spans merge into one, so each secret
is replaced (and counted) once, under its most specific kind, and every character outside it is kept as it was.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from functools import lru_cache

from detect_secrets.core.plugins.util import get_mapping_from_secret_type_to_class
from detect_secrets.filters import heuristic
from detect_secrets.plugins.base import BasePlugin
from detect_secrets.plugins.high_entropy_strings import HighEntropyStringsPlugin

from finetune.data.ingest.languages import detect_language
from finetune.data.ingest.secret_rules import context_findings
from finetune.data.ingest.secret_shapes import Finding, known_format_findings, plausible_value

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
# is the slowest plugin; this module's assignment patterns and secret_rules' prose rule cover the same ground with
# stricter keys and values.
DISABLED_PLUGINS = frozenset({"IPPublicDetector", "KeywordDetector"})
# detect-secrets' `vendor_key = value` detectors for Cloudant, IBM Cloud and SoftLayer took two thirds of its scan
# time on the stdlib; each needs a value of at least 24 word characters, so they only see lines with such a run.
LONG_VALUE_PLUGINS = frozenset({"CloudantDetector", "IbmCloudIamDetector", "IbmCosHmacDetector", "SoftlayerDetector"})
_LONG_RUN = re.compile(r"[A-Za-z0-9_-]{24}")
# Cheap tests that a plugin's patterns cannot match without (read from each plugin's regexes): the slowest plugins
# scan every position of the text, so skipping texts that lack their fixed part keeps the scan near 3 MB/s.
_PLUGIN_NEEDS: dict[str, Callable[[str, str], bool]] = {
    "ArtifactoryDetector": lambda text, _: "AKC" in text or _ARTIFACTORY_PASSWORD.search(text) is not None,
    "MailchimpDetector": lambda text, _: "-us" in text,
    "TelegramBotTokenDetector": lambda text, _: _TELEGRAM.search(text) is not None,
    "SlackDetector": lambda text, lowered: "xox" in lowered or "hooks.slack.com" in text,
    "AWSKeyDetector": lambda text, lowered: "aws" in lowered or any(p in text for p in _AWS_PREFIXES),
    "StripeDetector": lambda text, _: "k_live_" in text,
}
_ARTIFACTORY_PASSWORD = re.compile(r"AP[0-9A-F]")
_TELEGRAM = re.compile(r"[0-9]{8}:")
_AWS_PREFIXES = ("A3T", "ABIA", "ACCA", "AKIA", "ASIA")
# Lines longer than this are not given to detect-secrets (minified data, not credentials; some of its regexes
# backtrack badly on them). This module's own patterns still see them.
MAX_SCAN_LINE_CHARS = 4000

# A value assigned to a secret-looking key must be at least this long (shorter ones are flags and examples).
MIN_ASSIGNED_CHARS = 4
# Languages whose values need no quotes (`PASSWORD=hunter2`, `password: hunter2`); elsewhere only quoted string
# literals count, so that `password = get_password()` in code is left alone.
UNQUOTED_VALUE_LANGUAGES = frozenset(
    {"dotenv", "ini", "properties", "yaml", "toml", "shell", "dockerfile", "makefile"}
)
# When spans of several detectors merge, the span is counted under the most specific kind: a named format first,
# then a rule that needed context, then a bare assignment, then a high-entropy string.
_GENERIC_KINDS = {"assignment": 1, "prose_credential": 2, "config_entropy": 2, **dict.fromkeys(HIGH_ENTROPY_PLUGINS, 3)}


def scrub_secrets(text: str, path: str, *, placeholder: str | None = None) -> tuple[str, int]:
    """`text` with every secret replaced by SECRET_PLACEHOLDER, and how many were replaced.

    `path` picks the file type (values in .env/YAML/INI files need no quotes). Overlapping hits count once.
    """
    spans = merge_spans(find_secrets(text, path))
    return replace_spans(text, spans, SECRET_PLACEHOLDER if placeholder is None else placeholder), len(spans)


def find_secrets(text: str, path: str) -> list[Finding]:
    """Every hit of every detector, unmerged (so a caller can see which detector found what)."""
    language = detect_language(path) or ("toml" if path.endswith(".toml") else "")  # the walker skips TOML files
    lowered = text.lower()  # for the cheap substring tests that let most files skip most regexes
    findings = [*known_format_findings(text, lowered)]
    findings += _assignment_findings(text, lowered, unquoted=language in UNQUOTED_VALUE_LANGUAGES)
    findings += context_findings(text, lowered, language)
    findings += _detect_secrets_findings(text, lowered, path)
    return [finding for finding in findings if not text.startswith(SECRET_PLACEHOLDER, finding.start)]


def merge_findings(findings: Iterable[Finding]) -> list[Finding]:
    """Sorted, non-overlapping findings covering every finding, each under its most specific kind."""
    merged: list[Finding] = []
    for found in sorted(findings, key=lambda f: (f.start, f.end)):
        if found.end <= found.start:
            continue
        if merged and found.start < merged[-1].end:
            last = merged[-1]
            kind = min(last.kind, found.kind, key=lambda kind: _GENERIC_KINDS.get(kind, 0))
            merged[-1] = Finding(last.start, max(last.end, found.end), kind)
        else:
            merged.append(found)
    return merged


def merge_spans(findings: Iterable[Finding]) -> list[tuple[int, int]]:
    """Sorted, non-overlapping (start, end) spans covering every finding."""
    return [(found.start, found.end) for found in merge_findings(findings)]


def replace_spans(text: str, spans: list[tuple[int, int]], placeholder: str) -> str:
    """`text` with each (sorted, disjoint) span replaced; everything between spans is copied unchanged."""
    pieces: list[str] = []
    position = 0
    for start, end in spans:
        pieces += [text[position:start], placeholder]
        position = end
    pieces.append(text[position:])
    return "".join(pieces)


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
# `user, password = "wile", "coyote"`: the first literal belongs to another name, so the pair is left alone.
_TUPLE_REST = re.compile(r"[ \t]*,[ \t]*[bBrRuU]?[\"']")


def _assignment_findings(text: str, lowered: str, *, unquoted: bool) -> Iterator[Finding]:
    pattern = _ASSIGNMENT_ANY if unquoted else _ASSIGNMENT_QUOTED
    for match in _assignments(pattern, text, lowered):
        group = next(name for name, value in match.groupdict().items() if value is not None)
        value = match.group(group)
        if _TUPLE_REST.match(text, match.end()):
            continue
        if len(value) >= MIN_ASSIGNED_CHARS and plausible_value(value):
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


def _detect_secrets_findings(text: str, lowered: str, path: str) -> Iterator[Finding]:
    """Each plugin runs on the lines that hold one of its candidates in the whole text (most files have none)."""
    lines = _lines(text)
    long_runs = "\n".join(line for _, line in lines if _LONG_RUN.search(line))
    for plugin in detect_secrets_plugins():
        name = type(plugin).__name__
        if name in _PLUGIN_NEEDS and not _PLUGIN_NEEDS[name](text, lowered):
            continue
        candidates = _candidates(plugin, long_runs if name in LONG_VALUE_PLUGINS else text)
        if not candidates:
            continue
        needs_context = name in HIGH_ENTROPY_PLUGINS
        for offset, line in lines:
            if not any(candidate in line for candidate in candidates):
                continue
            if needs_context and not CREDENTIAL_CONTEXT.search(line):
                continue
            if not heuristic.is_indirect_reference(line):
                for value in _plugin_values(plugin, path, line):
                    for start, end in _locate(value, line):
                        yield Finding(offset + start, offset + end, name)


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
