"""The `rsjax` command line."""

import json
import subprocess
import sys

from rsjax import cli


def test_models_subcommand_prints_table7_beside_ours(capsys):
    assert cli.main(["models", "resnetrs50"]) == 0
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if line.startswith("resnetrs50 "))
    assert "3-4-6-3" in line and "35,691,912" in line and "36M" in line
    assert "4.56" in line and "4.6" in line


def test_models_json(capsys):
    assert cli.main(["models", "resnetrs26_w0p5", "--json"]) == 0
    row = json.loads(capsys.readouterr().out.splitlines()[0])
    assert row["name"] == "resnetrs26_w0p5" and row["stage_sizes"] == [2, 2, 2, 2]
    assert row["paper_flops_b"] is None


def test_unknown_model_is_a_clear_error(capsys):
    assert cli.main(["models", "resnet9000"]) == 2
    assert "Unknown model 'resnet9000'" in capsys.readouterr().err


def test_help_has_examples():
    out = subprocess.run(
        [sys.executable, "-m", "rsjax.cli", "models", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "Examples:" in out and "rsjax models" in out
