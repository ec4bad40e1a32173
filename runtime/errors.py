"""The errors torchport raises on purpose. Each names what was expected and what was given; the `torchport`
command prints one line for them and exits with their ``exit_code``. Anything else that escapes is a bug."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Fix:
    """A setting that resolves an error: said as ``name=value`` to Python callers and as its flag on the
    command line (``--force``, ``--lr 0.0002``)."""
    parameter: str
    value: object = True
    purpose: str = ""

    def python(self) -> str:
        return f"{self.parameter}={self.value!r}"

    def cli(self, flag: str) -> str:
        return flag if self.value is True else f"{flag} {self.value}"


class TorchportError(Exception):
    """Base of torchport's own errors. ``parameter`` names the argument at fault (the command line shows
    its flag), ``fix`` a setting that resolves it."""
    exit_code = 2

    def __init__(self, message: str, *, parameter: str | None = None, fix: Fix | None = None):
        self.message, self.parameter, self.fix = message, parameter, fix
        super().__init__(self.render())

    def render(self, flag_of=None) -> str:
        """The message; with ``flag_of`` (parameter name -> command-line flag or None) in the command's terms."""
        text = self.message
        if self.fix is not None:
            flag = flag_of(self.fix.parameter) if flag_of else None
            how = self.fix.cli(flag) if flag else self.fix.python()
            text += f"; {'pass' if flag else 'give'} {how}" + (f" {self.fix.purpose}" if self.fix.purpose else "")
        return text


class BundleError(TorchportError, ValueError):
    """A bundle that cannot be used: missing, malformed, tampered with, or from a newer torchport."""


class DataError(TorchportError, ValueError):
    """Input data that cannot be used: the message names the file, column and row."""


class InputError(TorchportError, ValueError):
    """An argument that cannot be used: wrong type, shape or value for the call it was given to."""


class InputTypeError(InputError, TypeError):
    """An argument of a type the call cannot use (strings where numbers are expected, say)."""


class ParityError(TorchportError, AssertionError):
    """Exported copies disagree with the torch model beyond the parity criterion."""
    exit_code = 1
