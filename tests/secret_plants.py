"""A generator of planted secrets: fresh random values in every placement a real leak takes.

`plant(rng)` writes nothing; it returns the files to write (a repository, instruction files in each shape and
format, a text and a JSONL document source) and, for each planted secret, every string that must never reach a
model: the value, the parts of a split value, the encoded and decoded forms. Values are random each session (the seed
is printed on failure), so the detectors cannot be tuned to fixed strings.
"""

from __future__ import annotations

import base64
import json
import random
import string
from dataclasses import dataclass, field

ALNUM = string.ascii_letters + string.digits
B64 = ALNUM + "+/"
UPPER_DIGITS = string.ascii_uppercase + string.digits


@dataclass(frozen=True)
class Plant:
    """One planted secret: `name` says where it is; none of `forbidden` may appear in any artifact."""

    name: str
    forbidden: tuple[str, ...]


@dataclass
class Planted:
    repo: dict[str, str] = field(default_factory=dict)  # relative path -> text
    files: dict[str, str | bytes | list] = field(default_factory=dict)  # instruction/text/jsonl inputs
    plants: list[Plant] = field(default_factory=list)

    def add(self, name: str, *forbidden: str) -> None:
        self.plants.append(Plant(name, tuple(f for f in forbidden if f)))


class Values:
    """Fresh random secrets of each format."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def rand(self, alphabet: str, size: int) -> str:
        return "".join(self.rng.choice(alphabet) for _ in range(size))

    def aws_id(self) -> str:
        return "AKIA" + self.rand(UPPER_DIGITS, 16)

    def aws_secret(self) -> str:
        # always mixed case and a digit, as real keys are
        return self.rand(string.ascii_uppercase, 1) + self.rand(string.ascii_lowercase, 1) + "7" + self.rand(B64, 37)

    def ghp(self) -> str:
        return "ghp_" + self.rand(ALNUM, 36)

    def password(self) -> str:
        return self.rand(string.ascii_letters, 4) + self.rand(string.digits, 2) + "#" + self.rand(ALNUM, 7)

    def random32(self) -> str:
        return "q" + self.rand(ALNUM, 30) + "7"


def plant(rng: random.Random) -> Planted:
    v = Values(rng)
    p = Planted()
    _repo(v, p)
    _instructions(v, p)
    _documents(v, p)
    return p


def _repo(v: Values, p: Planted) -> None:
    aws_id, aws_secret, ghp = v.aws_id(), v.aws_secret(), v.ghp()
    prod_password, old_api_key = v.password(), v.random32()
    doc_id, doc_secret = v.aws_id(), v.aws_secret()
    stripe_a, stripe_b = v.rand(ALNUM, 8), v.rand(ALNUM, 20)
    hex_token = v.ghp()
    b64_key = "sk_live_" + v.rand(ALNUM, 24)
    b64_text = base64.b64encode(b64_key.encode()).decode()
    pem_lines = [v.rand(B64, 64) for _ in range(4)]
    go_key = v.random32()
    p.repo["app/settings.py"] = f'''"""Settings: a fixture, every secret here is random."""

import os

AWS_ACCESS_KEY_ID = "{aws_id}"
AWS_SECRET_ACCESS_KEY = "{aws_secret}"
GITHUB = "{ghp}"
# NOTE: prod password is {prod_password}
# old api key: {old_api_key}


def connect():
    """Connect to the bucket.

    Use the key id {doc_id} with the secret
    {doc_secret} for the nightly job.
    """
    return os.environ.get("DB_URL")


STRIPE = "sk_live_{stripe_a}" "{stripe_b}"
TOKEN = bytes.fromhex("{hex_token.encode().hex()}")
LEGACY = base64.b64decode("{b64_text}")
SIGNING_KEY = """-----BEGIN RSA PRIVATE KEY-----
{chr(10).join(pem_lines)}
-----END RSA PRIVATE KEY-----"""

# Not secrets: these must come out unchanged.
password = get_password()
PASSWORD_PROMPT = "Password: "
REQUEST_ID = "123e4567-e89b-12d3-a456-426614174000"
'''
    p.add("code: AWS key id", aws_id)
    p.add("code: AWS_SECRET_ACCESS_KEY", aws_secret)
    p.add("code: GitHub token", ghp)
    p.add("comment: prod password is X", prod_password)
    p.add("comment: old api key: X", old_api_key)
    p.add("docstring: AWS key id", doc_id)
    p.add("docstring: AWS secret next to its key id", doc_secret)
    p.add("split literal: Stripe key", f"sk_live_{stripe_a}{stripe_b}", stripe_a, stripe_b)
    p.add("bytes.fromhex of a GitHub token", hex_token, hex_token.encode().hex())
    p.add("base64 of a Stripe key", b64_key, b64_text)
    p.add("private key in a string", *pem_lines)

    creds_pass, jwt_secret = v.password(), v.rand(ALNUM, 43)
    jwt = ".".join(
        [_b64url({"alg": "HS256", "typ": "JWT"}), _b64url({"sub": v.rand(string.digits, 6)}), jwt_secret]
    )
    p.repo["web/client.js"] = f"""// temporary creds: user admin / pass {creds_pass}
const session = "{jwt}";
export function call(api) {{
  return fetch(api, {{ headers: {{ Authorization: session }} }});
}}
"""
    p.add("comment: creds user admin / pass X", creds_pass)
    p.add("code: JWT", jwt, jwt_secret)

    deploy_key, yaml_password, url_password = v.random32(), v.password(), v.rand(ALNUM, 18)
    hex_id = v.aws_id()
    p.repo["deploy/config.yaml"] = f"""service:
  name: api
  replicas: 3
  # deploy key below
  auth: {deploy_key}
  password: "{yaml_password}"
  database_url: postgres://app:{url_password}@db.internal:5432/app
  blob: {hex_id.encode().hex()}
"""
    p.add("YAML: auth: X under a comment", deploy_key)
    p.add("YAML: password", yaml_password)
    p.add("YAML: URL password", url_password)
    p.add("YAML: hex of an AWS key id", hex_id, hex_id.encode().hex())

    ini_password, env_password, client_secret, seed = v.password(), v.password(), v.random32(), v.random32()
    p.repo["app.ini"] = f"[database]\nhost = db.internal\npassword = {ini_password}\n"
    p.repo[".env"] = f"DEBUG=1\nDATABASE_PASSWORD={env_password}\n"
    p.repo["settings.json"] = json.dumps(
        {"name": "demo", "auth": {"client_secret": client_secret}, "signing_seed": seed}, indent=2
    ) + "\n"
    p.add("INI password", ini_password)
    p.add(".env password", env_password)
    p.add("JSON client_secret", client_secret)
    p.add("JSON random value under an odd key", seed)

    staging, slack = v.password(), f"xoxb-{v.rand(string.digits, 12)}-{v.rand(string.digits, 12)}-{v.rand(ALNUM, 24)}"
    google = "AIza" + v.rand(ALNUM, 35)
    p.repo["README.md"] = f"# Demo\n\nThe staging password is {staging}. Ask ops for production.\n"
    p.repo["scripts/notify.sh"] = (
        f'#!/bin/sh\ncurl -H "Authorization: Bearer {slack}" https://slack.example.com/api/chat.postMessage\n'
    )
    p.repo["android/Maps.kt"] = f'object Maps {{\n    val key = "{google}"\n}}\n'
    p.repo["server/main.go"] = f'package main\n\nfunc main() {{\n\tapiKey := "{go_key}"\n\tserve(apiKey)\n}}\n'
    p.add("Markdown prose: staging password is X", staging)
    p.add("shell: Slack token", slack)
    p.add("Kotlin: Google API key", google)
    p.add("Go: apiKey :=", go_key)

    name_token = v.ghp()
    p.repo[f"creds/{name_token}.py"] = "USER = 'deploy'\n\n\ndef login(session):\n    return session.post(USER)\n"
    p.add("file name: GitHub token", name_token)


def _instructions(v: Values, p: Planted) -> None:
    aws_id, aws_secret, ghp = v.aws_id(), v.aws_secret(), v.ghp()
    alpaca_password = v.password()
    stripe_a, stripe_b = v.rand(ALNUM, 8), v.rand(ALNUM, 20)
    p.files["evol.jsonl"] = [
        {
            "instruction": f"Why does boto3 reject my key id {aws_id}? Here is my code.",
            "output": f'Put it in the environment instead of the code:\n\nAWS_SECRET_ACCESS_KEY = "{aws_secret}"\n'
            f"and never commit {ghp} either.",
        },
        {"instruction": "Write a hello world in Python.", "output": "print('hello world')"},
    ]
    p.files["alpaca.jsonl"] = [
        {"instruction": "Fix my login script.", "input": f"my password is {alpaca_password} and it fails", "output": "Use a keyring."},
        {
            "instruction": "Join the key parts.",
            "input": "",
            "output": f'key = "rk_live_{stripe_a}" "{stripe_b}"',
        },
    ]
    p.add("Evol-Instruct: AWS key id", aws_id)
    p.add("Evol-Instruct: AWS_SECRET_ACCESS_KEY line", aws_secret)
    p.add("Evol-Instruct: GitHub token", ghp)
    p.add("Alpaca input: prose password", alpaca_password)
    p.add("Alpaca output: split Stripe key", f"rk_live_{stripe_a}{stripe_b}", stripe_a, stripe_b)

    openai, slack, gpt_pass = "sk-proj-" + v.rand(ALNUM, 40) + "9", f"xoxp-{v.rand(string.digits, 12)}-{v.rand(ALNUM, 30)}", v.password()
    p.files["sharegpt.json"] = [
        {
            "conversations": [
                {"from": "system", "value": f"You are a bot. Internal key: {openai}"},
                {"from": "human", "value": f"My slack token: {slack} does not work"},
                {"from": "gpt", "value": "Regenerate it in the app settings."},
                {"from": "human", "value": "And the server?"},
                {"from": "gpt", "value": f"Log in with user root / pass {gpt_pass} and rotate it."},
            ]
        }
    ]
    p.add("ShareGPT system turn: OpenAI key", openai)
    p.add("ShareGPT human turn: Slack token", slack)
    p.add("ShareGPT gpt turn (3rd reply): pass X", gpt_pass)

    anthropic, b64_ghp = "sk-ant-api03-" + v.rand(ALNUM, 60) + "AA", v.ghp()
    encoded = base64.b64encode(f"token={b64_ghp}".encode()).decode()
    p.files["messages.parquet"] = [
        {"messages": [
            {"role": "user", "content": f"Decode this config blob: {encoded}"},
            {"role": "assistant", "content": f"It is a token. Use client = Client(api_key='{anthropic}') only locally."},
        ]}
    ]
    p.add("messages (parquet) assistant: Anthropic key", anthropic)
    p.add("messages (parquet) user: base64 of a GitHub token", b64_ghp, encoded)

    completion_key = v.random32()
    p.files["pc.jsonl"] = [{"prompt": "Configure the client", "completion": f'client = Api(secret_key="{completion_key}")'}]
    p.add("prompt-completion: secret_key=", completion_key)


def _documents(v: Values, p: Planted) -> None:
    login = v.password()
    p.files["notes.txt"] = f"Server notes\n\nlogin admin, password: {login}\nreboot on Sundays.\n"
    p.add("text source: password: X", login)
    secret, path_token = v.random32(), v.ghp()
    p.files["docs.jsonl"] = [
        {"text": f'SECRET_KEY = "{secret}"\n\n\ndef app():\n    return SECRET_KEY\n', "path": f"deploy/{path_token}.py"},
        {"text": "def ok():\n    return 1\n", "path": "ok.py"},
    ]
    p.add("JSONL document: SECRET_KEY", secret)
    p.add("JSONL document path: GitHub token", path_token)


def _b64url(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")
