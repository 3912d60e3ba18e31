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


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_bad_train_input_is_one_line_and_exit_2(tmp_path, capsys):
    workdir = ["--workdir", str(tmp_path / "w")]
    assert cli.main(["train", "--config", "nonexist.py", *workdir]) == 2
    assert "no config file 'nonexist.py'" in one_error_line(capsys)
    assert cli.main(["train", "--config", "fashion_mnist:nopreset", *workdir]) == 2
    assert "Unknown fashion_mnist preset 'nopreset'" in one_error_line(capsys)
    both = ["--config.model.depth=50", "--config.model.stage_sizes=2,2,2,2"]
    assert cli.main(["train", "--config", "fashion_mnist", *both, *workdir]) == 2
    assert "either model.depth or model.stage_sizes" in one_error_line(capsys)
    assert cli.main(["train", "--config", "imagenet", "--config.model.depth=51", *workdir]) == 2
    assert "Unknown ResNet-RS depth 51" in one_error_line(capsys)
    assert cli.main(["train", "--config", "fashion_mnist", "--config.seed=one", *workdir]) == 2
    assert "config key 'seed' wants an int" in one_error_line(capsys)
    assert cli.main(["train", "--config", "fashion_mnist", "--bogus", *workdir]) == 2
    assert "unknown argument '--bogus'" in one_error_line(capsys)
    cluster = ["--coordinator_address", "127.0.0.1:1234", "--num_processes", "2"]
    for flags, message in [
        (["--jax_distributed", *cluster], "go together"),
        (["--jax_distributed", *cluster, "--process_id", "2"], "--process_id must be in [0, 2)"),
        ([*cluster, "--process_id", "1"], "need --jax_distributed"),
        (["--jax_distributed", "--coordinator_address", "nohost", "--num_processes", "1",
          "--process_id", "0"], "must be HOST:PORT"),
    ]:  # fmt: skip
        assert cli.main(["train", "--config", "fashion_mnist", *flags, *workdir]) == 2
        assert message in one_error_line(capsys)
    assert not (tmp_path / "w").exists()  # nothing was written for bad input


def test_a_config_file_with_a_syntax_error_is_one_line(tmp_path, capsys):
    bad = tmp_path / "bad_config.py"
    bad.write_text("def get_config(:\n    pass\n")
    assert cli.main(["train", "--config", str(bad), "--workdir", str(tmp_path)]) == 2
    assert f"{bad}:1: syntax error" in one_error_line(capsys)


def test_the_command_prints_no_traceback(tmp_path):
    """The real entry point (not only `main`): one line on stderr, exit 2."""
    result = subprocess.run(
        [sys.executable, "-m", "rsjax.cli", "train", "--config", "nonexist.py", "--workdir", "w"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "rsjax train: error: no config file 'nonexist.py' (and no bundled config of that name; "
        "bundled: fashion_mnist, imagenet, video)"
    ]


def test_a_reader_that_stops_early_leaves_no_traceback():
    """`rsjax sweep plan BIG | head -1`: the pipe closes under the writer; it stops quietly."""
    from tests.test_train import REPO

    plan = subprocess.Popen(
        [sys.executable, "-m", "rsjax.cli", "sweep", "plan", "sweeps/paper_fig2.py", "--jsonl"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    plan.stdout.readline()
    plan.stdout.close()  # like `head -1` exiting
    err = plan.stderr.read().decode()
    assert plan.wait() in (0, 141) and "Traceback" not in err, err


def test_a_sweep_file_with_a_syntax_error_is_one_line(tmp_path, capsys):
    bad = tmp_path / "bad_sweep.py"
    bad.write_text("from rsjax.sweep import Run\ndef get_sweep(:\n    return []\n")
    assert cli.main(["sweep", "plan", str(bad)]) == 2
    assert f"{bad}:2: syntax error" in one_error_line(capsys)


def test_sweep_plan_rejects_what_train_would_reject(tmp_path, capsys):
    sweep = tmp_path / "deep_sweep.py"
    sweep.write_text(
        "from rsjax.sweep import Run\n"
        "def get_sweep():\n"
        "    return [Run('ok', {'model.depth': 50}, 'imagenet:resnetrs50_i160'),\n"
        "            Run('d51', {'model.depth': 51}, 'imagenet:resnetrs50_i160')]\n"
    )
    assert cli.main(["sweep", "plan", str(sweep)]) == 2
    line = one_error_line(capsys)
    assert "run 'd51'" in line and "Unknown ResNet-RS depth 51" in line
    sweep.write_text(
        "from rsjax.sweep import Run\n"
        "def get_sweep():\n"
        "    return [Run('odd', {'global_batch_size': 100, 'mesh.data': 8}, 'fashion_mnist')]\n"
    )
    assert cli.main(["sweep", "plan", str(sweep)]) == 2
    assert "not divisible by the mesh's data axis" in one_error_line(capsys)
    assert cli.main(["sweep", "launch", str(sweep), "--workdir", str(tmp_path / "w")]) == 2
    assert "not divisible" in one_error_line(capsys)
    assert not (tmp_path / "w").exists()  # rejected before anything launched


def test_profile_takes_the_train_config_flags(capsys):
    assert cli.main(["profile", "--config", "fashion_mnist", "--set", "model.depth=26"]) == 2
    assert "unknown argument '--set'" in one_error_line(capsys)
    assert cli.main(["profile", "--help"]) == 0
    assert "--config.model.depth=26" in capsys.readouterr().out
