"""Each secret detector on the placements it exists for, and realistic non-secrets that must be left alone; the one
scrubbing stage (texts, paths, conversations, report); `finetune data scan`; `python -m finetune.dev.bench secrets`."""

from __future__ import annotations

import base64
import json
import random
import string
from pathlib import Path

import pytest

from finetune.cli.main import main
from finetune.data.ingest.scan import mask, scan_text
from finetune.data.ingest.scrub import Scrubber
from finetune.data.ingest.secrets import find_secrets, scrub_secrets
from finetune.data.ingest.sources import clean_documents
from finetune.data.ingest.walk import IngestReport
from finetune.data.sft.records import Conversation, InstructionFile, load_conversations
from finetune.data.types import Document
from finetune.dev.bench import main as bench_main

RNG = random.Random()
ALNUM = string.ascii_letters + string.digits


def rand(size: int, alphabet: str = ALNUM) -> str:
    return "".join(RNG.choice(alphabet) for _ in range(size))


def password() -> str:
    return rand(5, string.ascii_letters) + rand(2, string.digits) + "!" + rand(6)


def scrubbed(text: str, path: str = "x.py") -> str:
    return scrub_secrets(text, path)[0]


def kinds(text: str, path: str = "x.py") -> set[str]:
    return {finding.kind for finding in find_secrets(text, path)}


# --- credentials in prose and comments ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "path"),
    [
        ("# NOTE: prod password is {}\n", "app.py"),
        ("// temporary creds: user admin / pass {}\n", "app.js"),
        ("# old api key: {}\n", "app.py"),
        ("The staging password is {}. Ask ops.\n", "README.md"),
        ("Log in with user root / pass {} and rotate it.", ""),
        ("-- pwd: {}\n", "schema.sql"),
        ("my password is {} and it fails", ""),
    ],
)
def test_prose_credentials_are_scrubbed(template: str, path: str) -> None:
    value = password()
    assert scrubbed(template.format(value), path) == template.format("<SECRET>")


@pytest.mark.parametrize(
    "line",
    [
        "# the password is required\n",
        "    pass  # nothing to do2\n",
        "# Pass stdout=PIPE to capture the output\n",
        "# pass force_zip64 to use the ZIP64 format\n",
        "token: str = next(tokens)\n",
        "password = get_password()\n",
        'PASSWORD_PROMPT = "Password: "\n',
        "# the token is utf8 or sha256 encoded\n",
        "# pass self.value2 to the callback\n",
        "api key: see os.environ\n",
        "# the secret is in /etc/app/secret2.key\n",
        "password = pw_2024x\n",  # a variable in code, not a literal
    ],
)
def test_prose_rule_leaves_code_and_ordinary_prose_alone(line: str) -> None:
    assert scrubbed(line, "module.py") == line


# --- configuration values with high entropy ----------------------------------------------------------------------


def test_random_config_value_under_any_key_is_scrubbed() -> None:
    value = rand(32)
    text = f"service:\n  # deploy key below\n  auth: {value}\n  replicas: 3\n"
    assert scrubbed(text, "deploy.yaml") == text.replace(value, "<SECRET>")
    assert "config_entropy" in kinds(text, "deploy.yaml")
    toml = f'[tool.deploy]\nseed = "{value}"\n'
    assert scrubbed(toml, "pyproject.toml") == toml.replace(value, "<SECRET>")
    ini = f"[x]\nsignature = {value}\n"
    assert scrubbed(ini, "app.ini") == ini.replace(value, "<SECRET>")


@pytest.mark.parametrize(
    "text",
    [
        "sha256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\n",
        "request_id: 123e4567-e89b-12d3-a456-426614174000\n",
        "host: db-primary.internal.example.com\n",
        "image: ghcr.io/org/app-server:v1.24.3\n",
        "commit: 9fceb02d0ae598e95dc970b74767f19372d61af8\n",
        'description: "A small demo service for tests"\n',
        "integrity: sha512-Abc4Def5Ghi6Jkl7Mno8Pqr9Stu0Vwx1Yz\n",
    ],
)
def test_config_rule_leaves_checksums_ids_and_hosts_alone(text: str) -> None:
    assert scrubbed(text, "config.yaml") == text


# --- AWS secret access key next to its key id --------------------------------------------------------------------


def test_aws_secret_in_a_docstring_next_to_its_key_id() -> None:
    key_id, secret = "AKIA" + rand(16, string.ascii_uppercase + string.digits), "Ab1" + rand(37, ALNUM + "+/")
    text = f'def f():\n    """Use the key id {key_id} with the secret\n    {secret} for the nightly job."""\n'
    assert scrubbed(text) == text.replace(key_id, "<SECRET>").replace(secret, "<SECRET>")
    assert "aws_secret_access_key" in kinds(text)
    alone = f'"""The digest\n    {secret} of the release."""\n'
    assert scrubbed(alone) == alone  # a 40-character string far from any key id is not called an AWS key


def test_git_sha_next_to_a_key_id_is_not_an_aws_secret() -> None:
    key_id = "AKIA" + rand(16, string.ascii_uppercase + string.digits)
    text = f"# key {key_id} rotated in commit 9fceb02d0ae598e95dc970b74767f19372d61af8\n"
    assert scrubbed(text) == text.replace(key_id, "<SECRET>")


# --- split string literals -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "path"),
    [
        ('STRIPE = "sk_live_{a}" "{b}"\n', "x.py"),
        ("const key = 'sk_live_{a}' +\n    '{b}';\n", "x.js"),
        ('KEY = ("ghp_{a}"\n       "{b}")\n', "x.py"),
        ('$key = "sk_live_{a}" . "{b}";\n', "x.php"),
    ],
)
def test_split_literals_are_joined_before_matching(template: str, path: str) -> None:
    a, b = rand(8), rand(28)
    text = template.format(a=a, b=b)
    out = scrubbed(text, path)
    assert a not in out and b not in out and "<SECRET>" in out
    assert any(kind.startswith("split_") for kind in kinds(text, path))


def test_adjacent_ordinary_literals_are_left_alone() -> None:
    text = 'MESSAGE = ("Hello, " "world")\nparts = "a" + "b"\n'
    assert scrubbed(text) == text


# --- hex and base64 payloads ---------------------------------------------------------------------------------------


def test_hex_and_base64_encoded_tokens_are_scrubbed() -> None:
    token = "ghp_" + rand(36)
    for encoded, kind in [
        (token.encode().hex(), "hex_github_token"),
        (" ".join(f"{b:02x}" for b in token.encode()), "hex_github_token"),
        (base64.b64encode(token.encode()).decode(), "base64_github_token"),
        (base64.urlsafe_b64encode(f"token={token}".encode()).decode().rstrip("="), "base64_github_token"),
    ]:
        text = f'KEY = bytes.fromhex("{encoded}")\n'
        assert scrubbed(text) == 'KEY = bytes.fromhex("<SECRET>")\n', encoded
        assert kind in kinds(text)


@pytest.mark.parametrize(
    "text",
    [
        'PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk")\n',
        f'DIGEST = "{"ab" * 32}"\n',
        f'payload = "{base64.b64encode(b"Hello, this is a harmless message for tests.").decode()}"\n',
        'NAME = "TestLongIdentifierWithCaps2AndMore"\n',
        "def test_very_long_descriptive_name_for_a_test_case():\n    pass\n",
    ],
)
def test_encoded_rule_leaves_other_payloads_alone(text: str) -> None:
    assert scrubbed(text) == text


# --- realistic non-secrets ------------------------------------------------------------------------------------------


def test_realistic_non_secrets_are_left_alone() -> None:
    text = (
        "import hashlib\nimport uuid\n\n"
        "SESSION = uuid.UUID('6ba7b810-9dad-11d1-80b4-00c04fd430c8')\n"
        "EMPTY = 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855'\n"
        "password = get_password()\n"
        'PASSWORD_PROMPT = "Password: "\n'
        "password_hash = hashlib.sha256(password.encode()).hexdigest()\n"
        "assert hashlib.md5(b'abc').hexdigest() == '900150983cd24fb0d6963f7d28e17f72'\n"
        "# Pass the token to the server; the password must be at least 12 characters.\n"
        "token_type = 'bearer'\n"
        "api_key = os.environ['API_KEY']\n"
    )
    assert scrub_secrets(text, "test_auth.py") == (text, 0)


# --- the scrubbing stage ------------------------------------------------------------------------------------------


def test_paths_get_consistent_unique_placeholders() -> None:
    first, second = "ghp_" + rand(36), "ghp_" + rand(36)
    scrubber = Scrubber()
    assert scrubber.path(f"creds/{first}.py") == "creds/<SECRET-1>.py"
    assert scrubber.path(f"backup/{first}.py") == "backup/<SECRET-1>.py"  # the same secret, the same number
    assert scrubber.path(f"creds/{second}.py") == "creds/<SECRET-2>.py"
    assert scrubber.path(f"creds/{first}.py") == "creds/<SECRET-1>.py"  # the same file, the same path
    assert scrubber.path("creds/<SECRET-2>.py") == "creds/<SECRET-2>.py~"  # a real file of that name stays apart
    assert scrubber.path("src/app.py") == "src/app.py"
    assert scrubber.report.by_source["path"] == 4


def test_document_text_and_path_are_scrubbed_and_counted() -> None:
    token, value = "ghp_" + rand(36), rand(32)
    scrubber = Scrubber()
    doc = scrubber.document(Document(f"keys/{token}.py", "python", f'API_KEY = "{value}"\n'), "repo")
    assert doc == Document("keys/<SECRET-1>.py", "python", 'API_KEY = "<SECRET>"\n')
    assert scrubber.report.to_dict()["by_source"] == {"repo": 1, "path": 1}
    assert scrubber.report.lines() == ["secrets scrubbed: 2 (repo 1, path 1); kinds: assignment 1, github_token 1"]
    assert Scrubber().report.lines() == ["secrets scrubbed: none found"]


def test_secrets_are_scrubbed_before_deduplication() -> None:
    body = "def connect():\n    return client(API_KEY)\n" * 5
    docs = [Document(f"{n}.py", "python", f'API_KEY = "{rand(32)}"\n{body}') for n in "ab"]
    kept = clean_documents(docs, IngestReport(), dedup="exact")
    assert len(kept) == 1 and "<SECRET>" in kept[0].text  # identical once scrubbed: the dedup key held no secret


def test_every_turn_of_every_instruction_shape_is_scrubbed(tmp_path: Path) -> None:
    key_id, secret, token = "AKIA" + rand(16, string.ascii_uppercase + string.digits), "Ab1" + rand(37), "ghp_" + rand(36)
    evol = {"instruction": f"Why is {key_id} rejected?", "output": f'AWS_SECRET_ACCESS_KEY = "{secret}"\nnot {token}'}
    chat = {"messages": [
        {"role": "system", "content": f"key: {token}"},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": f"my password is {password()}"},
        {"role": "assistant", "content": f"use pass {password()} then"},
    ]}
    path = tmp_path / "data.jsonl"
    path.write_text(json.dumps(evol) + "\n" + json.dumps(chat) + "\n", encoding="utf-8")
    raw, _ = load_conversations(InstructionFile(str(path)))
    assert token in raw[0].text  # without a scrubber the reader returns records as they are
    scrubber = Scrubber()
    conversations, _ = load_conversations(InstructionFile(str(path)), scrubber)
    assert all(isinstance(c, Conversation) for c in conversations)
    assert conversations[0].turns == (
        ("user", "Why is <SECRET> rejected?"),
        ("assistant", 'AWS_SECRET_ACCESS_KEY = "<SECRET>"\nnot <SECRET>'),
    )
    assert [text.count("<SECRET>") for _, text in conversations[1].turns] == [1, 0, 0, 1, 1]
    assert scrubber.report.by_source == {"instruction": 6}


# --- data scan ---------------------------------------------------------------------------------------------------------


def test_data_scan_lists_where_and_kind_but_never_the_value(tmp_path: Path, capsys) -> None:
    token, value, name_token = "ghp_" + rand(36), password(), "ghp_" + rand(36)
    repo = tmp_path / "repo"
    (repo / "app").mkdir(parents=True)
    (repo / "app" / "main.py").write_text(f"x = 1\n# prod password is {value}\nT = '{token}'\n", encoding="utf-8")
    (repo / f"{name_token}.py").write_text("y = 2\n", encoding="utf-8")
    assert main(["data", "scan", str(repo)]) == 0
    out = capsys.readouterr().out
    assert "app/main.py:2: prose_credential" in out and "app/main.py:3: github_token" in out
    assert "<SECRET-1>.py: secret in the file name" in out
    assert "found 3 secrets in 2 files" in out and "path:github_token 1" in out
    assert token not in out and value not in out and name_token not in out and token[4:12] not in out
    assert main(["data", "scan", str(repo), "--check"]) == 1
    capsys.readouterr()
    (repo / "app" / "main.py").write_text("x = 1\n", encoding="utf-8")
    (repo / f"{name_token}.py").unlink()
    assert main(["data", "scan", str(repo), "--check"]) == 0
    assert "no secrets found in 1 files" in capsys.readouterr().out


def test_data_scan_reads_instruction_records_field_by_field(tmp_path: Path, capsys) -> None:
    token = "xoxb-" + rand(12, string.digits) + "-" + rand(24)
    path = tmp_path / "chat.jsonl"
    record = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": f"ok\nuse {token}"}]}
    path.write_text(json.dumps({"instruction": "a", "output": "b"}) + "\n" + json.dumps(record) + "\n", encoding="utf-8")
    assert main(["data", "scan", str(path)]) == 0
    out = capsys.readouterr().out
    assert "chat.jsonl:line 2:messages[1].content:2: slack_token" in out and token not in out
    config = tmp_path / "settings.json"  # a JSON file that holds no records is scanned as text
    config.write_text(json.dumps({"client_secret": rand(32)}, indent=2), encoding="utf-8")
    assert main(["data", "scan", str(config)]) == 0
    assert "settings.json:2:" in capsys.readouterr().out


def test_data_scan_refuses_a_missing_path(tmp_path: Path, capsys) -> None:
    assert main(["data", "scan", str(tmp_path / "nothing")]) == 2
    err = capsys.readouterr().err
    assert "nothing" in err and "Traceback" not in err


def test_masked_previews_never_show_more_than_two_characters() -> None:
    value = rand(40)
    assert mask(value) == f"«{value[:2]}…(40)»" and mask("hunter2") == "«…(7)»"
    [flag] = scan_text(f'x = 1\nAPI_KEY = "{value}"  # rotate yearly\n', "a.py")
    assert (flag.line, flag.kind) == (2, "assignment") and value[2:] not in flag.text()
    assert flag.preview == f'API_KEY = "«{value[:2]}…(40)»"  # rotate yearly'


def test_bench_secrets_prints_counts_rates_and_masked_spans(tmp_path: Path, capsys) -> None:
    value = rand(32)
    (tmp_path / "a.py").write_text(f'API_KEY = "{value}"\n' + "x = 1\n" * 200, encoding="utf-8")
    (tmp_path / "b.py").write_text("def f():\n    return 2\n", encoding="utf-8")
    assert bench_main(["secrets", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "scanned 2 files" in out and "a.py:1: assignment" in out and "spans by kind: assignment 1" in out
    assert "1 spans," in out and "per MB" in out and "MB/s" in out and value not in out


HEX = "0123456789abcdef"


@pytest.mark.parametrize(
    ("make", "kind"),
    [
        (lambda: "hf_" + rand(34), "huggingface_token"),
        (lambda: "glpat-" + rand(20), "gitlab_token"),
        (lambda: "npm_" + rand(36), "npm_token"),
        (lambda: "pypi-AgEIcHlwaS5vcmc" + rand(60), "pypi_token"),
        (lambda: f"SG.{rand(22)}.{rand(43)}", "sendgrid_key"),
        (lambda: "dop_v1_" + rand(64, HEX), "digitalocean_token"),
        (lambda: "shpat_" + rand(32, HEX), "shopify_token"),
        (lambda: "GOCSPX-" + rand(28), "google_oauth_secret"),
        (lambda: "AGE-SECRET-KEY-1" + rand(58, string.ascii_uppercase + string.digits), "age_secret_key"),
    ],
)
def test_prefixed_service_tokens_are_found_anywhere(make, kind: str) -> None:
    value = make()
    text = f"see {value} here\n"
    assert scrubbed(text, "notes.md") == "see <SECRET> here\n" and kind in kinds(text, "notes.md")


def test_every_planted_secret_is_caught_for_many_fresh_seeds() -> None:
    """The generator's 40 placements, 20 fresh random draws, through the scrubbing stage (fast; the end-to-end test
    runs one draw through every command)."""
    from secret_plants import plant

    for _ in range(20):
        seed = RNG.randrange(2**32)
        planted, scrubber, out = plant(random.Random(seed)), Scrubber(), []
        for rel, text in planted.repo.items():
            doc = scrubber.document(Document(rel, "", text), "repo")
            out += [doc.path, doc.text]
        for name, data in planted.files.items():
            records = data if isinstance(data, list) else [{"text": data}]
            for record in records:
                out += [scrubber.text(text, name if name.endswith(".txt") else "", "instruction")
                        for _, text in _strings(record)]
                out += [scrubber.path(record["path"])] if "path" in record else []
        everything = "\n".join(out)
        leaked = [p.name for p in planted.plants for value in p.forbidden if value in everything]
        assert leaked == [], f"seed {seed}"


def _strings(value):
    if isinstance(value, str):
        yield "", value
    elif isinstance(value, dict | list):
        for item in value.values() if isinstance(value, dict) else value:
            yield from _strings(item)
