"""The command line as a whole: verbs, start-up cost, one-line errors."""

import json
import subprocess
import sys

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
