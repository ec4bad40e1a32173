"""The `torchport` command: finds the subcommand, imports its module only when it runs (so the base install,
the runtime alone, works without torch, and a command whose extra is missing says what to install), and
turns torchport's own errors into one line and an exit code. Anything else is a bug: its traceback is shown."""
from __future__ import annotations

import argparse
import errno
import importlib
import sys
import traceback

from torchport.runtime.errors import TorchportError

# name -> (module, extra that provides it, one-line help); each module has add_arguments(p) and run(args).
COMMANDS: dict[str, tuple[str, str, str]] = {
    "train": ("torchport.export.cli_train", "train",
              "train on a bundled dataset or a file, export the bundle and verify it (the main job)"),
    "export": ("torchport.export.cli_export", "train",
               "re-export a bundle to ONNX and its other formats, or into a Triton model repository"),
    "verify": ("torchport.export.cli_verify", "train",
               "check that torch and every format of a bundle (ONNX Runtime, TorchScript, ExportedProgram, "
               "AOTInductor) answer alike"),
    "bench": ("torchport.benchmarks.cli_bench", "train",
              "compare throughput and latency of numpy, torch, TorchScript, ExportedProgram, AOTInductor, ONNX "
              "Runtime and the Predictor"),
    "report": ("torchport.benchmarks.cli_report", "train",
               "write a bundle's HTML report elsewhere, with the tables of a `torchport bench` run"),
    "predict": ("torchport.runtime.cli_predict", "",
                "score a CSV/TSV/Parquet file with a bundle through ONNX Runtime (no torch needed)"),
    "tune": ("torchport.runtime.cli_tune", "",
             "measure which way of running each batch size is fastest on this machine; save the plan"),
    "serve": ("torchport.runtime.cli_serve", "serve",
              "serve bundles or a model repository over REST and gRPC (Open Inference Protocol), with "
              "dynamic batching, reloads, statistics and /metrics"),
    "sign": ("torchport.runtime.cli_sign", "sign",
             "sign a bundle's manifest (ed25519), so that servers given --trusted-keys accept it"),
}
EPILOG = "Run `torchport COMMAND --help` for a command's options. With no options, `torchport train` " \
         "reproduces the tutorial's linear regression on the bundled island data."
BUG = "this is a bug in torchport, not a mistake of yours: please report it with the traceback above"


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: `torchport CMD: error: ... (see torchport CMD --help)`, exit 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def flag_finder(parser: argparse.ArgumentParser):
    """A function from a Python parameter name to the command's flag for it (or None)."""
    flags = {a.dest: a.option_strings[-1] if a.option_strings[-1].startswith("--") else a.option_strings[0]
             for a in parser._actions if a.option_strings}
    return lambda name: flags.get(name)


def describe(error: BaseException, flag_of) -> str:
    """An error's message in the command's terms: its fix as a flag, the parameter at fault named by its flag."""
    text = error.render(flag_of) if isinstance(error, TorchportError) else str(error)
    flag = flag_of(getattr(error, "parameter", None) or "")
    if flag and flag not in text:
        text += f" ({flag})"
    return text


# What to do about an error of the machine (torchport's writers name the path: runtime/files.py).
MACHINE_FIXES = {errno.ENOSPC: "free some space there, or write somewhere else",
                 errno.EDQUOT: "free some of your quota there, or write somewhere else",
                 errno.EROFS: "write somewhere else, or mount it read-write",
                 errno.EACCES: "use a path you may write to, or change its permissions",
                 errno.EPERM: "use a path you may write to, or change its permissions"}


def os_error_line(e: OSError) -> str:
    """An OSError that names its path, in one line: the path, the cause, and for an error of the machine
    (disk full, read-only, permission denied) that nothing was written and what to do."""
    fix = MACHINE_FIXES.get(e.errno)
    if fix is None:
        return f"{e.strerror or e}: {e.filename}"
    return f"{e.filename}: {(e.strerror or str(e)).lower()}; nothing was written: {fix}"


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `torchport` console script; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    top = Parser(prog="torchport", epilog=EPILOG,
                 description="torchport: train a small PyTorch regression model, export it to ONNX, "
                             "TorchScript, torch.export and AOTInductor, verify parity, and serve it with ONNX "
                             "Runtime.")
    sub = top.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, _, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    command = next((a for a in argv if not a.startswith("-")), None)
    if command not in COMMANDS or argv[0] != command:
        top.parse_args(argv)  # prints help or the usage error (exit 0 or 2)
        top.print_help(sys.stderr)
        return 2
    module_name, extra, _ = COMMANDS[command]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name and e.name.split(".")[0] == "torchport":
            raise
        print(f"torchport {command}: error: needs the '{extra}' extra (module {e.name!r} is not installed): "
              f"pip install 'torchport[{extra}]'", file=sys.stderr)
        return 2
    parser = Parser(prog=f"torchport {command}", description=module.__doc__,
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    module.add_arguments(parser)
    args = parser.parse_args(argv[1:])
    try:
        return int(module.run(args) or 0)
    except TorchportError as e:
        print(f"torchport {command}: error: {describe(e, flag_finder(parser))}", file=sys.stderr)
        return int(getattr(e, "exit_code", 2))
    except KeyboardInterrupt:
        print(f"torchport {command}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if isinstance(e, OSError) and e.filename is not None:  # a path the user gave, or the machine
            print(f"torchport {command}: error: {os_error_line(e)}", file=sys.stderr)
            return 2
        traceback.print_exc()
        print(f"torchport {command}: {BUG}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
