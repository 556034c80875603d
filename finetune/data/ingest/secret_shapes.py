"""Secrets with a known format: private key blocks and token shapes (AWS, GitHub, Slack, Stripe, JWT ...).

These need no context: the shape alone says "credential". They are also what the other rules re-run on text they
rebuild (adjacent string literals joined, hex and base64 payloads decoded), so they live in their own module.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class Finding:
    """One secret's character span in the text and the detector that found it (`kind`)."""

    start: int
    end: int
    kind: str


def known_format_findings(text: str, lowered: str | None = None) -> Iterator[Finding]:
    """Private key blocks and well-known token shapes in `text` (`lowered` = text.lower(), when the caller has it)."""
    yield from pem_findings(text)
    yield from shape_findings(text, text.lower() if lowered is None else lowered)


# --- private keys -------------------------------------------------------------------------------------------------

# A whole PEM/PGP/OpenSSH private key block, also inside a string literal with `\n` escapes (a JSON service account).
_PEM_BLOCK = re.compile(
    r"-----BEGIN (?P<kind>[A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?)-----.*?-----END (?P=kind)-----", re.DOTALL
)
# A truncated block (no END line): the header and the base64 lines that follow it.
_PEM_HEADER = re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----(?:[ \t]*\r?\n[ \t]*[A-Za-z0-9+/=]{16,})*")


def pem_findings(text: str) -> Iterator[Finding]:
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
# Access key ids (long-term, STS, ...) come with a secret access key; the other unique ids (users, roles, groups,
# policies ...) have none, but still name an account's principals.
AWS_ACCESS_KEY_ID_PREFIXES = ("AKIA", "ASIA", "ABIA", "ACCA")
_AWS_ID_PREFIXES = (*AWS_ACCESS_KEY_ID_PREFIXES, "AGPA", "AIDA", "AIPA", "AROA", "ANPA", "ANVA", "APKA")
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
    # Prefixed tokens of other services (the prefixes gitleaks and trufflehog rules key on).
    _Shape("huggingface_token", ("hf_",), re.compile(_B + r"hf_[A-Za-z0-9]{34}" + _E)),
    _Shape("gitlab_token", ("glpat-", "glptt-", "gldt-"), re.compile(_B + r"gl(?:pat|ptt|dt)-[A-Za-z0-9_-]{20,64}" + _E)),
    _Shape("npm_token", ("npm_",), re.compile(_B + r"npm_[A-Za-z0-9]{36}" + _E)),
    _Shape("pypi_token", ("pypi-",), re.compile(_B + r"pypi-AgE[A-Za-z0-9_-]{50,}" + _E)),
    _Shape("sendgrid_key", ("sg.",), re.compile(_B + r"SG\.[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{43}" + _E)),
    _Shape("digitalocean_token", ("dop_v1_", "doo_v1_"), re.compile(_B + r"do[op]_v1_[a-f0-9]{64}" + _E)),
    _Shape("shopify_token", ("shpat_", "shpca_", "shppa_", "shpss_"), re.compile(_B + r"shp(?:at|ca|pa|ss)_[a-fA-F0-9]{32}" + _E)),
    _Shape("google_oauth_secret", ("gocspx-",), re.compile(_B + r"GOCSPX-[A-Za-z0-9_-]{28}" + _E)),
    _Shape("age_secret_key", ("age-secret-key-",), re.compile(_B + r"AGE-SECRET-KEY-1[0-9A-Z]{58}" + _E)),
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


def shape_findings(text: str, lowered: str) -> Iterator[Finding]:
    for shape in _SHAPES:
        if not any(needle in lowered for needle in shape.needles):
            continue
        group = "secret" if "secret" in shape.regex.groupindex else 0
        for match in shape.regex.finditer(text):
            if group == 0 or plausible_value(match.group(group)):
                yield Finding(match.start(group), match.end(group), shape.kind)


# Values that are references, templates or masks, not secrets: ${VAR}, $VAR, {{ var }}, <your-key>, [PAD],
# `%s:%s` and `{user}:{password}` format strings, `****`, `xxxx`, `...`.
_TEMPLATED = re.compile(r"^(?:\$.*|<.*>|\[.*\]|.*\{[\w.]*\}.*|.*\{\{.*|.*%[sdr(].*|\*+|x+|\.\.\.)$", re.IGNORECASE)
_WORD_CHAR = re.compile(r"[A-Za-z0-9]")


def plausible_value(value: str) -> bool:
    """Whether a value can be a secret: not a template, a reference, a masked value or a placeholder (`<SECRET>`)."""
    return bool(_WORD_CHAR.search(value)) and not _TEMPLATED.match(value)
