"""The `python -m crad` command line: lazy imports, every command's --help, clear errors."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from crad.__main__ import COMMANDS

TRAINING = Path(__file__).resolve().parents[1]


def crad(*args: str, code: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(TRAINING)}
    command = [sys.executable, "-c", code] if code else [sys.executable, "-m", "crad", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)


def test_top_level_help_lists_commands_without_importing_torch():
    probe = (
        "import sys\n"
        "from crad.__main__ import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit as e:\n    code = e.code\n"
        "assert 'torch' not in sys.modules, 'top-level --help imported torch'\n"
        "sys.exit(code)\n"
    )
    completed = crad(code=probe)
    assert completed.returncode == 0, completed.stderr
    for name in COMMANDS:
        assert name in completed.stdout


@pytest.mark.parametrize("command", list(COMMANDS))
def test_each_command_has_help(command):
    module_name = COMMANDS[command][0]
    if importlib.util.find_spec(module_name) is None:
        pytest.skip(f"{module_name} is not in this checkout yet")
    completed = crad(command, "--help")
    assert completed.returncode == 0, completed.stderr
    assert f"python -m crad {command}" in completed.stdout


def test_train_and_export_help_name_their_key_options():
    train_help = crad("train", "--help").stdout
    for option in ("--data", "--backbone-weights", "--variant", "--max-minutes", "--resume", "--seed", "--holdout"):
        assert option in train_help
    export_help = crad("export", "--help").stdout
    for option in ("--sampling", "--out", "--reference-images", "--opset", "--input-form", "--from-onnx"):
        assert option in export_help


def test_unknown_command_and_missing_arguments_fail_clearly():
    unknown = crad("fly")
    assert unknown.returncode == 2 and "unknown command 'fly'" in unknown.stderr
    no_data = crad("train", "--no-progress")
    assert no_data.returncode == 2 and "--data is required" in no_data.stderr


def test_missing_backbone_weights_is_a_clear_error_not_a_traceback(tmp_path):
    completed = crad("train", "--data", str(tmp_path), "--backbone", "efficientnet-b4", "--backbone-weights", str(tmp_path / "nope.pth"), "--no-progress")
    assert completed.returncode == 2
    assert "--backbone-weights" in completed.stderr and "nope.pth" in completed.stderr
    assert "Traceback" not in completed.stderr
