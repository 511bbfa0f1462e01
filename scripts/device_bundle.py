#!/usr/bin/env python
"""The wheels a lent GPU machine lacks, in one folder to carry there, and the one command to run on it.

The GPU machines this project may be lent (an H200) run Python 3.12 with torch, numpy 2, onnx, ONNX Runtime
(CPU build), numba and the rest of :data:`DEVICE_HAS`, but no TensorRT and no package registry; files carried
there may total 64 MiB. This downloads exactly :data:`CARRY` (for that Python, manylinux x86-64, no
dependencies: what they depend on is there already), checks the folder against the limit, and prints the command
that installs them there (``pip install --no-index --no-deps --target``) and runs ``scripts/gpu_check.py``.

    python scripts/device_bundle.py --out build/wheels             # download, check, print the command
    python scripts/device_bundle.py --out build/wheels --offline   # check a folder made before; download nothing

(``build/`` is git-ignored: a device run carries ignored paths only when asked to, ``carry: ["build/wheels"]``.)

The lists below are the one place that says what the machine has and what is carried; ``tests/test_gpu_paths.py``
checks them against every import of the project and of ``scripts/gpu_check.py``.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEVICE_PYTHON = "3.12"
LIMIT_MIB = 64
PLATFORMS = ("manylinux_2_34_x86_64", "manylinux2014_x86_64")

# What the GPU machine has (import name -> distribution), as /work/shared/tools/device-like-venv.sh reproduces it.
DEVICE_HAS = {
    "torch": "torch", "torchvision": "torchvision", "numpy": "numpy", "onnx": "onnx", "onnxruntime": "onnxruntime",
    "onnxscript": "onnxscript", "onnx_ir": "onnx-ir", "numba": "numba", "llvmlite": "llvmlite", "scipy": "scipy",
    "rich": "rich", "click": "click", "PIL": "pillow", "matplotlib": "matplotlib", "pandas": "pandas",
    "psutil": "psutil", "tqdm": "tqdm", "einops": "einops", "torch_geometric": "torch-geometric",
}
# What it lacks and the project imports on the paths the GPU check runs (import name -> pinned requirement).
# compressai is carried without its dependencies: its declared numpy<2 would fight the machine's numpy 2.
CARRY = {
    "compressai": "compressai==1.2.8",  # the entropy-model layers the reference model is built from
    "polygraphy": "polygraphy==0.53.6",  # the comparators of `verify` and the engine builder's loaders
    "pytorch_msssim": "pytorch-msssim==1.0.0",  # MS-SSIM of `eval` (and a compressai import)
    "bjontegaard": "bjontegaard==1.3.0",  # BD-rate of `eval`
}
# Imported by the project but neither there nor carried, and why the GPU check does without them.
NOT_CARRIED = {
    "tensorrt": "its CUDA libraries are gigabytes, far over the limit; the TensorRT rows say they were skipped",
    "pytriton": "`hpcm-deploy serve` only (the triton extra)",
    "ray": "`hpcm-deploy bulk` only (the ray extra)",
    "skimage": "training data augmentation only (the train extra)",
    "sklearn": "training data only (the train extra)",
}


def requirements() -> list[str]:
    return list(CARRY.values())


def distribution(requirement: str) -> str:
    """``"pytorch-msssim==1.0.0"`` -> ``"pytorch_msssim"``: a distribution name as wheel files spell it."""
    return re.split(r"[=<>!~ ]", requirement, maxsplit=1)[0].lower().replace("-", "_").replace(".", "_")


def download_command(out: Path, python_version: str = DEVICE_PYTHON) -> list[str]:
    platforms = [a for p in PLATFORMS for a in ("--platform", p)]
    return [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--implementation", "cp",
            "--python-version", python_version, *platforms, "-d", str(out), *requirements()]


def check_bundle(folder: Path, limit_mib: float = LIMIT_MIB) -> tuple[list[tuple[str, int]], int]:
    """The wheels of ``folder`` (name, bytes) and their total, or a ``ValueError`` saying what is wrong: a
    required wheel missing, a wheel nobody asked for (``*.whl`` would install it too), or over the limit."""
    wheels = sorted(folder.glob("*.whl"))
    found = {w.name.split("-")[0].lower(): w for w in wheels}
    wanted = {distribution(r) for r in requirements()}
    missing = sorted(wanted - set(found))
    if missing:
        raise ValueError(f"{folder} lacks the wheels of: {', '.join(missing)}")
    extra = sorted(set(found) - wanted)
    if extra:
        raise ValueError(f"{folder} holds wheels not in the bundle ({', '.join(found[e].name for e in extra)}); "
                         "remove them: they would be installed too")
    sizes = [(w.name, w.stat().st_size) for w in wheels]
    total = sum(n for _, n in sizes)
    if total > limit_mib * (1 << 20):
        raise ValueError(f"the wheels in {folder} total {total / (1 << 20):.1f} MiB, over the {limit_mib:g} MiB a "
                         "device run may carry")
    return sizes, total


def carried_path(folder: Path) -> str:
    """``folder`` as the device run sees it: relative to the repository root (it must lie inside it)."""
    try:
        return folder.resolve().relative_to(ROOT).as_posix()
    except ValueError:
        raise ValueError(f"{folder} is outside the repository {ROOT}; a device run carries only paths inside it "
                         "(use e.g. --out build/wheels)") from None


def run_command(carried: str, budget: int = 420) -> str:
    """The command to run on the GPU machine, from the repository root, with ``carried`` brought along."""
    return (f"python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site {carried}/*.whl && "
            f"PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 python3 scripts/gpu_check.py --budget {budget} --json "
            "> $OUT/gpu_check.json")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--out", required=True, help="folder for the wheels, inside the repository and git-ignored "
                        "(e.g. build/wheels)")
    parser.add_argument("--python-version", default=DEVICE_PYTHON, help=f"the machine's Python (default "
                        f"{DEVICE_PYTHON})")
    parser.add_argument("--offline", action="store_true", help="download nothing: check the folder and print")
    parser.add_argument("--budget", type=int, default=420, help="seconds the GPU check plans within (default 420)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    try:
        carried = carried_path(out)
        if not args.offline:
            out.mkdir(parents=True, exist_ok=True)
            command = download_command(out, args.python_version)
            print("$", " ".join(command[1:]), file=sys.stderr)
            done = subprocess.run(command, stdout=sys.stderr)
            if done.returncode:
                raise ValueError(f"pip download failed (exit {done.returncode}); see its output above")
        sizes, total = check_bundle(out)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for name, size in sizes:
        print(f"{size / (1 << 20):8.2f} MiB  {name}")
    print(f"{total / (1 << 20):8.2f} MiB  in all (limit {LIMIT_MIB} MiB), for Python {args.python_version}")
    ignored = subprocess.run(["git", "check-ignore", "-q", carried], cwd=ROOT).returncode == 0
    print(f"\ncarry: {carried}" + ("" if ignored else "   (not git-ignored: a device run copies it as a tracked or "
                                     "untracked file; ignore it or it may be committed)"))
    print(f"run, from the repository root on the GPU machine:\n  {run_command(carried, args.budget)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
