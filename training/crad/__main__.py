"""The trainer's command line: `python -m crad <command> [options]` (from the repo root with
PYTHONPATH=training, or `npm run trainer -- <command>`).

Each command lives in its own module exposing add_arguments(parser) and run(args) -> int.
Only the chosen command's module is imported (torch takes a second to load), so
`python -m crad --help` is instant.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# command -> (module, one-line summary)
COMMANDS: dict[str, tuple[str, str]] = {
    "synth": ("crad.synth", "generate the synthetic product classes (MVTec layout, exact masks)"),
    "train": ("crad.train", "train a CRAD model on normal images of one or more classes"),
    "eval": ("crad.evaluate", "evaluate a checkpoint: image/pixel AUROC, AUPRO, F1-max, overlays"),
    "calibrate": ("crad.calibrate", "compute score thresholds from normal images into the model"),
    "export": ("crad.export", "export a checkpoint to the contract's ONNX file and reference file"),
    "teach": ("crad.teach", "good images -> train -> calibrate -> export, JSON-lines progress (the daemon's on-device training)"),
    "bench": ("crad.bench", "benchmarks: Magnetic Tile (protocol or few good images), separate vs unified"),
}


def _top_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m crad",
        description="CRAD trainer: synthetic data, training, evaluation, calibration, ONNX export.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="commands:\n" + "\n".join(f"  {name:<10} {summary}" for name, (_, summary) in COMMANDS.items())
        + "\n\n`python -m crad <command> --help` shows a command's options.",
    )
    parser.add_argument("command", choices=list(COMMANDS), metavar="command", help="one of: " + ", ".join(COMMANDS))
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    top = _top_parser()
    if not argv or argv[0].startswith("-"):
        top.parse_args(argv or ["--help"])  # prints help (or the error) and exits
        return 2
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        top.error(f"unknown command {command!r} (choose from {', '.join(COMMANDS)})")
    module_name, summary = COMMANDS[command]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name != module_name:
            raise
        print(f"error: command {command!r} is not available: module {module_name} is not in this checkout", file=sys.stderr)
        return 2
    parser = argparse.ArgumentParser(prog=f"python -m crad {command}", description=summary)
    module.add_arguments(parser)
    args = parser.parse_args(rest)
    try:
        return int(module.run(args) or 0)
    except Exception as error:
        # Bad input (a missing weight file, dataset or checkpoint) is the user's to fix: say what,
        # without a traceback. Anything else is a bug and keeps its traceback.
        if isinstance(error, _user_errors()):
            print(f"error: {error}", file=sys.stderr)
            return 2
        raise


def _user_errors() -> tuple[type, ...]:
    errors: list[type] = [FileNotFoundError]
    backbones = sys.modules.get("crad.backbones")
    data = sys.modules.get("crad.data")
    if backbones is not None:
        errors.append(backbones.BackboneWeightsError)
    if data is not None and hasattr(data, "DataError"):
        errors.append(data.DataError)
    device = sys.modules.get("crad.device")
    if device is not None:
        errors.append(device.DeviceError)
    return tuple(errors)


if __name__ == "__main__":
    sys.exit(main())
