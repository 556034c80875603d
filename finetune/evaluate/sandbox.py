"""Run untrusted generated code (benchmark tests) so that it cannot outlive its task, see the eval, or touch its files.

Each program runs under a supervisor (`sandbox_init.py`) that enforces the timeout and, when the program ends,
kills everything it started. The strongest isolation this system allows is chosen once per eval and recorded:

- "namespace" (Linux with util-linux `unshare`; as root, or unprivileged where user namespaces are enabled): new
  PID, mount and network namespaces. The eval is not visible from inside; every process dies with the
  namespace; /tmp is a private 64 MB tmpfs, /root and /home are hidden, every other mount is read-only, no network.
  As root the program runs as `nobody`; unprivileged it runs with no capabilities.
- "subreaper" (Linux): the supervisor is the child subreaper, so setsid daemons come back to it and die; as root
  the program runs as `nobody` when `nobody` can run this Python.
- "session" (other POSIX, e.g. macOS): the program's process group is killed.

Always: a fresh minimal environment, a private working folder, no inherited descriptors, address space, CPU time,
file size and (non-root) process count limits, stdout discarded and only the last 64 KB of stderr kept.
The README (Reliability) has the table of what each level stops and what it does not.
"""

from __future__ import annotations

import contextlib
import ctypes
import marshal
import os
import selectors
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from finetune.errors import UserError
from finetune.io import pid_alive

DEFAULT_TIMEOUT_S = 10.0
DEFAULT_MEMORY_MB = 1024
ISOLATIONS = ("namespace", "subreaper", "session")
DIR_PREFIX = "finetune-sandbox-"  # + owner pid + "-": a later eval removes the folder once that pid is gone
STDERR_KEEP = 64 * 1024
TMP_MB = 64  # the private /tmp in "namespace" mode
FILE_MB = 64  # the largest file a program may write
EXTRA_PROCESSES = 256  # processes a program may add to its user's count (unprivileged, or as nobody)
GRACE_S = 5.0  # past the timeout, how long the supervisor gets before it is killed itself
_INIT = str(Path(__file__).with_name("sandbox_init.py"))
_ENV = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "LANG": "C.UTF-8",
    "PYTHONDONTWRITEBYTECODE": "1",
    "PYTHONHASHSEED": "0",
}
_PROBE = "import os, sys\nsys.exit(0 if os.getcwd() else 1)\n"


@dataclass(frozen=True)
class Outcome:
    """What running one program did: passed, or why not (timeout, memory, the exception's last line)."""

    passed: bool
    reason: str
    seconds: float


@dataclass
class _Level:
    """One way to supervise: the isolation, the command prefix that enters it, and whom the program runs as."""

    isolation: str
    prefix: list[str] = field(default_factory=list)
    uid: int | None = None
    gid: int | None = None
    drop_caps: bool = False

    @property
    def user(self) -> str:
        if self.uid is not None:
            return _name(self.uid)
        return "root (no capabilities)" if self.drop_caps and _euid() == 0 else _me()


def _euid() -> int:
    return os.geteuid() if hasattr(os, "geteuid") else -1  # -1: not POSIX, no users to switch between


def _me() -> str:
    return _name(_euid())


def _name(uid: int) -> str:
    try:
        import pwd

        return pwd.getpwuid(uid).pw_name
    except (ImportError, KeyError):
        return str(uid)


def _nobody() -> tuple[int, int]:
    import pwd

    try:
        entry = pwd.getpwnam("nobody")
        return entry.pw_uid, entry.pw_gid
    except KeyError:
        return 65534, 65534


def _candidates() -> list[_Level]:
    """Every level this system might offer, strongest first (each is probed before use)."""
    if os.name != "posix":
        return []
    root = os.geteuid() == 0
    nobody = _nobody()
    levels = []
    if sys.platform.startswith("linux"):
        unshare = shutil.which("unshare")
        if unshare:
            prefix = [unshare, "--pid", "--fork", "--kill-child", "--mount-proc", "--net"]
            if root:
                levels.append(_Level("namespace", prefix, *nobody))
            else:
                levels.append(_Level("namespace", [*prefix, "--user", "--map-root-user"], drop_caps=True))
        if root:
            levels.append(_Level("subreaper", [], *nobody))
        levels.append(_Level("subreaper", [], drop_caps=root))
    if root:
        levels.append(_Level("session", [], *nobody))
    levels.append(_Level("session", [], drop_caps=root))
    return levels


def _count_processes(uid: int) -> int:
    count = 0
    for name in os.listdir("/proc") if os.path.isdir("/proc") else []:
        with contextlib.suppress(OSError):
            count += name.isdigit() and os.stat(f"/proc/{name}").st_uid == uid
    return count


def _expose() -> list[str]:
    """The interpreter's folders, which must stay visible when /root and /home are hidden."""
    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix, os.path.dirname(sys.executable)}
    paths.add(os.path.dirname(os.path.realpath(sys.executable)))
    return sorted({os.path.realpath(p) for p in paths} | paths)


def sweep_stale(tmp: str | None = None) -> list[str]:
    """Remove sandbox folders whose owner process is gone (an eval that was killed); never a live eval's folder."""
    removed = []
    base = Path(tmp or tempfile.gettempdir())
    for path in base.glob(f"{DIR_PREFIX}*-*"):
        owner = path.name[len(DIR_PREFIX) :].split("-", 1)[0]
        if not owner.isdigit() or not path.is_dir() or path.is_symlink() or pid_alive(int(owner)):
            continue  # not ours to judge, or its eval is alive (or the pid belongs to someone else)
        _remove(path)
        if not path.exists():
            removed.append(str(path))
    return removed


def _remove(path: Path) -> None:
    """rmtree that also gets through folders the program made unreadable."""

    def fix(function, name, _exc) -> None:
        parent = os.path.dirname(name)
        try:
            os.chmod(parent, stat.S_IRWXU)
            if os.path.isdir(name) and not os.path.islink(name):
                os.chmod(name, stat.S_IRWXU)
                shutil.rmtree(name, ignore_errors=True)
            else:
                os.unlink(name)
        except OSError:
            pass

    shutil.rmtree(path, onerror=fix)


def _set_dumpable(value: int) -> None:
    """Non-dumpable makes the eval's /proc files (environ, cwd, fd) root's: same-user programs cannot read them."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(4, ctypes.c_ulong(value), 0, 0, 0)


class Sandbox:
    """Runs programs under the strongest isolation available (or the one asked for); a context manager."""

    def __init__(
        self,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        memory_mb: int = DEFAULT_MEMORY_MB,
        isolation: str = "auto",
    ) -> None:
        if isolation not in ("auto", *ISOLATIONS):
            raise UserError(f"unknown sandbox isolation {isolation!r}: use auto, {', '.join(ISOLATIONS)}")
        self.timeout_s, self.memory_mb = timeout_s, memory_mb
        self.removed_stale = sweep_stale()
        self.root = Path(tempfile.mkdtemp(prefix=f"{DIR_PREFIX}{os.getpid()}-"))
        os.chmod(self.root, 0o711)  # `nobody` may enter its own task folder, not list the others
        self.notes: list[str] = []
        self._dumpable_changed = self._stopping = False
        # The supervisors hold the read end; the eval alone holds the write end. When the eval dies, however it
        # dies, they read end-of-file and kill their tests at once instead of at the timeout.
        self._lifeline, self._lifeline_keep = os.pipe()
        try:
            self.level = self._choose(isolation)
        except BaseException:
            self.close()
            raise
        uid = self.level.uid if self.level.uid is not None else _euid()
        self.nproc = _count_processes(uid) + EXTRA_PROCESSES if sys.platform.startswith("linux") else 0
        if self.level.isolation not in ("namespace", "none") and self.level.uid is None:
            _set_dumpable(0)
            self._dumpable_changed = True

    def _choose(self, wanted: str) -> _Level:
        failures = []
        if sys.platform.startswith("linux") and not shutil.which("unshare") and wanted in ("auto", "namespace"):
            failures.append("namespace: util-linux `unshare` not found on PATH")
        for level in _candidates():
            if wanted not in ("auto", level.isolation):
                continue
            outcome = self._run(_PROBE, level, timeout_s=10.0)
            if outcome.passed:
                if failures:
                    self.notes.append("stronger isolation unavailable: " + "; ".join(failures))
                return level
            failures.append(f"{level.isolation} as {level.user}: {outcome.reason}")
        if wanted == "auto" and os.name != "posix":
            self.notes.append("no process isolation on this system: only the timeout applies")
            return _Level("none")
        why = "; ".join(failures) or "not supported"
        if wanted == "auto":
            raise UserError(f"no sandbox works here ({why}): run the eval where `python -I` can start a child process")
        raise UserError(f"sandbox isolation {wanted!r} is not available here ({why}): use --isolation auto")

    def describe(self) -> dict:
        """What results.json records about the sandbox."""
        return {
            "isolation": self.level.isolation,
            "user": self.level.user,
            # the test runs as the eval's own user outside any namespace: it can write whatever the eval can
            "same_user_as_eval": self.level.uid is None and self.level.isolation != "namespace",
            "timeout_s": self.timeout_s,
            "memory_mb": self.memory_mb,
            "notes": self.notes,
        }

    def run(self, source: str) -> Outcome:
        """Run `source` as a Python program; it passes when it exits 0 within the limits."""
        return self._run(source, self.level, timeout_s=self.timeout_s)

    def run_many(self, sources: list[str], *, workers: int | None = None, on_done=None) -> list[Outcome]:
        """Run many programs, a few at a time; results in input order. `on_done(index, outcome)` after each."""
        workers = workers or max(1, min(8, os.cpu_count() or 1))

        def one(index: int) -> Outcome:
            outcome = self.run(sources[index])
            if on_done is not None and not self._stopping:
                on_done(index, outcome)
            return outcome

        pool = ThreadPoolExecutor(max_workers=workers)
        try:
            return list(pool.map(one, range(len(sources))))
        except BaseException:
            # Ctrl-C (or any error): tests still running are killed through the lifeline, not recorded as
            # failures, and queued ones never start.
            self._stopping = True
            self._close_lifeline()
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def _close_lifeline(self) -> None:
        for name in ("_lifeline_keep", "_lifeline"):
            if getattr(self, name, None) is not None:
                os.close(getattr(self, name))
                setattr(self, name, None)

    def close(self) -> None:
        self._close_lifeline()
        if self._dumpable_changed:
            _set_dumpable(1)
            self._dumpable_changed = False
        _remove(self.root)

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *_exc) -> None:
        self.close()

    # ---------------------------------------------------------------------------------------- one program

    def _run(self, source: str, level: _Level, *, timeout_s: float) -> Outcome:
        start = time.perf_counter()
        if level.isolation == "none":
            return self._run_plain(source, timeout_s, start)
        work = Path(tempfile.mkdtemp(dir=self.root))
        try:
            (work / "program.py").write_text(source, encoding="utf-8")
            os.chmod(work / "program.py", 0o644)
            if level.uid is not None and level.isolation != "namespace":
                os.chown(work, level.uid, level.gid)  # its working folder is the one place it may write
            status, stderr = self._supervise(work, level, timeout_s)
        finally:
            _remove(work)
        return _outcome(status, stderr, timeout_s, time.perf_counter() - start)

    def _supervise(self, work: Path, level: _Level, timeout_s: float) -> tuple[dict, str]:
        read_status, write_status = os.pipe()
        config = {
            "mode": level.isolation,
            "dir": str(work),
            "timeout": timeout_s,
            "memory_mb": self.memory_mb,
            "file_mb": FILE_MB,
            "tmp_mb": TMP_MB,
            "nproc": getattr(self, "nproc", 0) if (level.uid is not None or _euid() != 0) else 0,
            "uid": level.uid,
            "gid": level.gid,
            "drop_caps": level.drop_caps,
            "hide": ["/root", "/home"],
            "expose": _expose(),
            "python": sys.executable,
            "env": _ENV,
            "status_fd": write_status,
            "lifeline_fd": self._lifeline,
        }
        try:
            process = subprocess.Popen(
                [*level.prefix, sys.executable, "-I", "-S", _INIT, marshal.dumps(config).hex()],
                cwd=work,
                env=_ENV,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                pass_fds=(write_status, self._lifeline),
                start_new_session=True,
            )
        except OSError as exc:
            os.close(read_status)
            return {"error": f"sandbox could not start: {exc}"}, ""
        finally:
            os.close(write_status)
        status, stderr = _collect(process, read_status, time.monotonic() + timeout_s + GRACE_S)
        return status, stderr

    def _run_plain(self, source: str, timeout_s: float, start: float) -> Outcome:
        """No supervisor at all (not POSIX): the program alone, killed at the timeout."""
        with tempfile.TemporaryDirectory(dir=self.root) as work:
            script = os.path.join(work, "program.py")
            Path(script).write_text(source, encoding="utf-8")
            try:
                done = subprocess.run(
                    [sys.executable, "-I", script], cwd=work, env=_ENV, stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=timeout_s,
                )  # fmt: skip
            except subprocess.TimeoutExpired:
                return Outcome(False, f"timed out after {timeout_s:g}s", time.perf_counter() - start)
            status = {"returncode": done.returncode, "timed_out": False}
            stderr = done.stderr[-STDERR_KEEP:].decode("utf-8", "replace")
        return _outcome(status, stderr, timeout_s, time.perf_counter() - start)


def _collect(process: subprocess.Popen, status_fd: int, deadline: float) -> tuple[dict, str]:
    """Read the supervisor's status line and the program's stderr (last 64 KB kept) until both end or the deadline."""
    tail = bytearray()
    status = bytearray()
    selector = selectors.DefaultSelector()
    selector.register(process.stderr, selectors.EVENT_READ)
    selector.register(status_fd, selectors.EVENT_READ)
    open_fds = 2
    status_closed_at = None
    while open_fds:
        now = time.monotonic()
        if now >= deadline or (status_closed_at is not None and now - status_closed_at > 0.5):
            break  # a stuck supervisor, or (session mode) a leftover process holding stderr
        for key, _ in selector.select(timeout=min(0.5, deadline - now)):
            chunk = os.read(key.fd, 65536)
            if key.fileobj is process.stderr:
                tail += chunk
                del tail[:-STDERR_KEEP]
            elif len(status) < 4096:
                status += chunk
            if not chunk:
                selector.unregister(key.fileobj)
                open_fds -= 1
                if key.fd == status_fd:
                    status_closed_at = time.monotonic()
    selector.close()
    os.close(status_fd)
    process.stderr.close()
    if process.poll() is None and status_closed_at is None:
        _kill_session(process)  # past the deadline: the supervisor is stuck
    try:
        process.wait(timeout=GRACE_S)
    except subprocess.TimeoutExpired:
        _kill_session(process)
        process.wait()
    word, _, rest = status.decode("utf-8", "replace").partition("\n")[0].partition(" ")
    if word == "exit" and rest.lstrip("-").isdigit():
        parsed: dict = {"returncode": int(rest), "timed_out": False}
    elif word == "timeout":
        parsed = {"timed_out": True}
    elif word == "error":
        parsed = {"error": rest}
    else:
        parsed = {"error": f"sandbox supervisor ended without a result (exit status {process.returncode})"}
    return parsed, tail.decode("utf-8", "replace")


def _kill_session(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        process.kill()


def _outcome(status: dict, stderr: str, timeout_s: float, seconds: float) -> Outcome:
    if "error" in status:
        last = _last_line(stderr)
        return Outcome(False, status["error"] + (f": {last}" if last else ""), seconds)
    if status.get("timed_out"):
        return Outcome(False, f"timed out after {timeout_s:g}s", seconds)
    code = status.get("returncode")
    if code == 0:
        return Outcome(True, "passed", seconds)
    return Outcome(False, _reason(code, stderr), seconds)


def _last_line(stderr: str) -> str:
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    return lines[-1].strip()[:300] if lines else ""


def _reason(returncode: int, stderr: str) -> str:
    if "MemoryError" in stderr:
        return "memory limit exceeded (MemoryError)"
    if returncode < 0:
        name = signal.Signals(-returncode).name if -returncode in signal.Signals._value2member_map_ else returncode
        if -returncode in (signal.SIGXCPU, signal.SIGKILL):
            return f"killed by {name} (CPU or memory limit)"
        return f"killed by {name}"
    return _last_line(stderr) or f"exit status {returncode}"


def run_program(
    source: str,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    memory_mb: int = DEFAULT_MEMORY_MB,
    isolation: str = "auto",
) -> Outcome:
    """Run one program in a sandbox of its own (for a few programs; many go through one `Sandbox`)."""
    with Sandbox(timeout_s=timeout_s, memory_mb=memory_mb, isolation=isolation) as sandbox:
        return sandbox.run(source)
