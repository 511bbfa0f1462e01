import json

from click.testing import CliRunner

from hpcm_deploy.cli import main


def test_help_lists_the_verbs():
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0 and "info" in result.output


def test_info_prints_config_and_counts():
    result = CliRunner().invoke(main, ["info", "tiny-phase2", "--set", "max_refs_s1=0", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["config"]["max_refs_s1"] == 0
    assert data["parameters"]["memory banks"] > 0 and data["parameters"]["total"] > 2_000_000


def test_bad_override_is_one_line_error():
    result = CliRunner().invoke(main, ["info", "tiny-phase2", "--set", "max_refs_s9=1"])
    assert result.exit_code == 1
    assert result.output.strip().count("\n") == 0 and result.output.startswith("error: bad --set")
