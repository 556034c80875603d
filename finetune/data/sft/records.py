"""Instruction data -> conversations: read JSONL/JSON/parquet/local `datasets` records and recognise their shape.

Shapes (the columns that identify them; a recipe's `columns:` maps these names to a file's own):
  evol               instruction, output                  (Evol-Instruct / WizardCoder)
  alpaca             instruction, input, output           (input may be empty)
  prompt-completion  prompt, completion
  sharegpt           conversations: [{from, value}, ...]  (from: system | human | gpt)
  messages           messages: [{role, content}, ...]     (role: system | user | assistant)

Every record becomes a `Conversation`: an optional system turn, then user/assistant turns that alternate and end
with the assistant. A record that fits no shape or breaks a rule (bad JSON, empty response, a conversation that ends
with the user ...) is skipped and counted by reason with its line or row number, or stops the run when the source
says `on_bad_line: fail`. Nothing here knows a tokenizer: templates live in `chat.py`.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from finetune.data.types import Conversation, Role
from finetune.errors import UserError

if TYPE_CHECKING:
    from finetune.data.ingest.scrub import Scrubber

FORMATS = ("auto", "evol", "alpaca", "prompt-completion", "sharegpt", "messages")

# Shape -> the canonical columns a record must have, most specific first (auto detection tries them in order).
SHAPES: dict[str, tuple[str, ...]] = {
    "messages": ("messages",),
    "sharegpt": ("conversations",),
    "prompt-completion": ("prompt", "completion"),
    "alpaca": ("instruction", "input", "output"),
    "evol": ("instruction", "output"),
}
# Keys inside the turns of a chat record; mappable too (e.g. columns: {role: speaker, content: text}).
TURN_KEYS = ("role", "content", "from", "value")
COLUMN_NAMES = tuple(dict.fromkeys(c for cols in SHAPES.values() for c in cols)) + TURN_KEYS

_ROLES: dict[str, Role] = {
    "system": "system",
    "user": "user",
    "human": "user",
    "assistant": "assistant",
    "gpt": "assistant",
    "model": "assistant",
    "chatgpt": "assistant",
    "bot": "assistant",
}
_EXAMPLES_KEPT = 5  # locators remembered per problem, for the report


class RecordProblem(Exception):
    """A record that cannot become a conversation; `reason` is the report's counter key."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


@dataclass
class SftReport:
    """What instruction sources held, kept, and skipped (by reason, with where), so no record vanishes untraced."""

    records_seen: int = 0
    records_kept: int = 0
    shapes: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)
    train: int = 0
    eval: int = 0

    def skip(self, reason: str, where: str) -> None:
        self.skipped[reason] += 1
        kept = self.examples.setdefault(reason, [])
        if len(kept) < _EXAMPLES_KEPT:
            kept.append(where)

    def merge(self, other: SftReport) -> SftReport:
        self.records_seen += other.records_seen
        self.records_kept += other.records_kept
        self.shapes.update(other.shapes)
        self.skipped.update(other.skipped)
        for reason, where in other.examples.items():
            self.examples[reason] = (self.examples.get(reason, []) + where)[:_EXAMPLES_KEPT]
        self.train += other.train
        self.eval += other.eval
        return self

    def to_dict(self) -> dict[str, Any]:
        return {
            "records_seen": self.records_seen,
            "records_kept": self.records_kept,
            "shapes": dict(self.shapes.most_common()),
            "skipped": dict(self.skipped.most_common()),
            "skipped_examples": self.examples,
            "train_records": self.train,
            "eval_records": self.eval,
        }

    def lines(self) -> list[str]:
        shapes = ", ".join(f"{k} {v}" for k, v in self.shapes.most_common())
        lines = [f"instructions: kept {self.records_kept} of {self.records_seen} records ({shapes or 'none'})"]
        if self.skipped:
            parts = [f"{reason} {count} ({', '.join(self.examples.get(reason, []))})" for reason, count in
                     self.skipped.most_common()]
            lines.append("instructions skipped: " + "; ".join(parts))
        return lines


# ------------------------------------------------------------------------------------------------------ reading


def read_records(path: str | Path, split: str = "train") -> Iterator[tuple[str, Any]]:
    """(locator, record) for every record of a JSONL/JSON/parquet file or a local `datasets` folder, in order.

    A JSONL line that is not valid JSON yields a `RecordProblem` as its record, so the caller decides whether to
    skip it or stop. Locators are `line N` (JSONL), `record N` (a JSON array) or `row N` (parquet, datasets).
    """
    file = Path(path)
    if not file.exists():
        raise UserError(f"instruction data {path} not found: check data.sources[].path (relative to the current folder)")
    if file.is_dir():
        yield from _read_dataset_dir(file, split)
        return
    suffix = file.suffix.lower()
    if suffix == ".parquet":
        yield from _read_parquet(file)
    elif suffix == ".json":
        yield from _read_json(file)
    else:
        yield from _read_jsonl(file)


def _read_jsonl(file: Path) -> Iterator[tuple[str, Any]]:
    with file.open("rb") as handle:
        for number, raw in enumerate(handle, 1):
            if not raw.strip():
                continue
            try:
                yield f"line {number}", json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                detail = exc.msg if isinstance(exc, json.JSONDecodeError) else "not UTF-8"
                yield f"line {number}", RecordProblem("bad_json", f"not valid JSON ({detail})")


def _read_json(file: Path) -> Iterator[tuple[str, Any]]:
    try:
        data = json.loads(file.read_bytes())
    except json.JSONDecodeError as exc:
        if exc.msg == "Extra data":  # JSON Lines saved as .json
            yield from _read_jsonl(file)
            return
        raise UserError(f"{file} is not valid JSON (line {exc.lineno}: {exc.msg}): fix the file") from None
    except UnicodeDecodeError:
        raise UserError(f"{file} is not UTF-8 text: save it as UTF-8") from None
    if isinstance(data, dict):
        lists = [v for v in data.values() if isinstance(v, list)]
        if len(lists) != 1:
            raise UserError(f"{file}: expected a JSON array of records (or an object holding one array)")
        data = lists[0]
    if not isinstance(data, list):
        raise UserError(f"{file}: expected a JSON array of records, got {type(data).__name__}")
    for index, record in enumerate(data, 1):
        yield f"record {index}", record


def _read_parquet(file: Path) -> Iterator[tuple[str, Any]]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(file)
    except Exception as exc:  # pyarrow raises several types for a damaged file
        raise UserError(f"{file} could not be read as parquet ({str(exc).splitlines()[0]})") from None
    for index, record in enumerate(table.to_pylist(), 1):
        yield f"row {index}", record


def _read_dataset_dir(folder: Path, split: str) -> Iterator[tuple[str, Any]]:
    import datasets

    try:
        if (folder / "dataset_info.json").is_file() or (folder / "dataset_dict.json").is_file():
            loaded = datasets.load_from_disk(str(folder))
            data = loaded[split] if isinstance(loaded, datasets.DatasetDict) else loaded
        else:
            data = datasets.load_dataset(str(folder), split=split)
    except (KeyError, ValueError, FileNotFoundError) as exc:
        raise UserError(f"dataset {folder} could not be read ({exc}); check data.sources[].split") from None
    for index, record in enumerate(data, 1):
        yield f"row {index}", record


# ------------------------------------------------------------------------------------------------ shapes


def check_columns(columns: Mapping[str, str]) -> dict[str, str]:
    """The recipe's column mapping (canonical name -> the file's column), unknown canonical names refused."""
    unknown = [name for name in columns if name not in COLUMN_NAMES]
    if unknown:
        raise UserError(
            f"columns: unknown key {unknown[0]!r}; map these names to your columns: {', '.join(COLUMN_NAMES)}"
        )
    return dict(columns)


def detect_shape(record: Mapping[str, Any], columns: Mapping[str, str]) -> str | None:
    """The first shape whose (mapped) columns the record has, or None."""
    for shape, needed in SHAPES.items():
        if all(columns.get(name, name) in record for name in needed):
            return shape
    return None


def _text(value: Any, what: str) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(p, dict) for p in value):  # [{"type": "text", "text": ...}]
        return "".join(str(p.get("text", "")) for p in value if p.get("type", "text") == "text")
    raise RecordProblem("not_text", f"{what} is a {type(value).__name__}, not text")


def _turns_from_list(value: Any, columns: Mapping[str, str], what: str) -> list[tuple[str, str]]:
    if not isinstance(value, list) or not value:
        raise RecordProblem("bad_turns", f"{what} must be a non-empty list of turns")
    turns = []
    for number, turn in enumerate(value, 1):
        if not isinstance(turn, dict):
            raise RecordProblem("bad_turns", f"{what} turn {number} is not an object")
        role_key = next((columns.get(k, k) for k in ("role", "from") if columns.get(k, k) in turn), None)
        text_key = next((columns.get(k, k) for k in ("content", "value") if columns.get(k, k) in turn), None)
        if role_key is None or text_key is None:
            raise RecordProblem("bad_turns", f"{what} turn {number} needs role/content (or from/value) keys")
        role = _ROLES.get(str(turn[role_key]).lower())
        if role is None:
            raise RecordProblem("unknown_role", f"{what} turn {number} has role {turn[role_key]!r}")
        turns.append((role, _text(turn[text_key], f"{what} turn {number}")))
    return turns


def record_turns(record: Mapping[str, Any], shape: str, columns: Mapping[str, str]) -> list[tuple[str, str]]:
    """A record of `shape` as raw (role, text) turns; raises RecordProblem when a column is missing or not text."""
    def col(name: str) -> Any:
        key = columns.get(name, name)
        if key not in record:
            raise RecordProblem("missing_columns", f"no {key!r} column for the {shape} shape")
        return record[key]

    if shape in ("messages", "sharegpt"):
        key = "messages" if shape == "messages" else "conversations"
        return _turns_from_list(col(key), columns, columns.get(key, key))
    if shape == "prompt-completion":
        return [("user", _text(col("prompt"), "prompt")), ("assistant", _text(col("completion"), "completion"))]
    instruction = _text(col("instruction"), "instruction")
    if shape == "alpaca":
        extra = _text(col("input"), "input")
        if extra.strip():
            instruction = f"{instruction}\n\n{extra}" if instruction.strip() else extra
    return [("user", instruction), ("assistant", _text(col("output"), "output"))]


def validate_turns(turns: list[tuple[str, str]]) -> tuple[tuple[Role, str], ...]:
    """Optional system turn first, then user/assistant alternating, ending with a non-empty assistant turn."""
    body = turns[1:] if turns and turns[0][0] == "system" else turns
    if not body:
        raise RecordProblem("no_turns", "no user or assistant turn")
    for index, (role, text) in enumerate(body):
        expected = "user" if index % 2 == 0 else "assistant"
        if role != expected:
            raise RecordProblem("roles_not_alternating", f"turn {index + 1} is {role}, expected {expected}")
        if not text.strip():
            reason = "empty_response" if role == "assistant" else "empty_prompt"
            raise RecordProblem(reason, f"turn {index + 1} ({role}) is empty")
    if body[-1][0] != "assistant":
        raise RecordProblem("ends_with_user", "the conversation ends with a user turn (nothing to learn)")
    return tuple(turns)  # type: ignore[arg-type]


def to_conversation(record: Any, fmt: str, columns: Mapping[str, str], source: str) -> Conversation:
    """One record as a Conversation, or RecordProblem saying why it cannot be one."""
    if isinstance(record, RecordProblem):
        raise record
    if not isinstance(record, Mapping):
        raise RecordProblem("not_an_object", f"a {type(record).__name__}, not an object")
    shape = fmt if fmt != "auto" else detect_shape(record, columns)
    if shape is None:
        raise RecordProblem("no_shape", f"columns {', '.join(map(str, record)) or '(none)'} fit no known shape")
    return Conversation(validate_turns(record_turns(record, shape, columns)), source, shape)


# ----------------------------------------------------------------------------------------------------- loading


@dataclass
class InstructionFile:
    """How to read one instruction file: the recipe's `type: instructions` source, or `finetune data sft` options."""

    path: str
    format: str = "auto"
    columns: dict[str, str] = field(default_factory=dict)
    on_bad_line: Literal["skip", "fail"] = "skip"
    split: str = "train"


def iter_conversations(
    spec: InstructionFile, report: SftReport, scrubber: Scrubber | None = None
) -> Iterator[tuple[str, Conversation | RecordProblem]]:
    """(locator, conversation or problem) for every record in input order; problems are counted in `report`.

    With a `scrubber`, every turn of every conversation has its secrets replaced before it leaves this function.
    With `on_bad_line: fail` the first problem raises a one-line UserError naming the record. A wrong column
    mapping (a mapped column that no record has) and a file where no record fits are errors either way.
    """
    if spec.format not in FORMATS:
        raise UserError(f"format {spec.format!r} is not valid: choose one of {', '.join(FORMATS)}")
    columns = check_columns(spec.columns)
    seen_columns: set[str] = set()
    name = Path(spec.path).name
    for where, record in read_records(spec.path, spec.split):
        report.records_seen += 1
        if isinstance(record, Mapping):
            seen_columns.update(map(str, record))
        try:
            conversation = to_conversation(record, spec.format, columns, f"{name}:{where}")
        except RecordProblem as problem:
            if spec.on_bad_line == "fail":
                detail = scrubber.text(str(problem), "", "instruction") if scrubber is not None else problem
                raise UserError(
                    f"{spec.path} {where}: {detail} [{problem.reason}]; fix that record or set on_bad_line: skip"
                ) from None
            report.skip(problem.reason, where)
            yield where, problem
            continue
        report.records_kept += 1
        report.shapes[conversation.shape] += 1
        yield where, scrubber.conversation(conversation) if scrubber is not None else conversation
    _check_outcome(spec, report, columns, seen_columns)


def _check_outcome(spec: InstructionFile, report: SftReport, columns: dict[str, str], seen: set[str]) -> None:
    if report.records_seen == 0:
        raise UserError(f"instruction data {spec.path} has no records: point data.sources[].path at a non-empty file")
    missing = {name: col for name, col in columns.items() if name not in TURN_KEYS and col not in seen}
    if missing and seen:
        name, col = next(iter(missing.items()))
        raise UserError(
            f"{spec.path}: columns maps {name} to {col!r}, but no record has that column "
            f"(columns: {', '.join(sorted(seen))}); fix columns:"
        )
    if report.records_kept:
        return
    if report.skipped.get("no_shape", 0) + report.skipped.get("missing_columns", 0) == report.records_seen:
        shapes = "; ".join(f"{shape}: {'+'.join(cols)}" for shape, cols in SHAPES.items())
        raise UserError(
            f"{spec.path}: no record fits a known shape ({shapes}); its columns are "
            f"{', '.join(sorted(seen)) or '(none)'}: map them with columns: or pick format:"
        )
    reasons = ", ".join(f"{k} {v}" for k, v in report.skipped.most_common())
    raise UserError(f"{spec.path}: no usable record ({reasons}); fix the data or the source's format/columns")


def load_conversations(
    spec: InstructionFile, scrubber: Scrubber | None = None
) -> tuple[list[Conversation], SftReport]:
    """Every usable conversation of one instruction file (secrets replaced when a `scrubber` is given), and its report."""
    report = SftReport()
    conversations = [c for _, c in iter_conversations(spec, report, scrubber) if isinstance(c, Conversation)]
    return conversations, report
