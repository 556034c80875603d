"""The sandbox's supervisor: runs as its own script (`python -I -S sandbox_init.py CONFIG`), never imported by the eval.

It starts one test program and, whatever the program does, ends every process the program started before it
exits itself. In "namespace" mode it is PID 1 of a new PID namespace (under `unshare`), so the kernel kills the
whole namespace when it exits; it also gives the program a private size-capped /tmp, hides /root and /home, and
makes every other mount read-only. In "subreaper" mode it makes itself the child subreaper, so orphaned daemons
come back to it instead of init, and kills its descendants until none is left. In "session" mode (no prctl, e.g.
macOS) it kills the program's process group. It reports one line on the status descriptor: "exit CODE", "timeout"
or "error WHY". Its configuration comes as marshal data in hex; it imports little (no json, re, contextlib), as
it starts once per test.
"""

from __future__ import annotations

import ctypes
import marshal
import os
import resource
import select
import sys
import time

SIGKILL = 9  # not from `signal`: importing it (and enum) costs each test's start-up
PR_SET_PDEATHSIG = 1
PR_CAPBSET_DROP = 24
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_NOATIME, MS_NODIRATIME, MS_BIND, MS_REC, MS_PRIVATE = 32, 1024, 2048, 4096, 16384, 1 << 18
MS_RELATIME = 1 << 21
KEPT_FLAGS = MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_NOATIME | MS_NODIRATIME | MS_RELATIME  # locked: must be kept

_libc = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


def _call(name: str, *args) -> None:
    if getattr(_libc, name)(*args) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{name}{args[:2]}: {os.strerror(errno)}")


def _prctl(option: int, value: int) -> None:
    _call("prctl", option, ctypes.c_ulong(value), ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0))


def _mount(source: str, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    enc = [s.encode() if s is not None else None for s in (source, target, fstype, data)]
    _call("mount", enc[0], enc[1], enc[2], ctypes.c_ulong(flags), enc[3])


def _mount_points() -> list[str]:
    """Every mount point in this mount namespace, parents before children (from /proc/self/mountinfo)."""
    points = []
    with open("/proc/self/mountinfo", encoding="utf-8") as handle:
        for line in handle:
            raw = line.split()[4]  # spaces and the like come as octal escapes: \040
            parts = raw.split("\\")
            points.append(parts[0] + "".join(chr(int(p[:3], 8)) + p[3:] for p in parts[1:]))
    return sorted(set(points), key=lambda p: p.count("/"))


def _isolate_filesystem(cfg: dict, source: str) -> str:
    """Private /tmp (also /var/tmp, /dev/shm), /root and /home hidden except the interpreter, the rest read-only."""
    _mount("none", "/", None, MS_REC | MS_PRIVATE)  # nothing we mount leaks back out
    # Keep handles on the interpreter's folders before hiding the homes they may live in.
    covered = [*cfg["hide"], "/tmp", "/var/tmp", "/dev/shm"]
    expose = [p for p in cfg["expose"] if any(p == h or p.startswith(h + "/") for h in covered)]
    held = {path: os.open(path, os.O_PATH) for path in expose}
    _mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, f"size={cfg['tmp_mb']}m,mode=1777")
    for other in ("/var/tmp", "/dev/shm"):
        if os.path.isdir(other) and not os.path.islink(other):
            _mount("/tmp", other, None, MS_BIND)
    for hidden in cfg["hide"]:
        if os.path.isdir(hidden) and not os.path.islink(hidden):
            _mount("tmpfs", hidden, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=755")
    for path, fd in held.items():
        os.makedirs(path, mode=0o755, exist_ok=True)
        _mount(f"/proc/self/fd/{fd}", path, None, MS_BIND | MS_REC)
        os.close(fd)
    writable = {"/tmp", "/var/tmp", "/dev/shm"}
    for point in _mount_points():
        if point in writable:
            continue
        try:
            kept = os.statvfs(point).f_flag & KEPT_FLAGS
        except (FileNotFoundError, PermissionError):
            continue  # gone, or behind a folder nobody here can enter
        _mount("none", point, None, MS_REMOUNT | MS_BIND | MS_RDONLY | kept)
    with open("/tmp/program.py", "w", encoding="utf-8") as handle:
        handle.write(source)
    os.chmod("/tmp/program.py", 0o644)
    return "/tmp"


def _exec_program(cfg: dict, workdir: str) -> None:
    """In the forked child: limits, a clean user, no inherited descriptors, then exec the program. Never returns."""
    try:
        os.setsid()
        os.chdir(workdir)
        limit = cfg["memory_mb"] * 1024 * 1024
        cpu = max(1, int(cfg["timeout"]) + 1)
        for kind, value in (
            (resource.RLIMIT_AS, (limit, limit)),
            (resource.RLIMIT_CPU, (cpu, cpu + 1)),
            (resource.RLIMIT_CORE, (0, 0)),
            (resource.RLIMIT_FSIZE, (cfg["file_mb"] << 20, cfg["file_mb"] << 20)),
        ):
            resource.setrlimit(kind, value)
        if cfg["nproc"]:
            resource.setrlimit(resource.RLIMIT_NPROC, (cfg["nproc"], cfg["nproc"]))
        os.closerange(3, 65536)
        if _libc is not None:
            _prctl(PR_SET_PDEATHSIG, SIGKILL)
            if cfg["drop_caps"]:
                with open("/proc/sys/kernel/cap_last_cap") as handle:
                    last = int(handle.read())
                for cap in range(last + 1):
                    _prctl(PR_CAPBSET_DROP, cap)
        if cfg["uid"] is not None:
            os.setgroups([])
            os.setgid(cfg["gid"])
            os.setuid(cfg["uid"])
        if _libc is not None:
            _prctl(PR_SET_NO_NEW_PRIVS, 1)
        env = dict(cfg["env"], HOME=workdir, TMPDIR=workdir)
        os.execve(cfg["python"], [cfg["python"], "-I", os.path.join(workdir, "program.py")], env)
    except BaseException as exc:  # noqa: BLE001 - the child must never return into the supervisor's code
        os.write(2, f"sandbox: could not start the program: {exc}\n".encode())
    os._exit(127)


def _wait(pid: int, timeout: float, lifeline: int) -> int | None:
    """The program's wait status; None when it is still running at the deadline or the eval has gone."""
    try:
        fd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        fd = None
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        ready, _, _ = select.select(
            [lifeline] + ([fd] if fd is not None else []), [], [], min(left, 0.01 if fd is None else left)
        )
        if lifeline in ready:  # end of file: the eval is gone, so is the point of this test
            return None


def _children(parent: int) -> list[int]:
    kids = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat", "rb") as handle:
                    fields = handle.read().rsplit(b")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == parent:
                kids.append(int(name))
    return kids


def kill_descendants() -> None:
    """Kill children until none is left: as subreaper, each killed process's orphans become ours and die next round."""
    me = os.getpid()
    while True:
        kids = _children(me)
        for kid in kids:
            try:  # noqa: SIM105 - contextlib costs the supervisor's start-up time
                os.kill(kid, SIGKILL)
            except ProcessLookupError:
                pass
        try:
            while os.waitpid(-1, os.WNOHANG)[0] > 0:
                pass
        except ChildProcessError:
            return
        time.sleep(0.001)


def main() -> None:
    cfg = marshal.loads(bytes.fromhex(sys.argv[1]))
    status = os.fdopen(cfg["status_fd"], "w")
    try:
        with open(os.path.join(cfg["dir"], "program.py"), encoding="utf-8") as handle:
            source = handle.read()
        workdir = cfg["dir"]
        if cfg["mode"] == "namespace":
            workdir = _isolate_filesystem(cfg, source)
        elif cfg["mode"] == "subreaper":
            _prctl(PR_SET_CHILD_SUBREAPER, 1)
    except OSError as exc:
        status.write(f"error sandbox setup failed: {exc}\n")
        status.close()
        sys.exit(1)
    pid = os.fork()
    if pid == 0:
        status.close()
        _exec_program(cfg, workdir)
    wait_status = _wait(pid, cfg["timeout"], cfg["lifeline_fd"])
    if cfg["mode"] == "session":
        try:  # noqa: SIM105
            os.killpg(pid, SIGKILL)
        except OSError:
            pass
    if wait_status is None:
        os.kill(pid, SIGKILL)
        os.waitpid(pid, 0)
    if cfg["mode"] == "subreaper":
        kill_descendants()
    status.write("timeout\n" if wait_status is None else f"exit {os.waitstatus_to_exitcode(wait_status)}\n")
    status.close()
    # In "namespace" mode this exit, as PID 1, makes the kernel kill everything left in the namespace.


if __name__ == "__main__":
    main()
