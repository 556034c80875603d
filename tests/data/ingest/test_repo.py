"""Walking a repository: every skip rule, exact report counts, and errors the user can act on."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from finetune.data.ingest import walk as repo_module
from finetune.data.ingest.walk import IngestReport, walk_repository
from finetune.errors import UserError

SAMPLE_REPO = Path(__file__).resolve().parents[3] / "data" / "sample-repo"
BIG_SIZE = 50 * 1024 * 1024

# Files of the fixture repository outside pruned folders, with the reason each is skipped (None: kept).
FILES: dict[str, tuple[bytes, str | None]] = {
    ".gitignore": (b"*.log\nscratch_*.py\ngenerated/\n!generated/keep.py\n", "unknown_language"),
    ".git/info/exclude": (b"local_notes.py\n", None),  # inside .git: never walked
    "README.md": ("# Demo\n\nGrüße, 世界 🎉\r\nwindows line\r\n".encode(), None),
    "app.log": (b"started\n", "gitignored"),
    "app.min.js": (b"var a=1;\n", "vendored"),
    "blank.py": (b"\n   \n\t\n", "empty"),
    "data.xyz": (b"1,2,3\n", "unknown_language"),
    "empty.py": (b"", "empty"),
    "installer.sh": (b"#!/bin/sh\nexit 0\n__PAYLOAD__\n\x00\x01\x02\xff", "binary"),
    "latin1.py": ("# caf\xe9\n".encode("latin-1"), "invalid_utf8"),
    "legacy_old.py": (b"print('old')\n", "excluded"),
    "local.js": (b"export const local = true;\n", None),
    "local_notes.py": (b"notes = 1\n", "gitignored"),
    "logo.png": (b"\x89PNG\r\n\x1a\n\x00\x00", "binary"),
    "main.py": (b"def main() -> None:\n    print('hi')\n", None),
    "notes": (b"just some words\n", "unknown_language"),
    "scratch_root.py": (b"x = 1\n", "gitignored"),
    "tool": (b"#!/usr/bin/env python3\nprint('tool')\n", None),
    "sub/.gitignore": (b"!scratch_keep.py\nlocal.js\n/only_here.py\n", "unknown_language"),
    "sub/lib.go": (b"package sub\n\nfunc Add(a, b int) int { return a + b }\n", None),
    "sub/local.js": (b"export const sub = 1;\n", "gitignored"),
    "sub/only_here.py": (b"here = 1\n", "gitignored"),
    "sub/scratch_drop.py": (b"drop = 1\n", "gitignored"),
    "sub/scratch_keep.py": (b"keep = 1\n", None),
    "sub/x/only_here.py": (b"deeper = 1\n", None),
    "sub/x/scratch_x.py": (b"x = 2\n", "gitignored"),
}
# Files in folders the walk never enters, and why each folder is skipped.
PRUNED: dict[str, bytes] = {
    ".git/HEAD": b"ref: refs/heads/main\n",
    "docs/guide.md": b"# Guide\n",
    "generated/keep.py": b"kept = False  # a negation can't re-include a file in an ignored folder\n",
    "node_modules/left-pad/index.js": b"module.exports = 1;\n",
    "sub/build/out.py": b"built = 1\n",
}
PRUNED_DIRS = Counter({"git": 1, "excluded": 1, "gitignored": 1, "vendored": 2})
EXCLUDE = ("docs/", "legacy_*.py")


def _write(root: Path, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


@pytest.fixture
def messy_repo(tmp_path: Path) -> Path:
    """A repository with one of everything a walk must survive; big.py is a sparse 50 MB file."""
    root = tmp_path / "repo"
    # Written in reverse order so that directory order on disk is unlikely to be sorted.
    _write(root, dict(reversed(list({rel: data for rel, (data, _) in FILES.items()}.items()))))
    _write(root, PRUNED)
    with open(root / "big.py", "wb") as handle:
        handle.truncate(BIG_SIZE)
    return root


def _walked_files() -> dict[str, tuple[bytes, str | None]]:
    return {rel: item for rel, item in FILES.items() if not rel.startswith(".git/")}


def test_messy_repo_keeps_exactly_the_usable_files(messy_repo: Path) -> None:
    docs, _ = walk_repository(messy_repo, exclude=EXCLUDE)
    expected = sorted(rel for rel, (_, reason) in _walked_files().items() if reason is None)
    assert [doc.path for doc in docs] == expected
    by_path = {doc.path: doc for doc in docs}
    assert by_path["tool"].language == "python"  # from the shebang
    assert by_path["sub/lib.go"].language == "go"
    assert by_path["README.md"].language == "markdown"


def test_report_counts_are_exact(messy_repo: Path) -> None:
    docs, report = walk_repository(messy_repo, exclude=EXCLUDE)
    walked = _walked_files()
    expected_skips = Counter(reason for _, reason in walked.values() if reason is not None)
    expected_skips["too_large"] += 1  # big.py
    assert report.skipped == expected_skips
    assert report.skipped_dirs == PRUNED_DIRS
    assert report.files_seen == len(walked) + 1
    assert report.files_kept == len(docs) == report.files_seen - sum(report.skipped.values())
    assert report.bytes_kept == sum(len(doc.text.encode()) for doc in docs)
    assert report.bytes_seen == sum(len(data) for data, _ in walked.values()) + BIG_SIZE
    assert report.languages == Counter({"python": 4, "markdown": 1, "javascript": 1, "go": 1})


def test_text_is_kept_byte_for_byte(messy_repo: Path) -> None:
    docs, _ = walk_repository(messy_repo, exclude=EXCLUDE)
    readme = next(doc for doc in docs if doc.path == "README.md")
    assert readme.text.encode() == FILES["README.md"][0]  # CRLF and non-ASCII untouched


def test_oversized_file_is_never_opened(messy_repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[str] = []

    def spy_open(path: str, *args: Any, **kwargs: Any) -> Any:
        opened.append(os.path.basename(path))
        return open(path, *args, **kwargs)

    monkeypatch.setattr(repo_module, "open", spy_open, raising=False)
    _, report = walk_repository(messy_repo, exclude=EXCLUDE)
    assert "main.py" in opened  # the spy sees the walk's reads
    assert "big.py" not in opened
    assert report.skipped["too_large"] == 1


def test_unknown_extension_huge_file_reads_only_its_head(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write(tmp_path, {"main.py": b"x = 1\n"})
    with open(tmp_path / "dump", "wb") as handle:
        handle.write(b"#!/bin/bash\n" + b"echo hi\n" * 2000)  # text beyond the sniffed head, then NULs
        handle.truncate(BIG_SIZE)
    reads: list[int] = []
    real_read = repo_module._read_bytes
    monkeypatch.setattr(repo_module, "_read_bytes", lambda path, limit: reads.append(limit) or real_read(path, limit))
    _, report = walk_repository(tmp_path)
    assert report.skipped == Counter({"too_large": 1})
    assert sorted(reads) == [repo_module.SNIFF_BYTES, 1_000_001]  # dump's head only, main.py whole


def test_order_is_deterministic_and_sorted(messy_repo: Path) -> None:
    first, _ = walk_repository(messy_repo, exclude=EXCLUDE)
    second, _ = walk_repository(messy_repo, exclude=EXCLUDE)
    paths = [doc.path for doc in first]
    assert paths == [doc.path for doc in second]
    assert paths == sorted(paths)
    assert all("\\" not in path and not path.startswith("/") for path in paths)


def test_without_exclude_the_excluded_files_come_back(messy_repo: Path) -> None:
    docs, report = walk_repository(messy_repo)
    assert "legacy_old.py" in {doc.path for doc in docs}
    assert report.skipped["excluded"] == 0
    assert report.skipped_dirs["excluded"] == 0


def test_git_info_exclude_is_honoured(tmp_path: Path) -> None:
    _write(tmp_path, {"a.py": b"a = 1\n", "b.py": b"b = 1\n", ".git/info/exclude": b"# local\nb.py\n"})
    docs, report = walk_repository(tmp_path)
    assert [doc.path for doc in docs] == ["a.py"]
    assert report.skipped == Counter({"gitignored": 1})


def test_nested_gitignore_overrides_info_exclude(tmp_path: Path) -> None:
    _write(tmp_path, {"a.py": b"a = 1\n", "b.py": b"b = 1\n", ".git/info/exclude": b"*.py\n", ".gitignore": b"!b.py\n"})
    docs, _ = walk_repository(tmp_path)
    assert [doc.path for doc in docs] == ["b.py"]


def test_languages_filter(messy_repo: Path) -> None:
    docs, report = walk_repository(messy_repo, exclude=EXCLUDE, languages=["Python", "go"])
    assert {doc.language for doc in docs} == {"python", "go"}
    assert report.skipped["other_language"] == 3  # README.md, local.js, installer.sh (filtered before it is read)
    assert report.languages == Counter({"python": 4, "go": 1})


def test_unknown_language_in_filter_names_the_nearest(tmp_path: Path) -> None:
    _write(tmp_path, {"a.py": b"a = 1\n"})
    with pytest.raises(UserError, match="did you mean 'python'"):
        walk_repository(tmp_path, languages=["pyhton"])


def test_invalid_exclude_pattern_is_a_user_error(tmp_path: Path) -> None:
    _write(tmp_path, {"a.py": b"a = 1\n"})
    with pytest.raises(UserError, match="invalid exclude pattern"):
        walk_repository(tmp_path, exclude=["!"])


def test_malformed_gitignore_line_is_ignored_not_fatal(tmp_path: Path) -> None:
    _write(tmp_path, {"a.py": b"a = 1\n", "b.py": b"b = 1\n", ".gitignore": b"!\nb.py\n\xff\xfe\n"})
    docs, _ = walk_repository(tmp_path)
    assert [doc.path for doc in docs] == ["a.py"]


@pytest.fixture
def symlink_repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    outside = tmp_path / "outside"
    _write(root, {"main.py": b"print('main')\n", "sub/mod.py": b"m = 1\n"})
    _write(outside, {"secret.py": b"token = 'x'\n"})
    try:
        os.symlink(".", root / "loop", target_is_directory=True)
        os.symlink("..", root / "sub" / "up", target_is_directory=True)
        os.symlink(outside, root / "ext", target_is_directory=True)
        os.symlink(outside / "secret.py", root / "outside.py")
        os.symlink("main.py", root / "inside_link.py")
        os.symlink("missing.py", root / "broken.py")
        os.symlink("self_loop.py", root / "self_loop.py")
    except (OSError, NotImplementedError):
        pytest.skip("symlinks are not available here")
    return root


def test_symlinks_loops_and_escapes(symlink_repo: Path) -> None:
    docs, report = walk_repository(symlink_repo)
    assert [doc.path for doc in docs] == ["inside_link.py", "main.py", "sub/mod.py"]
    assert docs[0].text == docs[1].text
    assert report.skipped == Counter({"symlink_outside": 1, "unreadable": 2})
    assert report.skipped_dirs == Counter({"symlink": 3})
    assert report.files_seen == 6
    assert report.bytes_seen == report.bytes_kept  # the outside file's bytes are not counted as seen


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_fifo_is_skipped_without_blocking(tmp_path: Path) -> None:
    _write(tmp_path, {"a.py": b"a = 1\n"})
    os.mkfifo(tmp_path / "pipe.py")
    _, report = walk_repository(tmp_path)
    assert report.skipped == Counter({"unreadable": 1})


def test_file_name_that_is_not_utf8_is_skipped(tmp_path: Path) -> None:
    _write(tmp_path, {"a.py": b"a = 1\n"})
    try:
        with open(os.path.join(os.fsencode(tmp_path), b"caf\xe9.py"), "wb") as handle:
            handle.write(b"x = 1\n")
    except (OSError, ValueError):
        pytest.skip("this file system only takes valid file names")
    docs, report = walk_repository(tmp_path)
    assert [doc.path for doc in docs] == ["a.py"]
    assert report.skipped == Counter({"invalid_utf8": 1})


def test_missing_root_is_a_user_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(UserError, match="does not exist") as info:
        walk_repository(missing)
    assert str(missing) in str(info.value)
    assert "\n" not in str(info.value)


def test_file_root_is_a_user_error(tmp_path: Path) -> None:
    file = tmp_path / "a.py"
    file.write_text("a = 1\n")
    with pytest.raises(UserError, match="is not a directory"):
        walk_repository(file)


def test_nothing_usable_names_the_main_reason_and_fix(tmp_path: Path) -> None:
    _write(tmp_path, {"big_a.py": b"a" * 300, "big_b.py": b"b" * 300, "logo.png": b"\x89PNG"})
    with pytest.raises(UserError) as info:
        walk_repository(tmp_path, max_file_bytes=100)
    message = str(info.value)
    assert "too_large (2)" in message
    assert "raise max_file_bytes (now 100)" in message
    assert "\n" not in message


def test_nothing_usable_because_of_exclude_says_so(tmp_path: Path) -> None:
    _write(tmp_path, {"a.py": b"a = 1\n", "b.py": b"b = 1\n"})
    with pytest.raises(UserError, match=r"excluded \(2\); check the exclude patterns"):
        walk_repository(tmp_path, exclude=["*.py"])


def test_empty_repository_is_a_user_error(tmp_path: Path) -> None:
    _write(tmp_path, {"node_modules/x.js": b"x\n"})
    with pytest.raises(UserError, match=r"no files found .*vendored 1"):
        walk_repository(tmp_path)


def test_non_positive_max_file_bytes_is_a_user_error(tmp_path: Path) -> None:
    _write(tmp_path, {"a.py": b"a = 1\n"})
    with pytest.raises(UserError, match="max_file_bytes must be positive"):
        walk_repository(tmp_path, max_file_bytes=0)


def test_report_serialises_merges_and_summarises(messy_repo: Path) -> None:
    _, report = walk_repository(messy_repo, exclude=EXCLUDE)
    data = json.loads(json.dumps(report.to_dict()))
    assert data["files_kept"] == report.files_kept
    assert data["skipped"]["gitignored"] == 7
    assert list(data["skipped"])[0] == "gitignored"  # largest first
    merged = IngestReport().merge(report).merge(report)
    assert merged.files_seen == 2 * report.files_seen
    assert merged.skipped["gitignored"] == 14
    assert merged.skipped_dirs["vendored"] == 4
    assert merged.languages["python"] == 8
    assert report.skipped["gitignored"] == 7  # merging reads `other` without changing it
    lines = report.summary_lines()
    assert lines[0].startswith(f"kept {report.files_kept} of {report.files_seen} files")
    assert any(line.startswith("skipped files: gitignored 7") for line in lines)
    assert any("vendored 2" in line for line in lines if line.startswith("skipped folders"))
    assert IngestReport().summary_lines() == ["kept 0 of 0 files (0 B of 0 B)"]


def test_sample_repo_is_rich_enough() -> None:
    docs, report = walk_repository(SAMPLE_REPO)
    assert report.files_kept >= 20
    assert len(report.languages) >= 6
    assert 80_000 <= report.bytes_kept <= 150_000
    assert set(report.skipped) <= {"unknown_language"}  # only pyproject.toml, go.mod, Cargo.toml
    assert any(any(ord(char) > 127 for char in doc.text) for doc in docs)
    assert {doc.path: doc.language for doc in docs}["scripts/release"] == "python"  # by its shebang
    assert not (SAMPLE_REPO / ".gitignore").exists()  # git would drop ignored files from the commit
