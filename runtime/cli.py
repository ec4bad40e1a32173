"""The `torchport` command. Each subcommand's module is imported only when it runs, so the base
install (runtime only) works without torch, and a command whose extra is missing says what to install."""
from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, extra that provides it, one-line help); each module has add_arguments(p) and run(args)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "train": ("torchport.export.cli_train", "train",
              "train on a bundled dataset or a file, export the bundle and verify it (the main job)"),
    "export": ("torchport.export.cli_export", "train",
               "re-export a bundle's checkpoint to ONNX and TorchScript (another opset, another place)"),
    "verify": ("torchport.export.cli_verify", "train",
               "check that torch, TorchScript and ONNX Runtime answer alike for a bundle"),
    "bench": ("torchport.export.cli_bench", "train",
              "compare throughput and latency of numpy, torch, TorchScript, ONNX Runtime and the Predictor"),
    "predict": ("torchport.runtime.cli_predict", "",
                "score a CSV/TSV file with a bundle through ONNX Runtime (no torch needed)"),
    "serve": ("torchport.runtime.cli_serve", "serve",
              "serve a bundle over HTTP: Open Inference Protocol (KServe V2), dynamic batching, /metrics"),
}
EPILOG = "Run `torchport COMMAND --help` for a command's options. With no options, `torchport train` " \
         "reproduces the tutorial's linear regression on the bundled island data."


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: `torchport CMD: error: ... (see torchport CMD --help)`, exit 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def int_at_least(low: int):
    """An argparse type: a whole number >= low."""
    def parse(text: str) -> int:
        if not text.isdigit() or int(text) < low:
            raise argparse.ArgumentTypeError(f"expected a whole number >= {low}, got {text!r}")
        return int(text)
    return parse


positive_int = int_at_least(1)


def positive_float(text: str) -> float:
    """An argparse type: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def fraction(text: str) -> float:
    """An argparse type: a number in [0, 1)."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {text!r}")
    return value


class UserError(Exception):
    """A mistake in the command line or its inputs: printed as one line, exit code 2."""


def _error(command: str, message: str, code: int) -> int:
    print(f"torchport {command}: error: {message}".replace("torchport : ", "torchport: "), file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `torchport` console script; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    top = Parser(prog="torchport", epilog=EPILOG,
                                  description="torchport: train a small PyTorch regression model, export it to "
                                              "TorchScript and ONNX, verify parity, and serve it with ONNX Runtime.")
    sub = top.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, _, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    command = next((a for a in argv if not a.startswith("-")), None)
    if command not in COMMANDS or argv[0] != command:
        top.parse_args(argv)  # prints help or the usage error (exit 0 or 2)
        top.print_help(sys.stderr)
        return 2
    module_name, extra, help_text = COMMANDS[command]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name and e.name.split(".")[0] == "torchport":
            raise
        return _error(command, f"needs the '{extra}' extra (module {e.name!r} is not installed): "
                               f"pip install 'torchport[{extra}]'", 2)
    parser = Parser(prog=f"torchport {command}", description=module.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    module.add_arguments(parser)
    args = parser.parse_args(argv[1:])
    user_errors = (UserError, ValueError, TypeError, FileNotFoundError, FileExistsError, PermissionError,
                   IsADirectoryError, NotADirectoryError)
    try:
        return int(module.run(args) or 0)
    except user_errors as e:
        return _error(command, str(e), 2)
    except KeyboardInterrupt:
        return _error(command, "interrupted", 130)


if __name__ == "__main__":
    sys.exit(main())
