"""The wheels the GPU machine lacks, for its Python (3.12), downloaded into `.whl/` within what a device call carries.

`python -m finetune.dev.gpu_wheels [--dest .whl] [--limit-mib 64]` (or `recipes/bench/gpu_wheels.sh`). The GPU machine
has torch, transformers, peft, accelerate, numpy, pandas, pyarrow, rich, pyyaml, safetensors, tokenizers, triton ...
(the device README's package list) but not TRL, bitsandbytes, DeepSpeed, datasets or this project's data libraries.
A device call carries the working tree and the wheels together, 64 MiB in all, so the budget for wheels is that
limit less the tracked files; optional wheels are dropped, last listed first, until the rest fits, and each drop
is said. `gpu_check --dry-run` checks the folder against `REQUIRED` before a GPU is asked for.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

PYTHON = "3.12"
# Each pinned to the version the CPU test suite runs with; names as pip spells them.
REQUIRED = [
    "trl==1.16.0",
    "datasets==5.2.0",
    "dill==0.4.0",  # datasets 5.2 wants dill < 0.4.2
    "multiprocess==0.70.18",
    "bitsandbytes==0.50.2",
    "deepspeed==0.19.8",  # an sdist on the index: built here into a pure-Python wheel (no compiled ops)
    "hjson==3.1.0",
    "pydantic==2.14.4",
    "pydantic-core==2.50.5",
    "annotated-types==0.8.0",
    "typing-inspection==0.4.5",
    "datasketch==2.0.0",
    "detect-secrets==1.5.0",
    "bm25s==0.3.16",
    "rapidfuzz==3.14.6",
    "tree-sitter==0.26.1",
    "tree-sitter-python==0.25.0",
    "tree-sitter-go==0.25.0",
    "tree-sitter-bash==0.25.1",
    "tree-sitter-javascript==0.25.0",
    "tree-sitter-typescript==0.23.2",
    "tree-sitter-java==0.23.5",
    "tree-sitter-c==0.24.2",
    "tree-sitter-cpp==0.23.4",
    "tree-sitter-rust==0.24.2",
    "tree-sitter-c-sharp==0.23.5",
    "tree-sitter-php==0.25.1",
    "tree-sitter-ruby==0.23.1",
]
# Wanted for the speed steps, dropped (last first) when the total would not fit.
OPTIONAL = [
    "liger-kernel==0.8.5",  # Triton kernels; triton is on the machine
    "transformers==5.24.0",  # the machine has 5.17: attn_implementation='flash_attention_4' needs >= 5.24
    "flash-attn-4==4.0.0b36",
    "apache-tvm-ffi==0.1.15.post2",
    "torch-c-dlpack-ext==0.1.5",
    "quack-kernels==0.6.5",
    "nvidia-cutlass-dsl==4.8.1",
    "nvidia-cutlass-dsl-libs-base==4.8.1",
    "nvidia-cutlass-dsl-libs-cu13==4.8.1",  # 92 MB alone: more than a device call carries
]
FLASH_ATTENTION_4 = OPTIONAL[2:]  # all or nothing
PLATFORMS = [f"manylinux_2_{n}_x86_64" for n in (17, 24, 27, 28, 31, 34, 35)] + ["manylinux2014_x86_64"]
MIB = 2**20


def normalized(name: str) -> str:
    """A distribution name as wheel files spell it (PEP 427: runs of -_. become _, lower case)."""
    import re

    return re.sub(r"[-_.]+", "_", name).lower()


def wheel_names(folder: Path) -> set[str]:
    return {normalized(p.name.split("-")[0]) for p in folder.glob("*.whl")}


def missing(folder: Path, wanted: list[str] = REQUIRED) -> list[str]:
    """The requirements in `wanted` that no wheel in `folder` provides."""
    have = wheel_names(folder) if folder.is_dir() else set()
    return [spec for spec in wanted if normalized(spec.split("==")[0]) not in have]


def tracked_bytes(repo: Path) -> int:
    """Size of the files a device call sends besides the wheels (tracked and untracked-not-ignored)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=repo, capture_output=True, check=True,
    ).stdout.split(b"\0")  # fmt: skip
    return sum((repo / os.fsdecode(name)).stat().st_size for name in listed if name and (repo / os.fsdecode(name)).is_file())


def _download(spec: str, dest: Path) -> None:
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version", PYTHON,
               "--implementation", "cp", "-d", str(dest), "-q", spec]  # fmt: skip
    for platform in PLATFORMS:
        command[-1:-1] = ["--platform", platform]
    if subprocess.run(command, check=False).returncode == 0:
        return
    # no wheel on the index (deepspeed): build one without compiled ops; it JIT-builds them where they are used
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "DS_BUILD_OPS": "0"}
        build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", tmp, spec]
        subprocess.run(build, check=True, env=env)
        for wheel in Path(tmp).glob("*.whl"):
            if not wheel.name.endswith("-none-any.whl"):
                raise SystemExit(f"error: {spec} built a platform wheel ({wheel.name}), not usable on the GPU machine")
            wheel.rename(dest / wheel.name)


def slim_bitsandbytes(wheel: Path) -> None:
    """Keep only the CUDA 13 libraries (the GPU machine's torch is built for CUDA 13.0): the wheel ships one library
    per CUDA and ROCm version, 41 MiB of which the machine loads one of 4 MiB. RECORD loses the dropped entries."""
    import re
    import zipfile

    unused = re.compile(r"bitsandbytes/libbitsandbytes_(cuda1[0-2]\d|rocm|xpu)[^/]*\.so$")
    slim = wheel.with_suffix(".slim")
    with zipfile.ZipFile(wheel) as source, zipfile.ZipFile(slim, "w", zipfile.ZIP_DEFLATED) as target:
        for item in source.infolist():
            if unused.search(item.filename):
                continue
            data = source.read(item)
            if item.filename.endswith(".dist-info/RECORD"):
                lines = data.decode().splitlines(keepends=True)
                data = "".join(line for line in lines if not unused.search(line.split(",")[0])).encode()
            target.writestr(item, data)
    slim.replace(wheel)


def fetch(dest: Path, limit_mib: float, repo: Path) -> int:
    dest.mkdir(parents=True, exist_ok=True)
    for spec in REQUIRED + OPTIONAL:
        if not missing(dest, [spec]):
            continue
        print(f"downloading {spec}", flush=True)
        _download(spec, dest)
    for wheel in dest.glob("bitsandbytes-*.whl"):
        if wheel.stat().st_size > 20 * MIB:
            slim_bitsandbytes(wheel)
    budget = limit_mib * MIB - tracked_bytes(repo)
    sizes = {normalized(p.name.split("-")[0]): p for p in dest.glob("*.whl")}
    total = sum(p.stat().st_size for p in sizes.values())
    dropped = []
    for spec in reversed(OPTIONAL):
        if total <= budget:
            break
        group = FLASH_ATTENTION_4 if spec in FLASH_ATTENTION_4 else [spec]
        for item in group:
            wheel = sizes.pop(normalized(item.split("==")[0]), None)
            if wheel is not None:
                total -= wheel.stat().st_size
                dropped.append(f"{wheel.name} ({wheel.stat().st_size / MIB:.1f} MiB)")
                wheel.unlink()
    for wheel in sorted(sizes.values(), key=lambda p: -p.stat().st_size):
        print(f"{wheel.stat().st_size / MIB:8.2f} MiB  {wheel.name}")
    print(f"{total / MIB:8.2f} MiB  in {dest}/ ({len(sizes)} wheels); budget {budget / MIB:.1f} MiB = {limit_mib:g} MiB "
          f"less {tracked_bytes(repo) / MIB:.1f} MiB of tracked files")
    for line in dropped:
        print(f"dropped (over the budget): {line}")
    if missing(dest):
        print(f"error: still missing: {', '.join(missing(dest))}", file=sys.stderr)
        return 1
    if total > budget:
        print(f"error: the required wheels alone ({total / MIB:.1f} MiB) exceed the budget", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m finetune.dev.gpu_wheels", description=__doc__.splitlines()[0])
    parser.add_argument("--dest", default=".whl", help="folder for the wheels (git-ignored)")
    parser.add_argument("--limit-mib", type=float, default=64.0, help="what one device call carries, tree included")
    args = parser.parse_args(argv)
    return fetch(Path(args.dest), args.limit_mib, Path.cwd())


if __name__ == "__main__":
    sys.exit(main())
