"""One run per output directory: an advisory lock held for the run's whole life and released by the kernel.

Two runs into one `output_dir` used to train in the same `.partial` folder and mix their checkpoints and metrics.
The lock is `flock` on `<output_dir>.lock`: the kernel drops it when its process dies, even by kill -9, so a lock
left by a killed run never blocks the next one. The holder writes its pid, host and start time into the file so
the refusal can say who holds it. On release the file is deleted; a run that opened the file just before that
checks, once locked, that it holds the file now at the path (else it locks the new one).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
from pathlib import Path

from finetune.errors import UserError

try:
    import fcntl
except ImportError:  # Windows: no flock; runs are not locked there
    fcntl = None  # type: ignore[assignment]


class RunLock:
    """`with RunLock(path, what):` holds the lock or raises a one-line UserError naming the holder."""

    def __init__(self, path: Path, what: str):
        self.path = path
        self.what = what  # e.g. "output_dir runs/x", for the message
        self._fd: int | None = None
        self.note: str | None = None  # why the run is not locked, when the file system refuses locks

    def acquire(self) -> None:
        if fcntl is None:
            return
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise UserError(f"cannot write {self.what} ({exc.strerror}): choose a writable output_dir") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _describe(os.pread(fd, 4096, 0))
                os.close(fd)
                raise UserError(
                    f"{self.what} is in use by another finetune run ({holder}): wait for it to finish, "
                    "or choose another output_dir"
                ) from None
            except OSError as exc:  # e.g. NFS without lock support
                os.close(fd)
                self.note = f"could not lock {self.path} ({exc.strerror}): two runs into this output_dir would mix"
                return
            try:
                current = os.stat(self.path)
            except FileNotFoundError:
                current = None
            mine = os.fstat(fd)
            if current is not None and (current.st_ino, current.st_dev) == (mine.st_ino, mine.st_dev):
                break
            os.close(fd)  # the previous holder deleted the file after we opened it: lock the new one
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "command": " ".join(sys.argv[:3]),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # while still locked: nobody can lock this file between the unlink and the close
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _describe(raw: bytes) -> str:
    try:
        info = json.loads(raw.decode())
        return f"pid {info['pid']} on {info['host']}, started {info['started']}"
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        return "it has not written its details yet"
