"""The command line as a whole: verbs, start-up cost, one-line errors."""

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

import hpcm_deploy as hd
from hpcm_deploy.cli import main

VERBS = {"bench", "build-engine", "bulk", "compress", "decompress", "demo", "eval", "export", "info",
         "precision-cost", "serve", "train", "verify"}


def test_help_lists_every_verb_with_its_summary():
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    assert set(main.commands) == VERBS
    for verb in VERBS:
        assert f"  {verb} " in result.output  # each listed with its one-line summary
        sub = CliRunner().invoke(main, [verb, "--help"])
        assert sub.exit_code == 0 and "Usage:" in sub.output and "--help" in sub.output


def test_version_and_unknown_verbs():
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0 and hd.__version__ in result.output
    result = CliRunner().invoke(main, ["compres"])
    assert result.exit_code == 2 and "No such command" in result.output


def _loaded_after(code: str) -> set[str]:
    probe = ("import sys\n" + code + "\nprint(' '.join(m for m in ('torch', 'onnx', 'onnxruntime', 'tensorrt', "
             "'compressai', 'numba') if m in sys.modules))")
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    return set(run.stdout.split("\n")[-2].split())


def test_help_and_info_start_without_the_heavy_libraries():
    """--help and every verb's help load no model libraries; info needs torch but no runtime."""
    help_only = _loaded_after("from hpcm_deploy.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n"
                              "    pass\ntry:\n    main(['compress', '--help'])\nexcept SystemExit:\n    pass")
    assert help_only == set()
    info = _loaded_after("from hpcm_deploy.cli import main\ntry:\n    main(['info', 'tiny-base', '--json'])\n"
                         "except SystemExit:\n    pass")
    assert "torch" in info and not info & {"onnx", "onnxruntime", "tensorrt", "numba"}
    assert _loaded_after("import hpcm_deploy") == set()  # the package face loads its names on first use


def test_the_pure_floors_import_no_model_library():
    """The configuration, the static schedule, the coding program, the artifact shapes and the manifest loader
    are pure Python: importing them loads neither torch nor numpy (the floors the imports keep)."""
    pure = _loaded_after("import hpcm_deploy.config, hpcm_deploy.schedule, hpcm_deploy.stages.program\n"
                         "import hpcm_deploy.artifacts.shapes, hpcm_deploy.artifacts.document\n"
                         "from hpcm_deploy.stages import build_program\n"
                         "build_program(hpcm_deploy.config.get_config('tiny-phase2'))\n"
                         "assert 'numpy' not in sys.modules, 'numpy was imported'")
    assert pure == set()


def test_info_prints_config_and_counts():
    result = CliRunner().invoke(main, ["info", "tiny-phase2", "--set", "max_refs_s1=0", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["config"]["max_refs_s1"] == 0
    assert data["parameters"]["memory banks"] > 0 and data["parameters"]["total"] > 2_000_000
    assert data["parameters"] == hd.parameter_counts(hd.build_model(hd.get_config("tiny-phase2", max_refs_s1=0),
                                                                    seed=0))


def test_bad_override_is_one_line_error():
    result = CliRunner().invoke(main, ["info", "tiny-phase2", "--set", "max_refs_s9=1"])
    assert result.exit_code == 1
    assert result.output.strip().count("\n") == 0 and result.output.startswith("error: bad --set")


def test_backend_options_are_checked_before_anything_runs():
    result = CliRunner().invoke(main, ["bench", "--backend", "onnxruntime:fp16"])
    assert result.exit_code == 1 and result.output.count("\n") == 1
    assert "backend onnxruntime has no option precision" in result.output
    result = CliRunner().invoke(main, ["bench", "--backend", "tensorrt@cpu"])
    assert result.exit_code == 1 and "cannot run on device 'cpu'" in result.output
    result = CliRunner().invoke(main, ["bench", "--backend", "nonsense"])
    assert result.exit_code == 1 and "unknown backend 'nonsense'" in result.output


# ------------------------------------------------------------------------------------------------- refusals
def _snapshot(folder) -> dict:
    """Every file under ``folder`` with its bytes and mtime: a refusal must leave all of them as they were and
    add nothing."""
    return {p: (p.read_bytes(), p.stat().st_mtime_ns) if p.is_file() else None for p in sorted(folder.rglob("*"))}


def _refused(folder, args: list[str], exit_code: int = 1, contains: str = ""):
    """Run ``hpcm-deploy ARGS`` in ``folder``: it must exit ``exit_code`` with exactly one line on stderr, nothing
    on stdout, and leave every file of the folder untouched (bytes and mtime) and no new one."""
    import os

    before = _snapshot(folder)
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        result = CliRunner().invoke(main, args)
    finally:
        os.chdir(cwd)
    assert result.exit_code == exit_code, (result.exit_code, result.output, result.exception)
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: "), result.stderr
    assert contains in result.stderr, result.stderr
    assert _snapshot(folder) == before
    return result.stderr


def _photos(folder, names=("a.png", "b.png")):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for name in names:
        Image.fromarray((rng.random((64, 96, 3)) * 255).astype(np.uint8)).save(folder / name)


def test_an_output_that_is_an_input_is_refused_also_through_links(tmp_path):
    _photos(tmp_path)
    (tmp_path / "s.hpcm").write_bytes(b"HPCM stream bytes")
    (tmp_path / "link.png").symlink_to(tmp_path / "a.png")
    import os

    os.link(tmp_path / "b.png", tmp_path / "hard.png")
    _refused(tmp_path, ["compress", "a.png", "-o", "a.png"], contains="is the input a.png")
    _refused(tmp_path, ["compress", "a.png", "-o", "link.png"], contains="is the input a.png")
    _refused(tmp_path, ["compress", "b.png", "-o", "hard.png"], contains="is the input b.png")
    _refused(tmp_path, ["decompress", "s.hpcm", "-o", "s.hpcm"], contains="is the input s.hpcm")


def test_several_inputs_need_an_output_folder(tmp_path):
    _photos(tmp_path)
    _refused(tmp_path, ["compress", "a.png", "b.png", "-o", "single.hpcm"], contains="need an output folder")
    (tmp_path / "taken").write_bytes(b"a file")
    _refused(tmp_path, ["compress", "a.png", "b.png", "-o", "taken"], contains="taken is a file, not a folder")


GPU_VERBS = [
    ["compress", "a.png", "-o", "a.hpcm", "--backend", "torch", "--device", "cuda"],
    ["decompress", "s.hpcm", "-o", "s.png", "--backend", "torch", "--device", "cuda:0"],
    ["bench", "--device", "cuda"],
    ["bench", "--backend", "torch@cuda"],
    ["bench", "--backend", "tensorrt"],
    ["eval", "a.png", "--backend", "torch", "--device", "cuda"],
    ["verify", "no-export", "--backend", "torch", "--device", "cuda"],
    ["serve", "--backend", "torch", "--device", "cuda"],
    ["bulk", "decompress", ".", "out", "--device", "cuda", "--gpus-per-worker", "1"],
    ["bulk", "compress", ".", "out", "--gpus-per-worker", "1"],
]


def _has_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


@pytest.mark.skipif(_has_gpu(), reason="this machine has a GPU: the refusal is for machines without one")
@pytest.mark.parametrize("args", GPU_VERBS, ids=lambda a: " ".join(a[:1] + a[-2:]))
def test_a_gpu_device_without_a_gpu_is_one_line_before_any_work(tmp_path, args):
    _photos(tmp_path)
    (tmp_path / "s.hpcm").write_bytes(b"HPCM stream bytes")
    message = _refused(tmp_path, args, contains="no CUDA GPU")
    assert "torch.cuda.is_available() is False" in message


def test_bad_bench_numbers_and_usage_errors_are_one_line_with_exit_2(tmp_path):
    _refused(tmp_path, ["bench", "--size", "0x256"], contains="height and width must be at least 1")
    _refused(tmp_path, ["bench", "--repeat", "0"], exit_code=2, contains="'--repeat': 0 is not in the range")
    _refused(tmp_path, ["compress", "a.png"], exit_code=2, contains="Missing option '-o'")
    _refused(tmp_path, ["compres"], exit_code=2, contains="No such command")


def test_a_file_that_is_not_a_checkpoint_says_so(tmp_path):
    (tmp_path / "fake.png").write_text("hello\n")
    _refused(tmp_path, ["export", "--checkpoint", "fake.png", "--out", "x"],
             contains="fake.png is not a PyTorch checkpoint")


def test_an_unreadable_image_is_named_once_and_a_file_in_the_way_is_said(tmp_path):
    (tmp_path / "fake.png").write_text("hello\n")
    message = _refused(tmp_path, ["compress", "fake.png", "-o", "f.hpcm"], contains="is not a readable image")
    assert message.count("fake.png") == 2  # "error: fake.png is not a readable image (... 'fake.png')"


def test_stage_progress_is_one_bar_with_the_stage_lines_only_under_verbose(capsys):
    import logging

    from hpcm_deploy.cli.progress import StageBar

    root = logging.getLogger()
    level = root.level
    try:
        for verbose in (False, True):
            root.setLevel(logging.INFO if verbose else logging.WARNING)
            with StageBar("exporting") as bar:
                bar.start(2, "exporting the demo model: once")
                bar.done("g_a", 1.25)
                bar.done("g_s", 2.5)
            err = capsys.readouterr().err.splitlines()
            assert err[0] == "exporting the demo model: once"
            assert err[1:] == (["  g_a           1.2 s", "  g_s           2.5 s"] if verbose else [])
    finally:
        root.setLevel(level)


def test_tables_are_plain_and_whole_when_piped(capsys):
    from rich.table import Table

    from hpcm_deploy.cli.progress import print_table

    table = Table(title="a title wider than nothing")
    table.add_column("runner")
    table.add_column("encode s", justify="right")
    long = "PyTorch reference model with a long name " * 3
    table.add_row(long, "1.000")
    table.add_row("[bold]mean[/]", "12.5")
    print_table(table)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "a title wider than nothing"
    assert lines[2].startswith(long.strip()) and lines[2].endswith("1.000")  # nothing cut to "PyTor..."
    assert lines[3].startswith("mean ") and lines[3].endswith(" 12.5") and len(lines[3]) == len(lines[2])
