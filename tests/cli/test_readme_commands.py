"""Every `finetune` command in the README's code blocks names a real command and only real options, so the README
cannot drift from the CLI (the commands are not run: many need a GPU, a model or a long time)."""

from __future__ import annotations

import argparse
import re
import shlex
from pathlib import Path

from finetune.cli.main import build_parser

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_commands() -> list[str]:
    """Each `finetune ...` line of the README's bash blocks, continuation lines joined and comments dropped."""
    commands: list[str] = []
    for block in re.findall(r"```bash\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #", 1)[0].strip()
            if line.startswith("finetune ") or line.startswith("accelerate launch -m finetune "):
                commands.append(line.split("-m finetune ", 1)[-1] if "-m finetune" in line else line[len("finetune "):])
    return commands


def _subparser(parser: argparse.ArgumentParser, words: list[str]) -> tuple[argparse.ArgumentParser, list[str]]:
    """The (sub)command parser the words lead to, and the words after it."""
    while words:
        actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not actions or words[0] not in actions[0].choices:
            break
        parser, words = actions[0].choices[words[0]], words[1:]
    return parser, words


def test_the_readme_has_commands_to_check() -> None:
    assert len(readme_commands()) >= 30


def problems_of(commands: list[str]) -> list[str]:
    """Unknown commands and options among `commands` (each without the leading `finetune`)."""
    root = build_parser()
    known_commands = [a for a in root._actions if isinstance(a, argparse._SubParsersAction)][0].choices
    problems = []
    for command in commands:
        words = shlex.split(command.replace("$(", "(").replace("`", ""), posix=True)
        if not words or words[0] not in known_commands:
            problems.append(f"unknown command: finetune {command}")
            continue
        parser, rest = _subparser(root, words)
        known = set(parser._option_string_actions)
        for word in rest:
            if word.startswith("--") and word.split("=", 1)[0] not in known:
                problems.append(f"unknown option {word.split('=', 1)[0]} in: finetune {command}")
    return problems


def test_every_readme_command_and_option_exists() -> None:
    problems = problems_of(readme_commands())
    assert not problems, "\n".join(problems)


def test_the_check_catches_a_wrong_option_and_command() -> None:
    problems = problems_of(["eval --repo x --no-such-flag 1", "data fim x --mode structured", "trian r.yaml"])
    assert problems == ["unknown option --no-such-flag in: finetune eval --repo x --no-such-flag 1",
                        "unknown command: finetune trian r.yaml"]
