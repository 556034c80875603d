"""Ingest hygiene: secrets scrubbed exactly, duplicates dropped, generated files skipped, odd bytes counted."""

from __future__ import annotations

import base64
import json
import random
import re
import string
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from finetune.data.ingest import secrets as secrets_module
from finetune.data.ingest.dedup import exact_dedup, minhash, near_dedup, shingle_hashes
from finetune.data.ingest.secrets import SECRET_PLACEHOLDER, find_secrets, scrub_secrets
from finetune.data.ingest.walk import VENDORED_DIRS, IngestReport, generated_reason, walk_repository
from finetune.data.types import Document
from finetune.errors import UserError

SAMPLE_REPO = Path(__file__).resolve().parents[3] / "data" / "sample-repo"

# --- planted secrets ------------------------------------------------------------------------------------------------
# Built from a seeded generator so that no real-looking token is written literally in this file.
_RNG = random.Random(20240611)
_ALNUM = string.ascii_letters + string.digits
_B64 = _ALNUM + "+/"


def _rand(alphabet: str, size: int) -> str:
    return "".join(_RNG.choice(alphabet) for _ in range(size))


def _b64url(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


def _pem_lines() -> list[str]:
    return [_rand(_B64, 64) for _ in range(5)] + [_rand(_B64, 20) + "=="]


def _pem(kind: str) -> str:
    return f"-----BEGIN {kind}-----\n" + "\n".join(_pem_lines()) + f"\n-----END {kind}-----"


SECRETS: dict[str, str] = {
    "aws_id": "AKIA" + _rand(string.ascii_uppercase + string.digits, 16),
    "aws_secret": _rand(_B64, 40),
    "ghp": "ghp_" + _rand(_ALNUM, 36),
    "gho": "gho_" + _rand(_ALNUM, 36),
    "ghs": "ghs_" + _rand(_ALNUM, 36),
    "github_pat": "github_pat_" + _rand(_ALNUM, 22) + "_" + _rand(_ALNUM, 59),
    "slack_bot": f"xoxb-{_rand(string.digits, 12)}-{_rand(string.digits, 13)}-{_rand(_ALNUM, 24)}",
    "slack_user": f"xoxp-{_rand(string.digits, 12)}-{_rand(string.digits, 12)}-{_rand(_ALNUM, 32)}",
    "google": "AIza" + _rand(_ALNUM, 35),
    "json_google": "AIza" + _rand(_ALNUM, 35),
    "openai": "sk-proj-" + _rand(_ALNUM, 47) + "7",
    "anthropic": "sk-ant-api03-" + _rand(_ALNUM, 90) + "AA",
    "stripe_live": "sk_live_" + _rand(_ALNUM, 24),
    "stripe_test": "rk_test_" + _rand(_ALNUM, 24),
    "jwt": ".".join(
        [_b64url({"alg": "HS256", "typ": "JWT"}), _b64url({"sub": "42", "iat": 1700000000}), _rand(_ALNUM, 43)]
    ),
    "py_password": "hunter2-" + _rand(_ALNUM, 8),
    "py_api_key": _rand(_ALNUM, 32),
    "py_url_password": "s3cr3t-" + _rand(_ALNUM, 10),
    "pem_rsa": _pem("RSA PRIVATE KEY"),
    "pem_openssh": _pem("OPENSSH PRIVATE KEY"),
    "pem_json": "-----BEGIN PRIVATE KEY-----\\n" + "\\n".join(_pem_lines()) + "\\n-----END PRIVATE KEY-----",
    "env_password": "Tr0ub4dor&" + _rand(_ALNUM, 6),
    "env_session": _rand(_ALNUM, 32),
    "env_redis_password": _rand(_ALNUM, 20),
    "yaml_password": "yaml-" + _rand(_ALNUM, 12) + "!",
    "yaml_smtp_password": _rand(_ALNUM, 16),
    "json_client_secret": _rand(_ALNUM, 32),
    "ini_password": "ini-" + _rand(_ALNUM, 10),
    "ini_api_key": _rand("0123456789abcdef", 32),
}

# Each fixture file as a template: «name» stands for SECRETS[name]. The scrubbed file must equal the template with
# every «name» replaced by the placeholder, so every character outside a secret is checked, and so is the count.
TEMPLATES: dict[str, str] = {
    "app/settings.py": '''"""Service settings (a fixture: every secret here is fake)."""

import os

AWS_ACCESS_KEY_ID = "«aws_id»"
AWS_SECRET_ACCESS_KEY = "«aws_secret»"
GITHUB_TOKEN = "«ghp»"
SLACK_BOT = "«slack_bot»"
MAPS = '«google»'
OPENAI = "«openai»"
ANTHROPIC = "«anthropic»"
STRIPE = "«stripe_live»"
db_password = "«py_password»"
DATABASE_URL = "postgres://admin:«py_url_password»@db.internal:5432/app"
SIGNING_KEY = """«pem_rsa»"""

client = make_client(api_key="«py_api_key»", timeout=3)

# Not secrets: these must come out unchanged.
password_hash = hash_password(os.environ["RAW"])
PASSWORD_MIN_LENGTH = 12
tokens = tokenize("a b c")
eos_token = "</s>"
api_key = os.environ["API_KEY"]
DSN_TEMPLATE = f"postgres://{user}:{password}@{host}/db"
EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
HOMEPAGE = "https://example.com/docs?page=2"
secret_file = "/run/secrets/db"
''',
    ".env": """# Local development settings
DATABASE_PASSWORD=«env_password»
STRIPE_RESTRICTED=«stripe_test»
GH_APP_TOKEN=«ghs»
export SESSION_SECRET='«env_session»'
REDIS_URL=redis://:«env_redis_password»@localhost:6379/0
DEBUG=true
DATABASE_PASSWORD_FILE=/run/secrets/db
API_TOKEN=${VAULT_TOKEN}
""",
    "config.yaml": """database:
  host: db.internal
  user: app
  password: "«yaml_password»"
  password_env: DB_PASSWORD
slack:
  token: «slack_user»
github:
  token: «gho»
mail:
  url: smtp://mailer:«yaml_smtp_password»@smtp.example.com:587
  sender: noreply@example.com
jwt_example: «jwt»
""",
    "settings.json": """{
  "name": "demo-service",
  "api_key": "«json_google»",
  "github": {"token": "«github_pat»"},
  "auth": {"client_id": "demo-client", "client_secret": "«json_client_secret»"},
  "service_account": {"private_key": "«pem_json»\\n", "client_email": "svc@demo.iam.example.com"}
}
""",
    "app.ini": """[database]
host = db.internal
password = «ini_password»

[api]
api_key = «ini_api_key»
timeout = 30
""",
    "deploy/key.pem": "«pem_openssh»\n",
}
_MARKER = re.compile(r"«(\w+)»")


def _render(template: str, value: str | None = None) -> str:
    """The template with the real secrets (value None) or with `value` in place of each."""
    return _MARKER.sub(lambda match: SECRETS[match.group(1)] if value is None else value, template)


def _fragments(secret: str) -> list[str]:
    """The secret and, for a key block, each of its lines (none may survive on its own)."""
    return [secret, *(line for line in re.split(r"\n|\\n", secret) if len(line) >= 16 and "-----" not in line)]


@pytest.fixture
def secret_repo(tmp_path: Path) -> Path:
    for rel, template in TEMPLATES.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(_render(template), encoding="utf-8")
    return tmp_path


def test_every_secret_is_used_once() -> None:
    used = Counter(name for template in TEMPLATES.values() for name in _MARKER.findall(template))
    assert set(used) == set(SECRETS)
    assert set(used.values()) == {1}


@pytest.mark.parametrize("rel", sorted(TEMPLATES))
def test_scrub_replaces_exactly_the_secrets(secret_repo: Path, rel: str) -> None:
    text = (secret_repo / rel).read_text(encoding="utf-8")
    scrubbed, count = scrub_secrets(text, rel)
    assert scrubbed == _render(TEMPLATES[rel], SECRET_PLACEHOLDER)  # byte for byte outside the secrets
    assert count == len(_MARKER.findall(TEMPLATES[rel]))


def test_no_secret_survives_anywhere(secret_repo: Path) -> None:
    outputs = [scrub_secrets((secret_repo / rel).read_text(encoding="utf-8"), rel)[0] for rel in TEMPLATES]
    everything = "\n".join(outputs)
    leaked = [name for name, secret in SECRETS.items() for part in _fragments(secret) if part in everything]
    assert leaked == []


def test_scrubbing_is_idempotent(secret_repo: Path) -> None:
    for rel in TEMPLATES:
        scrubbed, _ = scrub_secrets((secret_repo / rel).read_text(encoding="utf-8"), rel)
        assert scrub_secrets(scrubbed, rel) == (scrubbed, 0)


def test_walker_keeps_config_files_for_the_scrubber(secret_repo: Path) -> None:
    docs, report = walk_repository(secret_repo)
    languages = {doc.path: doc.language for doc in docs}
    assert languages == {
        ".env": "dotenv",
        "app.ini": "ini",
        "app/settings.py": "python",
        "config.yaml": "yaml",
        "settings.json": "json",
    }
    assert report.skipped == Counter({"unknown_language": 1})  # deploy/key.pem never reaches training
    for doc in docs:
        assert scrub_secrets(doc.text, doc.path)[0] == _render(TEMPLATES[doc.path], SECRET_PLACEHOLDER)


def test_unquoted_values_count_only_in_config_files() -> None:
    line = "password = hunter2-plain\n"
    assert scrub_secrets(line, "settings.ini") == ("password = <SECRET>\n", 1)
    assert scrub_secrets(line, "module.py") == (line, 0)  # in code, a bare name is a variable, not a secret


def test_repeated_secret_on_one_line_is_counted_twice() -> None:
    token = SECRETS["ghp"]
    text = f"a = '{token}'; b = '{token}'\n"
    assert scrub_secrets(text, "x.py") == ("a = '<SECRET>'; b = '<SECRET>'\n", 2)


def test_truncated_private_key_is_scrubbed_to_its_last_base64_line() -> None:
    body = _pem_lines()
    text = "key:\n-----BEGIN EC PRIVATE KEY-----\n" + "\n".join(body) + "\n(truncated)\n"
    scrubbed, count = scrub_secrets(text, "notes.md")
    assert (scrubbed, count) == ("key:\n<SECRET>\n(truncated)\n", 1)


def test_placeholder_is_one_configurable_constant(monkeypatch: pytest.MonkeyPatch) -> None:
    text = f"token = '{SECRETS['ghp']}'\n"
    monkeypatch.setattr(secrets_module, "SECRET_PLACEHOLDER", "[REDACTED]")
    assert scrub_secrets(text, "x.py") == ("token = '[REDACTED]'\n", 1)
    assert scrub_secrets(text, "x.py", placeholder="") == ("token = ''\n", 1)


def test_high_entropy_strings_need_a_credential_on_the_line() -> None:
    value = _rand(_ALNUM, 40)
    assert scrub_secrets(f'check(digest, "{value}")\n', "x.py") == (f'check(digest, "{value}")\n', 0)
    assert scrub_secrets(f'check(token, "{value}")\n', "x.py") == ('check(token, "<SECRET>")\n', 1)


def test_bearer_tokens_in_headers() -> None:
    value = _rand(_ALNUM, 40)
    headers = f'headers["Authorization"] = "Bearer {value}"\n'
    assert scrub_secrets(headers, "x.py") == ('headers["Authorization"] = "Bearer <SECRET>"\n', 1)
    prose = "# Send the bearer token in the Authorization header.\n"
    assert scrub_secrets(prose, "x.py") == (prose, 0)


def test_findings_name_their_detector() -> None:
    text = f"AWS_ACCESS_KEY_ID = '{SECRETS['aws_id']}'\n"
    kinds = {finding.kind for finding in find_secrets(text, "x.py")}
    assert "aws_access_key_id" in kinds  # ours
    assert "AWSKeyDetector" in kinds  # detect-secrets'


# Letters that cannot spell a credential word, punctuation, and non-ASCII ("İ" lower-cases to two characters).
_SAFE_TEXT = st.text(alphabet="abcdefgh \n\t.,;=()[]{}#é中İ", max_size=200)
_SHAPED = ("ghp", "aws_id", "slack_bot", "jwt", "stripe_live", "openai")


@settings(max_examples=60, deadline=None, database=None)
@given(before=_SAFE_TEXT, after=_SAFE_TEXT, name=st.sampled_from(_SHAPED))
def test_text_around_a_secret_is_preserved(before: str, after: str, name: str) -> None:
    text = f"{before} {SECRETS[name]} {after}"
    assert scrub_secrets(text, "notes.txt") == (f"{before} {SECRET_PLACEHOLDER} {after}", 1)


# --- dedup ------------------------------------------------------------------------------------------------------------


def _module(seed: int, lines: int = 200) -> str:
    rng = random.Random(seed)
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "theta", "kappa", "lambda_", "sigma"]
    return "".join(
        f"value_{index} = compute({rng.randint(0, 10**6)}, {rng.choice(words)!r}, {rng.choice(words)})\n"
        for index in range(lines)
    )


def _edit_line(text: str, number: int) -> str:
    lines = text.splitlines(keepends=True)
    lines[number] = "changed = something_else(1, 2, 3)  # edited\n"
    return "".join(lines)


def test_exact_dedup_keeps_the_first_copy_in_order() -> None:
    a, b = _module(1), _module(2)
    docs = [Document("a.py", "python", a), Document("b.py", "python", b), Document("copy_of_a.py", "python", a)]
    docs.append(Document("b_again.py", "python", b))
    kept, removed = exact_dedup(docs)
    assert [doc.path for doc in kept] == ["a.py", "b.py"]
    assert removed == 2


def test_exact_dedup_keeps_texts_that_differ_by_one_character() -> None:
    docs = [Document("a.py", "python", "x = 1\n"), Document("b.py", "python", "x = 1\r\n")]
    assert exact_dedup(docs) == (docs, 0)


def test_near_duplicate_with_one_line_changed_is_removed() -> None:
    original = _module(1)
    edited = _edit_line(original, 100)
    assert edited != original
    assert minhash(original).jaccard(minhash(edited)) >= 0.85
    docs = [Document("orig.py", "python", original), Document("other.py", "python", _module(2))]
    docs.append(Document("edited.py", "python", edited))
    kept, removed = near_dedup(docs, threshold=0.85)
    assert [doc.path for doc in kept] == ["orig.py", "other.py"]
    assert removed == 1


def test_near_dedup_keeps_files_that_differ_a_lot() -> None:
    original = _module(1)
    half_changed = original
    for number in range(0, 200, 2):
        half_changed = _edit_line(half_changed, number)
    docs = [Document("orig.py", "python", original), Document("half.py", "python", half_changed)]
    kept, removed = near_dedup(docs)
    assert ([doc.path for doc in kept], removed) == (["orig.py", "half.py"], 0)


def test_near_dedup_is_deterministic_and_keeps_the_first_in_order() -> None:
    texts = [_module(seed) for seed in range(6)] + [_edit_line(_module(seed), 7) for seed in range(3)]
    docs = [Document(f"m{index}.py", "python", text) for index, text in enumerate(texts)]
    first = near_dedup(docs)
    assert near_dedup(docs) == first
    assert [doc.path for doc in first[0]] == [f"m{index}.py" for index in range(6)]
    backwards, _ = near_dedup(docs[::-1])
    assert [doc.path for doc in backwards] == ["m8.py", "m7.py", "m6.py", "m5.py", "m4.py", "m3.py"]


def test_near_dedup_handles_tiny_and_empty_texts() -> None:
    docs = [Document(name, "python", text) for name, text in [("a", ""), ("b", "x"), ("c", "x"), ("d", "y = 2")]]
    kept, removed = near_dedup(docs)
    assert [doc.path for doc in kept] == ["a", "b", "d"]
    assert removed == 1


def test_shingles_are_token_ngrams_that_ignore_formatting() -> None:
    shingles = shingle_hashes("x = f(a, b)\n")  # tokens x = f ( a , b ): 8 tokens, 4 distinct 5-grams
    assert len(shingles) == 4
    assert np.array_equal(shingles, shingle_hashes("x=f( a,\n    b )"))
    assert not np.array_equal(shingles, shingle_hashes("x = f(a, c)\n"))


def test_near_dedup_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match="threshold"):
        near_dedup([], threshold=0)
    with pytest.raises(ValueError, match="ngram"):
        near_dedup([], ngram=0)


# --- generated files ----------------------------------------------------------------------------------------------

MINIFIED = "var a=" + ";var b".join(str(index) for index in range(1200)) + ";\n"
GENERATED: dict[str, str] = {
    "gen/auto.py": "# Auto-generated by tools/make_tables.py\nTABLE = [1, 2, 3]\n",
    "gen/autogen.ts": "/* This file is autogenerated. */\nexport const x = 1;\n",
    "gen/noedit.c": "/*\n * Tables for the parser.\n * DO NOT EDIT: run gen.sh instead.\n */\nint x = 1;\n",
    "gen/django.py": "# Generated by Django 4.2 on 2024-01-01 12:00\nfrom django.db import migrations\n",
    "gen/relay.js": "/**\n * @generated SignedSource<<0123abcd>>\n */\nmodule.exports = {};\n",
    "gen/api.pb.gw.go": "// Code generated by protoc-gen-grpc-gateway. DO NOT EDIT.\n\npackage api\n",
    "gen/doc.py": '"""Keyword list: this file is automatically generated."""\nKEYWORDS = []\n',
    "web/app.js": MINIFIED,
    "package-lock.json": '{\n  "lockfileVersion": 3\n}\n',
    "yarn.lock": 'left-pad@^1.3.0:\n  version "1.3.0"\n',
    "Cargo.lock": '[[package]]\nname = "demo"\n',
    "go.sum": "golang.org/x/text v0.3.0 h1:abc=\n",
    "poetry.lock": '[[package]]\nname = "demo"\n',
    "uv.lock": "version = 1\n",
}
HAND_WRITTEN: dict[str, str] = {
    "main.py": "def main() -> None:\n    print('hi')\n",
    "late_marker.py": "x = 1\n# do not edit the next line by hand\ny = 2\n",
    "in_string.py": 'HEADER = """\\\n# This is a generated file!  Do not edit.\n"""\n',
    "wrapped.py": "# Streams written by older versions and\n# generated by the lexer are cached.\nx = 1\n",
    "one_long_line.py": "x = 1\n" * 100 + "DATA = '" + "ab" * 750 + "'\n",
    "README.md": "# Title\n\n" + ("A long unwrapped paragraph of prose. " * 40 + "\n\n") * 6,
    "guide.md": "# Do not edit this section by hand\n\nSome text.\n",
}


@pytest.mark.parametrize("rel", sorted(GENERATED))
def test_generated_files_are_recognised(rel: str) -> None:
    if rel.endswith((".lock", ".sum", "-lock.json")):
        expected = "lock_file"
    else:
        expected = "minified" if rel == "web/app.js" else "marker"
    assert generated_reason(rel, GENERATED[rel], "") == expected


@pytest.mark.parametrize("rel", sorted(HAND_WRITTEN))
def test_hand_written_files_are_not_flagged(rel: str) -> None:
    language = "markdown" if rel.endswith(".md") else "python"
    assert generated_reason(rel, HAND_WRITTEN[rel], language) is None


def test_walker_skips_generated_files_and_counts_them(tmp_path: Path) -> None:
    for rel, text in {**GENERATED, **HAND_WRITTEN}.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text, encoding="utf-8")
    docs, report = walk_repository(tmp_path)
    assert sorted(doc.path for doc in docs) == sorted(HAND_WRITTEN)
    assert report.skipped == Counter({"generated": len(GENERATED)})
    everything, report_all = walk_repository(tmp_path, skip_generated=False)
    unknown = {"yarn.lock", "Cargo.lock", "go.sum", "poetry.lock", "uv.lock"}  # no language for these
    assert sorted(doc.path for doc in everything) == sorted(set(GENERATED) - unknown | set(HAND_WRITTEN))
    assert report_all.skipped == Counter({"unknown_language": len(unknown)})


def test_minified_detection_needs_long_lines() -> None:
    assert generated_reason("a.js", "var a = 1;\n" * 3000, "javascript") is None  # big but hand-written shape
    assert generated_reason("a.js", "x" * 3500 + "\n" + "y = 1\n" * 10, "javascript") == "minified"  # mean length
    assert generated_reason("a.js", "x" * 3500 + "\n" + "y = 1 + 2 + 3\n" * 40, "javascript") == "minified"  # huge line
    many_long = ("z" * 1200 + "\n") * 3 + "w = 1\n" * 20
    assert generated_reason("a.js", many_long, "javascript") == "minified"  # share of very long lines
    assert generated_reason("a.md", many_long, "markdown") is None  # prose wraps paragraphs into long lines


# --- invalid UTF-8 ------------------------------------------------------------------------------------------------


def _latin1_repo(root: Path) -> None:
    (root / "ok.py").write_bytes(b"x = 1\n")
    (root / "latin1.py").write_bytes("# caf\xe9 cr\xe8me\nname = 'Ren\xe9'\n".encode("latin-1"))
    (root / "gen_latin1.py").write_bytes("# Auto-generated \xa9 2024\nx = 2\n".encode("latin-1"))


def test_invalid_utf8_is_skipped_by_default(tmp_path: Path) -> None:
    _latin1_repo(tmp_path)
    docs, report = walk_repository(tmp_path)
    assert [doc.path for doc in docs] == ["ok.py"]
    assert report.skipped == Counter({"invalid_utf8": 2})
    assert report.changed == Counter()


def test_invalid_utf8_replace_mode_keeps_and_counts(tmp_path: Path) -> None:
    _latin1_repo(tmp_path)
    docs, report = walk_repository(tmp_path, invalid_utf8="replace")
    by_path = {doc.path: doc.text for doc in docs}
    assert by_path["latin1.py"] == "# caf\ufffd cr\ufffdme\nname = 'Ren\ufffd'\n"
    assert by_path["ok.py"] == "x = 1\n"
    assert report.skipped == Counter({"generated": 1})  # decoded, then skipped: not counted as changed
    assert report.changed == Counter({"decoded_with_replacement": 1})
    assert report.to_dict()["changed"] == {"decoded_with_replacement": 1}
    assert "changed files: decoded_with_replacement 1" in report.summary_lines()
    assert IngestReport().merge(report).merge(report).changed["decoded_with_replacement"] == 2


def test_invalid_utf8_mode_is_checked(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text("a = 1\n")
    with pytest.raises(UserError, match="invalid_utf8 must be"):
        walk_repository(tmp_path, invalid_utf8="ignore")  # type: ignore[arg-type]


# --- the sample repository --------------------------------------------------------------------------------------------


def test_sample_repo_has_no_generated_files() -> None:
    docs, report = walk_repository(SAMPLE_REPO)
    assert report.skipped["generated"] == 0
    files = sorted(  # a linter's or test runner's cache (ruff puts one here: the repo has a pyproject) is not code
        path for path in SAMPLE_REPO.rglob("*") if path.is_file() and VENDORED_DIRS.isdisjoint(path.parts)
    )
    flagged = [path for path in files if generated_reason(path.name, path.read_text(encoding="utf-8"), "")]
    assert len(files) >= 30 and flagged == []


def test_sample_repo_has_no_secrets() -> None:
    docs, _ = walk_repository(SAMPLE_REPO)
    found = {doc.path: find_secrets(doc.text, doc.path) for doc in docs}
    assert {path: hits for path, hits in found.items() if hits} == {}
    assert all(scrub_secrets(doc.text, doc.path) == (doc.text, 0) for doc in docs)
