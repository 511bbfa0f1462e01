"""The README holds: its fenced shell commands, run in order in an empty folder the way a newcomer would, succeed.

Slow (``pytest -m slow tests/test_readme.py``: it exports two models, trains, evaluates and starts Ray). The
commands a CPU cannot run, or that need what a newcomer does not have, are skipped, each with its reason; the
inputs the examples name (``photos/``, ``a.png``, ``logo.png``, ``huge.tif``) are made from the bundled images
first, and the 8,000-step training runs take 2 steps.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"

#: (pattern, reason): a command matching the pattern is not run.
SKIPS = [
    (r"^python3? -m venv|^pip ", "set-up: the test runs in the installed environment"),
    (r"^pytest", "the test suite itself"),
    (r"--device cuda|build-engine|--backend tensorrt", "needs an NVIDIA GPU and TensorRT"),
    (r"hpcm_base_0\.013|export/p2-0\.013", "needs the official HPCM-Base weights (a download)"),
    (r"--address ray://", "needs a Ray cluster"),
    (r"hpcm-deploy serve", "a server that runs until stopped (tests/test_serving.py starts and stops it)"),
    (r"--random-images 100", "100 images on two backends: tens of minutes on 2 cores (verify runs without it)"),
]
#: substitutions that keep a command's meaning but not its hours
SHORTER = [(r"--steps 8000", "--steps 2 --batch 1")]


def readme_commands(text: str) -> list[str]:
    """The commands of the README's ```bash blocks, continuation lines joined, comment-only lines dropped."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        joined = re.sub(r"\s*\\\n\s*", " ", block)
        for line in joined.splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                commands.append(line)
    return commands


def _inputs(folder: Path) -> None:
    from PIL import Image

    from hpcm_deploy.app.bundled import SAMPLE, data_path

    sample = Image.open(data_path(SAMPLE)).convert("RGB")
    (folder / "photos" / "trip").mkdir(parents=True)
    sample.save(folder / "photos" / "sample.png")
    sample.resize((320, 214)).save(folder / "photos" / "trip" / "small.jpg", quality=90)
    sample.save(folder / "a.png")
    sample.resize((200, 120)).convert("RGBA").save(folder / "logo.png")
    sample.resize((1024, 683)).save(folder / "huge.tif")


@pytest.mark.slow
def test_readme_commands_run_as_written(tmp_path):
    commands = readme_commands(README.read_text())
    assert any(c.startswith("hpcm-deploy demo") for c in commands)
    _inputs(tmp_path)
    cli = shutil.which("hpcm-deploy")
    if cli is None or Path(cli).parent != Path(sys.executable).parent:
        pytest.skip("hpcm-deploy is not installed beside this Python (pip install -e .)")
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    ray = subprocess.run([sys.executable, "-c", "import ray.data"], capture_output=True).returncode == 0
    failures, ran, skipped = [], 0, []
    for command in commands:
        reason = next((r for pattern, r in SKIPS if re.search(pattern, command)), None)
        if reason is None and " bulk " in f" {command} " and not ray:
            reason = "Ray Data is not installed (pip install -e '.[ray]')"
        if reason is not None:
            skipped.append(f"{command}  [{reason}]")
            continue
        for pattern, repl in SHORTER:
            command = re.sub(pattern, repl, command)
        run = subprocess.run(["bash", "-c", "set -o pipefail; " + command], cwd=tmp_path, capture_output=True,
                             text=True, env=env, timeout=1800)
        ran += 1
        print(f"{'ok  ' if run.returncode == 0 else 'FAIL'} {command}", flush=True)  # a long sweep shows where it is
        if run.returncode != 0:
            failures.append(f"{command}\n  exit {run.returncode}: {run.stderr.strip()[-600:]}")
    print(f"ran {ran} README commands, skipped {len(skipped)}:\n  " + "\n  ".join(skipped))
    assert not failures, "\n".join(failures)
    assert (tmp_path / "cut.png").is_file() and (tmp_path / "streams" / "trip" / "small.hpcm").is_file()


def test_the_sweep_finds_the_commands():
    commands = readme_commands(README.read_text())
    assert any(c.startswith("hpcm-deploy decompress cut.hpcm -o cut.png --partial ") for c in commands)
    assert any(c.startswith("hpcm-deploy compress a.png -o a.hpcm --export export/p2-0.013 --backend tensorrt "
                            "--device cuda:0 --engines ") for c in commands)  # continuation joined
    assert all(not c.startswith("#") for c in commands)
