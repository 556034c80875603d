"""Recipe data sources -> Documents. Each source kind reads its input and reports what it kept and skipped."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from finetune.config.schema import DataSection, DatasetSource, JsonlSource, RepoSource, Source, TextSource
from finetune.data.ingest.dedup import exact_dedup, near_dedup
from finetune.data.ingest.languages import detect_language
from finetune.data.ingest.scrub import Scrubber
from finetune.data.ingest.walk import IngestReport, walk_repository
from finetune.data.types import Document
from finetune.errors import UserError


def clean_documents(
    documents: list[Document],
    report: IngestReport,
    *,
    dedup: str = "near",
    threshold: float = 0.85,
    scrub: bool = True,
    scrubber: Scrubber | None = None,
) -> list[Document]:
    """Scrub secrets (texts and paths, first: dedup keys must not hold them) and drop duplicates, counting every file
    removed in `report` and every secret replaced in `scrubber.report` (a new Scrubber when none is given)."""
    if scrub:
        documents = (scrubber or Scrubber()).documents(documents, "repo")
    if dedup in ("exact", "near"):
        documents, removed = exact_dedup(documents)
        report.skipped["duplicate"] += removed
    if dedup == "near":
        documents, removed = near_dedup(documents, threshold=threshold)
        report.skipped["near_duplicate"] += removed
    report.files_kept = len(documents)
    report.bytes_kept = sum(len(doc.text.encode("utf-8")) for doc in documents)
    report.languages = Counter(doc.language for doc in documents)
    return documents


def load_data_documents(data: DataSection, scrubber: Scrubber | None = None) -> tuple[list[Document], IngestReport]:
    """The recipe's documents after loading, secret scrubbing (with `scrubber`, or a new one, unless the recipe
    says `scrub_secrets: false`) and deduplication."""
    scrubber = (scrubber or Scrubber()) if data.scrub_secrets else None
    documents, report = load_documents(data.sources, scrubber)
    if not documents:  # only instruction sources: nothing to clean
        return documents, report
    documents = clean_documents(documents, report, dedup=data.dedup, threshold=data.near_dup_threshold, scrub=False)
    return documents, report


def load_documents(sources: list[Source], scrubber: Scrubber | None = None) -> tuple[list[Document], IngestReport]:
    """All documents of all document sources, in recipe order, with one merged ingestion report.

    Each source's documents are scrubbed by `scrubber` as soon as they are read (counted under the source's type).
    Instruction sources are skipped here (`finetune.data.sft.mixture` reads them as conversations); a source's `weight`
    or `samples` keeps a subset of its files, counted as `mixture_weight`.
    """
    from finetune.data.sft.mixture import select_documents

    documents: list[Document] = []
    report = IngestReport()
    for source in sources:
        if source.type == "instructions":
            continue
        docs, source_report = _LOADERS[type(source)](source)
        if scrubber is not None:
            docs = scrubber.documents(docs, source.type)
        selected = select_documents(docs, source)
        if len(selected) < len(docs):
            source_report.skipped["mixture_weight"] += len(docs) - len(selected)
        documents.extend(selected)
        report.merge(source_report)
    if not documents and not any(source.type == "instructions" for source in sources):
        raise UserError("the recipe's data sources yield no documents: check data.sources paths and filters")
    return documents, report


def _load_repo(source: RepoSource) -> tuple[list[Document], IngestReport]:
    return walk_repository(
        source.path,
        max_file_bytes=source.max_file_bytes,
        exclude=source.exclude,
        languages=source.languages,
        invalid_utf8=source.invalid_utf8,
        skip_generated=source.skip_generated,
    )


def _existing_file(path: str, what: str) -> Path:
    file = Path(path)
    if not file.is_file():
        raise UserError(f"{what} {path} not found: check data.sources[].path (relative to the current directory)")
    return file


def _load_jsonl(source: JsonlSource) -> tuple[list[Document], IngestReport]:
    file = _existing_file(source.path, "JSONL file")
    report = IngestReport()
    documents = []
    with file.open("rb") as handle:
        for number, raw in enumerate(handle, 1):
            if not raw.strip():
                continue
            report.files_seen += 1
            report.bytes_seen += len(raw)
            try:
                record = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError):
                raise UserError(f"{file} line {number} is not valid JSON: fix or remove that line") from None
            text = record.get(source.text_field) if isinstance(record, dict) else None
            if not isinstance(text, str) or not text:
                report.skipped["missing_text_field"] += 1
                continue
            path = str(record.get(source.path_field, "")) if source.path_field else f"{file.name}:{number}"
            language = record.get(source.language_field) if source.language_field else None
            language = language or detect_language(path) or "text"
            documents.append(Document(path=path, language=language, text=text))
            _count_kept(report, language, text)
    if not documents:
        raise UserError(
            f"{file}: no record has a non-empty {source.text_field!r} field; set text_field to the right key"
        )
    return documents, report


def _load_text(source: TextSource) -> tuple[list[Document], IngestReport]:
    root = Path(source.path)
    if root.is_dir():
        files = sorted(root.rglob("*.txt"))
    elif root.is_file():
        files = [root]
    else:
        raise UserError(f"text source {source.path} not found: point data.sources[].path at a .txt file or a folder")
    report = IngestReport()
    documents = []
    for file in files:
        report.files_seen += 1
        raw = file.read_bytes()
        report.bytes_seen += len(raw)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            report.skipped["invalid_utf8"] += 1
            continue
        if not text.strip():
            report.skipped["empty"] += 1
            continue
        documents.append(
            Document(
                path=file.name if root.is_file() else file.relative_to(root).as_posix(), language="text", text=text
            )
        )
        _count_kept(report, "text", text)
    return documents, report


def _load_dataset(source: DatasetSource) -> tuple[list[Document], IngestReport]:
    import datasets

    path = Path(source.path)
    if not path.exists():
        raise UserError(f"dataset {source.path} not found: give a save_to_disk folder or a local data file/folder")
    try:
        if (path / "dataset_info.json").is_file() or (path / "dataset_dict.json").is_file():
            loaded = datasets.load_from_disk(str(path))
            data = loaded[source.split] if isinstance(loaded, datasets.DatasetDict) else loaded
        else:
            data = datasets.load_dataset(str(path), split=source.split)
    except (KeyError, ValueError, FileNotFoundError) as exc:
        raise UserError(f"dataset {source.path} could not be read ({exc}); check data.sources[].split") from None
    if source.text_field not in data.column_names:
        raise UserError(
            f"dataset {source.path} has no column {source.text_field!r} (columns: {', '.join(data.column_names)}); "
            "set text_field"
        )
    report = IngestReport()
    documents = []
    for index, text in enumerate(data[source.text_field]):
        report.files_seen += 1
        if not isinstance(text, str) or not text.strip():
            report.skipped["empty"] += 1
            continue
        report.bytes_seen += len(text.encode("utf-8"))
        documents.append(Document(path=f"{path.name}:{index}", language="text", text=text))
        _count_kept(report, "text", text)
    return documents, report


def _count_kept(report: IngestReport, language: str, text: str) -> None:
    report.files_kept += 1
    report.bytes_kept += len(text.encode("utf-8"))
    report.languages[language] += 1


_LOADERS = {RepoSource: _load_repo, JsonlSource: _load_jsonl, TextSource: _load_text, DatasetSource: _load_dataset}
