"""The errors torchport raises on purpose, for every package (train, export, runtime, benchmarks). Each names
what was expected and what was given, and may carry fixes: settings that resolve it. Python callers read them
as ``name=value``; the `torchport` command prints one line with the fixes as its flags and exits with the
error's ``exit_code``. Anything else that escapes is a bug."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

FlagOf = Callable[[str], "str | None"]


@dataclass(frozen=True)
class Fix:
    """Settings that resolve a problem, with what they do: said as ``name=value`` to Python callers and as
    flags on the command line (True is a bare flag; None, back to the default, is said as dropping the flag)."""

    settings: dict = field(default_factory=dict)
    purpose: str = ""

    def render(self, flag_of: FlagOf | None = None) -> str:
        parts = []
        for name, value in self.settings.items():
            flag = flag_of(name) if flag_of else None
            if flag is None:
                parts.append(f"{name}={value!r}")
            elif value is None:
                parts.append(f"without {flag}")
            elif value is True:
                parts.append(flag)
            else:
                parts.append(f"{flag} {value:g}" if isinstance(value, float) else f"{flag} {value}")
        return " ".join(parts) if flag_of else ", ".join(parts)


def render_fixes(fixes: tuple[Fix, ...], flag_of: FlagOf | None = None) -> str:
    """'use A (what it does), or B (...)' for the fixes, in Python's or the command's terms."""
    said = [f.render(flag_of) + (f" ({f.purpose})" if f.purpose else "") for f in fixes]
    return "use " + ", or ".join(said) if said else ""


class TorchportError(Exception):
    """Base of torchport's own errors. ``parameter`` names the argument at fault (the command line shows
    its flag); ``fixes`` are settings that resolve it, best first; ``exit_code`` is what the `torchport`
    command exits with."""
    exit_code = 2

    def __init__(self, message: str, *, parameter: str | None = None, fixes: tuple[Fix, ...] = ()):
        super().__init__(message)
        self.message, self.parameter, self.fixes = message, parameter, tuple(fixes)

    def render(self, flag_of: FlagOf | None = None) -> str:
        """The message and its fixes; with ``flag_of`` (parameter name -> flag or None) in the command's terms."""
        return self.message + (f"; {render_fixes(self.fixes, flag_of)}" if self.fixes else "")

    def __str__(self) -> str:
        return self.render()


class BundleError(TorchportError, ValueError):
    """A bundle that cannot be used: missing, malformed, tampered with, or from a newer torchport."""


class DataError(TorchportError, ValueError):
    """Data that cannot be used (a table, a dataset, a JSON record): the message names the file, column and
    row, or the key, and the fix."""


class InputError(TorchportError, ValueError):
    """An argument that cannot be used: wrong type, shape or value for the call it was given to."""


class InputTypeError(InputError, TypeError):
    """An argument of a type the call cannot use (strings where numbers are expected, say)."""


class ParityError(TorchportError, AssertionError):
    """Exported copies disagree with the torch model beyond the parity criterion."""
    exit_code = 1
