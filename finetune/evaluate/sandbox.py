"""Run untrusted generated code in a child process with a wall-clock timeout and a memory limit.

Each program runs in `python -I` (isolated: no user site, no PYTHON* variables) in a fresh temporary directory,
in its own session so that a timeout kills everything it started. On POSIX the child limits its own address
space and CPU time with `resource.setrlimit` before it runs the program, so a memory hog gets a MemoryError instead of
taking the machine, and an infinite loop dies at the timeout. This is a guard against accidents, not a security
boundary: do not run benchmarks you do not trust outside a container.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

DEFAULT_TIMEOUT_S = 10.0
DEFAULT_MEMORY_MB = 1024


@dataclass(frozen=True)
class Outcome:
    """What running one program did: passed, or why not (timeout, memory, the exception's last line)."""

    passed: bool
    reason: str
    seconds: float


# The child sets its own limits before it runs the program (no preexec_fn: that is unsafe with threads).
_LAUNCHER = """
import resource, runpy, sys
limit = int(sys.argv[1]) * 1024 * 1024
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
resource.setrlimit(resource.RLIMIT_CPU, (int(sys.argv[2]), int(sys.argv[2]) + 1))
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
sys.argv = [sys.argv[3]]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def _command(script: str, memory_mb: int, timeout_s: float) -> list[str]:
    """The child's command line: under the limit-setting launcher on POSIX, the plain script elsewhere."""
    if os.name != "posix":
        return [sys.executable, "-I", script]
    return [sys.executable, "-I", "-c", _LAUNCHER, str(memory_mb), str(max(1, int(timeout_s) + 1)), script]


def _kill_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        process.kill()


def _reason(returncode: int, stderr: str) -> str:
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    last = lines[-1].strip() if lines else ""
    if "MemoryError" in stderr:
        return "memory limit exceeded (MemoryError)"
    if returncode < 0:
        name = signal.Signals(-returncode).name if -returncode in signal.Signals._value2member_map_ else returncode
        if -returncode in (signal.SIGXCPU, signal.SIGKILL):
            return f"killed by {name} (CPU or memory limit)"
        return f"killed by {name}"
    return last[:300] or f"exit status {returncode}"


def run_program(
    source: str, *, timeout_s: float = DEFAULT_TIMEOUT_S, memory_mb: int = DEFAULT_MEMORY_MB
) -> Outcome:
    """Run `source` as a Python program; it passes when it exits 0 within the limits."""
    import time

    posix = os.name == "posix"
    with tempfile.TemporaryDirectory(prefix="finetune-sandbox-") as tmp:
        script = os.path.join(tmp, "program.py")
        with open(script, "w", encoding="utf-8") as handle:
            handle.write(source)
        env = {"PATH": os.environ.get("PATH", ""), "PYTHONDONTWRITEBYTECODE": "1", "PYTHONHASHSEED": "0"}
        start = time.perf_counter()
        process = subprocess.Popen(
            _command(script, memory_mb, timeout_s),
            cwd=tmp,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
            start_new_session=posix,
        )
        try:
            _, stderr = process.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _kill_group(process) if posix else process.kill()
            process.communicate()
            return Outcome(False, f"timed out after {timeout_s:g}s", time.perf_counter() - start)
        finally:
            if posix and process.poll() is None:
                _kill_group(process)
        seconds = time.perf_counter() - start
    if process.returncode == 0:
        return Outcome(True, "passed", seconds)
    return Outcome(False, _reason(process.returncode, stderr), seconds)


def run_programs(
    sources: list[str],
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    memory_mb: int = DEFAULT_MEMORY_MB,
    workers: int | None = None,
    on_done=None,
) -> list[Outcome]:
    """Run many programs, a few at a time; results in input order. `on_done()` is called after each."""
    workers = workers or max(1, min(8, os.cpu_count() or 1))

    def one(source: str) -> Outcome:
        outcome = run_program(source, timeout_s=timeout_s, memory_mb=memory_mb)
        if on_done is not None:
            on_done()
        return outcome

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(one, sources))
