"""The eval sandbox against hostile benchmark tests: whatever a test starts dies with it, it cannot read the eval's
environment, kill the eval or touch its files, its output cannot fill memory, and a killed eval keeps its results
and resumes. Each attack runs under every isolation level this machine offers (`--isolation` forces the weaker
ones), and the expectations per level are the table in the README's Reliability section.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import tracemalloc
import uuid
from pathlib import Path

import pytest

from finetune.cli.main import main
from finetune.errors import UserError
from finetune.evaluate.sandbox import DIR_PREFIX, STDERR_KEEP, Sandbox, run_program

ROOT = Path(__file__).resolve().parents[2]
SECRET = "FINETUNE_PLANTED_SECRET"
LEVELS = ("namespace", "subreaper", "session")
TMP_FOLDERS = ("/tmp", "/var/tmp", "/dev/shm")


def _level_info(level: str) -> dict | None:
    try:
        with Sandbox(isolation=level, timeout_s=5) as sandbox:
            return sandbox.describe()
    except UserError:
        return None


AVAILABLE = {level: info for level in LEVELS if (info := _level_info(level)) is not None}


def _needs(level: str):
    return pytest.mark.skipif(level not in AVAILABLE, reason=f"isolation {level} is not available on this system")


# ------------------------------------------------------------------------------------------ hostile programs


def _loop(marker: str, trap: str) -> str:
    """A process that carries `marker` on its command line and writes files forever (where it is allowed to)."""
    code = (
        "import os, sys, time\n"
        "while True:\n"
        "    for d in (os.getcwd(), sys.argv[2]):\n"
        "        try:\n"
        "            open(os.path.join(d, 'w%d-' % os.getpid() + sys.argv[1]), 'w').write('x')\n"
        "        except OSError:\n"
        "            pass\n"
        "    time.sleep(0.05)\n"
    )
    return f"[sys.executable, '-c', {code!r}, {marker!r}, {trap!r}]"


def hostile_programs(marker: str, precious: Path, eval_cwd: Path, trap: Path, daemon: bool = True) -> dict[str, str]:
    """name -> module-level code of a benchmark test that attacks the eval (it passes unless it says otherwise)."""
    loop = _loop(marker, str(trap))
    programs = {
        # 50 children that close every descriptor (so no pipe tells anyone they live) and keep writing files
        "forks": f"""
            import os, sys
            for _ in range(50):
                if os.fork() == 0:
                    os.closerange(0, 4096)
                    os.execv(sys.executable, {loop})
        """,
        # a bounded fork bomb: a binary tree of 63 processes, every one of them looping
        "tree": f"""
            import os, sys
            for _ in range(5):
                os.fork()
            if os.fork() == 0:
                os.execv(sys.executable, {loop})
        """,
        # the environment of every process it can see, the parent's first: the eval's secret must not be there
        "environ": f"""
            import os
            found = []
            for pid in [str(os.getppid())] + [p for p in os.listdir('/proc') if p.isdigit()]:
                try:
                    data = open('/proc/' + pid + '/environ', 'rb').read()
                except OSError:
                    continue
                found += [v.decode() for v in data.split(b'\\0') if b'{SECRET}' in v]
            found += [k for k in os.environ if '{SECRET}' in k + os.environ[k]]
            raise SystemExit('ENV ' + repr(sorted(set(found))) + ' cwd-private ' + str(os.getcwd() != {str(eval_cwd)!r}))
        """,
        # files: delete one of the eval's, plant some in its folder and outside its own temporary folder
        "files": f"""
            import os
            done = []
            def attempt(name, action):
                try:
                    action()
                    done.append(name)
                except OSError:
                    pass
            attempt('delete', lambda: os.remove({str(precious)!r}))
            attempt('eval-cwd', lambda: open({str(eval_cwd / marker)!r}, 'w').write('x'))
            def eval_cwd_by_proc():  # the supervisor's parent is the eval: find its folder through /proc
                stat = open('/proc/' + str(os.getppid()) + '/stat').read()
                grandparent = stat.rsplit(')', 1)[1].split()[1]
                open('/proc/' + grandparent + '/cwd/{marker}-proc', 'w').write('x')
            attempt('proc-cwd', eval_cwd_by_proc)
            for folder in ('/tmp', '/var/tmp', '/dev/shm'):
                attempt(folder, lambda folder=folder: open(folder + '/{marker}', 'w').write('x'))
            raise SystemExit('FILES ' + repr(done))
        """,
        # kill the parent: the eval must go on (and record this test)
        "killparent": """
            import os, time
            os.kill(os.getppid(), 9)
            time.sleep(0.5)
        """,
        # output: far more than the eval keeps, then the line that names the failure
        "output": """
            import sys
            block = 'x' * (1 << 20)
            for _ in range(100):
                sys.stdout.write(block)
                sys.stderr.write(block)
            raise ValueError('the last line survives')
        """,
    }
    if daemon:  # setsid + double fork: leaves the process group (the "session" level cannot catch it)
        programs["daemon"] = f"""
            import os, sys
            if os.fork() == 0:
                os.setsid()
                if os.fork() == 0:
                    os.closerange(0, 4096)
                    os.execv(sys.executable, {loop})
                os._exit(0)
            os.wait()
        """
    return {name: textwrap.dedent(code) for name, code in programs.items()}


def survivors(marker: str, tries: int = 10) -> list[int]:
    """Processes whose command line or environment carries `marker`, after a short grace for the kernel."""
    found: list[int] = []
    for _ in range(tries):
        found = []
        for name in os.listdir("/proc"):
            if not name.isdigit() or int(name) == os.getpid():
                continue
            for part in ("cmdline", "environ"):
                try:
                    if marker.encode() in Path(f"/proc/{name}/{part}").read_bytes():
                        found.append(int(name))
                        break
                except OSError:
                    pass
        if not found:
            return found
        time.sleep(0.2)
    return found


def kill_marked(marker: str) -> None:
    for pid in survivors(marker, tries=1):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


def files_with(marker: str, folders: list[Path]) -> list[str]:
    return [str(p) for folder in folders if folder.is_dir() for p in folder.iterdir() if marker in p.name]


@pytest.fixture
def marker():
    """A unique name carried by every hostile process and file; whatever carries it is killed at teardown."""
    mark = f"finetune-hostile-{uuid.uuid4().hex[:12]}"
    yield mark
    kill_marked(mark)
    for folder in TMP_FOLDERS:
        for path in Path(folder).glob(f"*{mark}*"):
            path.unlink(missing_ok=True)


def _benchmark(path: Path, programs: dict[str, str]) -> Path:
    rows = [
        {
            "task_id": f"Hostile/{name}",
            "prompt": "def f():\n",
            "suffix": "\n",
            "canonical_solution": "    return 1\n",
            "test": code + "\n\ndef check(candidate):\n    assert candidate() == 1\n",
            "entry_point": "f",
        }
        for name, code in programs.items()
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def _expected_file_attacks(info: dict) -> list[str]:
    """What the "files" test manages to do at each level: the README table, as data."""
    if info["isolation"] == "namespace":  # these three are its private tmpfs there: nothing reaches the host
        return [d for d in TMP_FOLDERS if os.path.isdir(d)]
    outside = [d for d in TMP_FOLDERS if os.path.isdir(d) and os.stat(d).st_mode & 0o002]
    if info["same_user_as_eval"]:
        return ["delete", "eval-cwd", *outside]  # the eval's own user: its files are the test's files
    return outside  # `nobody`: only world-writable folders


def _cli(args: list[str], cwd: Path, **kwargs) -> subprocess.Popen:
    env = {**os.environ, SECRET: f"{SECRET}=hunter2-{uuid.uuid4().hex}", "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "finetune", *args], cwd=cwd, env=env, text=True, **kwargs)


# --------------------------------------------------------------------------------------- the hostile eval


@pytest.mark.parametrize("level", LEVELS)
def test_hostile_tests_are_contained(level: str, tmp_path: Path, marker: str) -> None:
    if level not in AVAILABLE:
        pytest.skip(f"isolation {level} is not available on this system")
    eval_cwd = tmp_path / "cwd"
    eval_cwd.mkdir()
    precious = eval_cwd / "precious.txt"
    precious.write_text("keep me")
    trap = tmp_path / "trap"  # a folder outside the sandbox that the looping children try to fill
    trap.mkdir(mode=0o777)
    trap.chmod(0o777)
    programs = hostile_programs(marker, precious, eval_cwd, trap, daemon=level != "session")
    bench = _benchmark(tmp_path / "hostile.jsonl", programs)
    out = tmp_path / "out"
    started = time.perf_counter()
    process = _cli(
        ["eval", "--benchmark", str(bench), "--oracle", "--isolation", level, "--timeout", "20", "--out", str(out)],
        eval_cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    stdout, stderr = process.communicate(timeout=300)
    seconds = time.perf_counter() - started
    assert process.returncode == 0, stderr
    # nothing the tests started is alive
    assert survivors(marker) == []
    results = json.loads((out / "results.json").read_text())
    info = results["sandbox"]
    assert results["complete"] is True and info["isolation"] == level and results["tasks"] == len(programs)
    rows = {row["task_id"].split("/")[1]: row for row in map(json.loads, (out / "predictions.jsonl").open())}
    assert set(rows) == set(programs)  # killing its parent did not stop the eval
    for name in ("forks", "tree", "daemon"):
        if name in rows:
            assert rows[name]["oracle.passed"], rows[name]["oracle.reason"]
    # the planted secret is nowhere: not in what the test saw, not in any output
    assert rows["environ"]["oracle.reason"] == "ENV [] cwd-private True"
    everything = stdout + stderr + "".join(p.read_text() for p in out.iterdir())
    assert SECRET + "=" not in everything and "hunter2" not in everything
    # files: exactly the attacks this level does not stop (see the README table)
    expected = _expected_file_attacks(info)
    assert rows["files"]["oracle.reason"] == f"FILES {expected!r}"
    assert precious.exists() == ("delete" not in expected)
    on_host = files_with(marker, [Path(d) for d in TMP_FOLDERS])
    assert on_host == (
        [] if info["isolation"] == "namespace" else [f"{d}/{marker}" for d in expected if d in TMP_FOLDERS]
    )
    if not info["same_user_as_eval"]:
        assert not files_with(marker, [trap])  # walled off: the looping children never wrote outside
    written = files_with(marker, [trap])
    time.sleep(0.5)
    assert files_with(marker, [trap]) == written  # and nothing writes any more
    leftovers = files_with(marker, [eval_cwd, out, Path.home()])
    assert leftovers == ([str(eval_cwd / marker)] if "eval-cwd" in expected else [])
    # a gigabyte-scale printer is a failed test with its last line, nothing more
    assert rows["output"]["oracle.reason"] == "ValueError: the last line survives"
    # and the eval's sandbox folder is gone
    assert not list(Path(tempfile.gettempdir()).glob(f"{DIR_PREFIX}{process.pid}-*"))
    print(f"{level} ({info['user']}): {len(programs)} hostile tests in {seconds:.1f}s")


def test_unprivileged_eval_uses_a_user_namespace(tmp_path: Path, marker: str) -> None:
    """As a non-root user: the sandbox API run by `nobody` (needs root to switch, and a Python `nobody` can run)."""
    python = next((p for p in (sys.executable, "/usr/bin/python3") if _runs_as_nobody(p)), None)
    if os.geteuid() != 0 or python is None:
        pytest.skip("needs root (to become nobody) and a Python interpreter that nobody may execute")
    work = Path(tempfile.mkdtemp(prefix="finetune-nobody-"))
    try:
        work.chmod(0o777)
        precious = work / "precious.txt"
        precious.write_text("keep me")
        precious.chmod(0o644)
        trap = work / "trap"
        trap.mkdir(mode=0o777)
        trap.chmod(0o777)
        programs = hostile_programs(marker, precious, work, trap)
        driver = work / "driver.py"
        driver.write_text(
            textwrap.dedent(f"""
                import json, sys
                sys.path.insert(0, {str(ROOT)!r})
                from finetune.evaluate.sandbox import Sandbox
                programs = json.loads(open({str(work / "programs.json")!r}).read())
                results = {{}}
                for level in ("namespace", "subreaper"):
                    with Sandbox(isolation=level, timeout_s=20) as box:
                        outcomes = box.run_many(list(programs.values()))
                        results[level] = [box.describe(), [o.reason for o in outcomes]]
                print(json.dumps(results))
            """)
        )
        (work / "programs.json").write_text(json.dumps(programs))
        for path in (driver, work / "programs.json"):
            path.chmod(0o644)
        env = {"PATH": "/usr/bin:/bin", "HOME": str(work), SECRET: f"{SECRET}=hunter2"}
        done = subprocess.run(
            [*_as_nobody(), "/bin/sh", "-c", f"exec '{python}' '{driver}'"],
            cwd=work, env=env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        results = json.loads(done.stdout)
        assert survivors(marker) == []
        names = list(programs)
        info, reasons = results["namespace"]
        assert info["isolation"] == "namespace" and info["user"] == "nobody"
        outcome = dict(zip(names, reasons, strict=True))
        assert outcome["environ"] == "ENV [] cwd-private True"
        assert outcome["files"] == f"FILES {[d for d in TMP_FOLDERS if os.path.isdir(d)]!r}"  # its private tmpfs
        assert outcome["forks"] == outcome["daemon"] == outcome["tree"] == "passed"
        # the same user without namespaces: processes still all die; the eval's environment is not readable
        # (it is made non-dumpable), but its files are the test's files
        info, reasons = results["subreaper"]
        outcome = dict(zip(names, reasons, strict=True))
        assert outcome["environ"] == "ENV [] cwd-private True"
        assert outcome["files"].startswith("FILES ['delete', 'eval-cwd'")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _runs_as_nobody(python: str) -> bool:
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        return False
    check = ["/bin/sh", "-c", f"exec '{python}' -I -c 'import json, marshal, ctypes'"]  # exec(2) as nobody would
    return subprocess.run([*_as_nobody(), *check], capture_output=True, cwd="/", timeout=60).returncode == 0


def _as_nobody() -> list[str]:
    entry = pwd.getpwnam("nobody")
    return ["setpriv", f"--reuid={entry.pw_uid}", f"--regid={entry.pw_gid}", "--clear-groups"]


# -------------------------------------------------------------------------------------- limits, in-process


def test_output_is_capped_in_memory() -> None:
    """300 MB on stderr: the eval keeps the last 64 KB (with the failing line) and allocates little."""
    program = "import sys\nfor _ in range(300):\n    sys.stderr.write('x' * (1 << 20))\nraise ValueError('end')\n"
    with Sandbox(timeout_s=60) as sandbox:
        tracemalloc.start()
        outcome = sandbox.run(program)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert outcome.reason == "ValueError: end"
    assert peak < 8 * STDERR_KEEP


def test_file_size_is_capped() -> None:
    outcome = run_program("open('big', 'wb').write(b'x' * (100 << 20))\n", timeout_s=30, memory_mb=512)
    assert not outcome.passed and ("File too large" in outcome.reason or "No space left" in outcome.reason)


def test_unknown_or_unavailable_isolation_is_one_line_error(tmp_path: Path, capsys, monkeypatch) -> None:
    bench = _benchmark(tmp_path / "b.jsonl", {"ok": "pass"})
    args = ["eval", "--benchmark", str(bench), "--oracle", "--out", str(tmp_path / "o")]
    assert main([*args, "--isolation", "chroot"]) == 2 and "--isolation" in capsys.readouterr().err
    # without util-linux `unshare`: asking for namespaces is a one-line error; auto falls back and says why
    monkeypatch.setattr("finetune.evaluate.sandbox.shutil.which", lambda name: None)
    assert main([*args, "--isolation", "namespace"]) == 2
    err = capsys.readouterr().err
    assert "isolation 'namespace' is not available here" in err and "unshare" in err and err.count("\n") == 1
    assert main(args) == 0
    results = json.loads((tmp_path / "o" / "results.json").read_text())
    assert results["sandbox"]["isolation"] == "subreaper" and "unshare" in results["sandbox"]["notes"][0]
    assert results["pass@1"] == 1.0


# -------------------------------------------------------------------------------------- stale folders


def test_stale_sandbox_folders_of_dead_evals_are_removed(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = Path(tempfile.mkdtemp(prefix=f"{DIR_PREFIX}{dead.pid}-"))
    (stale / "task").mkdir()
    (stale / "task" / "program.py").write_text("x")
    (stale / "task").chmod(0)  # a test may leave a folder nobody can read
    live = Path(tempfile.mkdtemp(prefix=f"{DIR_PREFIX}{os.getppid()}-"))  # pytest's parent: alive
    try:
        with Sandbox(timeout_s=5) as sandbox:
            assert str(stale) in sandbox.removed_stale
            assert sandbox.root.name.startswith(f"{DIR_PREFIX}{os.getpid()}-")
            own = sandbox.root
        assert not stale.exists() and live.exists() and not own.exists()
    finally:
        shutil.rmtree(live, ignore_errors=True)


# ------------------------------------------------------------------------------ killed eval, then resume


def test_killed_eval_keeps_results_and_resumes(tmp_path: Path, marker: str) -> None:
    quick = {f"quick{i}": "pass" for i in range(4)}
    slow = {
        "slow": f"import os, sys, time\nif os.fork() == 0:\n    os.execv(sys.executable, {_loop(marker, '/')})\ntime.sleep(3)\n"
    }
    programs = {**dict(list(quick.items())[:2]), **slow, **dict(list(quick.items())[2:])}
    bench = _benchmark(tmp_path / "b.jsonl", programs)
    out = tmp_path / "out"
    args = ["eval", "--benchmark", str(bench), "--oracle", "--timeout", "30", "--out", str(out)]
    process = _cli(args, tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    predictions = out / "predictions.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        lines = predictions.read_text().splitlines() if predictions.exists() else []
        if len(lines) >= 4 and survivors(marker, tries=1):
            break
        time.sleep(0.1)
    else:
        process.kill()
        pytest.fail("the eval never got to the slow test")
    process.send_signal(signal.SIGKILL)
    process.wait()
    # what the eval had is on disk; the slow test and its child die with it (the supervisor's lifeline)
    assert survivors(marker) == []
    partial = json.loads((out / "results.json").read_text())
    assert partial["complete"] is False
    kept = [json.loads(line) for line in predictions.read_text().splitlines()]
    assert len(kept) == 4 and {row["task_id"] for row in kept} == {f"Hostile/{n}" for n in quick}
    stale = list(Path(tempfile.gettempdir()).glob(f"{DIR_PREFIX}{process.pid}-*"))
    assert stale  # the killed eval could not clean up...
    with predictions.open("a") as handle:
        handle.write('{"item": 2, "task_id": "Hos')  # ...and was killed in the middle of a line
    # other settings: refused, and the partial results are left as they were
    assert main([*args[:-4], "--timeout", "5", "--out", str(out)]) == 2
    assert len(predictions.read_text().splitlines()) == 5
    # the same command: resumes, runs only the slow test, and removes the dead eval's sandbox folder
    assert main(args) == 0
    assert not any(path.exists() for path in stale)
    results = json.loads((out / "results.json").read_text())
    assert results["complete"] is True and results["runs"][0]["resumed"] == 4
    assert results["runs"][0]["passed"] == 5 and results["pass@1"] == 1.0
    rows = [json.loads(line) for line in predictions.read_text().splitlines()]
    assert [row["item"] for row in rows] == [0, 1, 2, 3, 4]
    assert {k: v for k, v in rows[0].items()} == next(r for r in kept if r["item"] == 0)


def test_interrupt_kills_running_tests_without_recording_them(marker: str) -> None:
    """Ctrl-C mid-benchmark: tests in flight die at once and are not recorded as failures (a rerun redoes them)."""
    forever = f"import os, sys\nos.execv(sys.executable, {_loop(marker, '/')})\n"
    recorded: list[int] = []

    def on_done(index: int, outcome) -> None:
        recorded.append(index)
        raise KeyboardInterrupt

    with Sandbox(timeout_s=60) as sandbox:
        started = time.perf_counter()
        with pytest.raises(KeyboardInterrupt):
            sandbox.run_many(["pass", forever, forever, forever], workers=4, on_done=on_done)
        assert time.perf_counter() - started < 30  # not the 60 s timeout
    assert recorded == [0]
    assert survivors(marker) == []
