"""Value types for the commands' options, shared by every `torchport` command (argparse ``type=``)."""
from __future__ import annotations

import argparse
import math
from pathlib import Path

SIZE_SUFFIXES = {"k": 1 << 10, "m": 1 << 20}


def int_at_least(low: int):
    """An option type: a whole number >= ``low``."""
    def parse(text: str) -> int:
        if not text.isdigit() or int(text) < low:
            raise argparse.ArgumentTypeError(f"expected a whole number >= {low}, got {text!r}")
        return int(text)
    parse.__name__ = f"whole number >= {low}"
    return parse


positive_int = int_at_least(1)


def number(text: str) -> float:
    """An option type: any number (its range is checked by the setting it is given to)."""
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def whole_number(text: str) -> int:
    """An option type: any whole number (its range is checked by the setting it is given to)."""
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None


def positive_float(text: str) -> float:
    """An option type: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def fraction(text: str) -> float:
    """An option type: a number in [0, 1)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {text!r}")
    return value


def port(text: str) -> int:
    """An option type: a TCP port number."""
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port number from 1 to 65535, got {text!r}")
    return int(text)


def widths(text: str) -> tuple[int, ...]:
    """An option type: comma-separated whole numbers (layer widths such as 32,32)."""
    try:
        out = tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        out = ()
    if not out:
        raise argparse.ArgumentTypeError(f"expected widths separated by commas (e.g. 32,32), got {text!r}")
    return out


def names(text: str) -> list[str]:
    """An option type: comma-separated names (columns, formats)."""
    out = [t.strip() for t in text.split(",") if t.strip()]
    if not out:
        raise argparse.ArgumentTypeError("expected one or more names separated by commas")
    return out


def sizes(text: str) -> list[int]:
    """An option type: comma-separated counts >= 1, where k and M mean 1024 and 1048576 (1M = 2**20)."""
    out = []
    for item in (t.strip().lower() for t in text.split(",") if t.strip()):
        scale = SIZE_SUFFIXES.get(item[-1], 1)
        digits = item[:-1] if item[-1] in SIZE_SUFFIXES else item
        if not digits.isdigit() or int(digits) < 1:
            raise argparse.ArgumentTypeError(f"expected sizes >= 1 separated by commas (e.g. 1,64,4k,1M), got {text!r}")
        out.append(int(digits) * scale)
    if not out:
        raise argparse.ArgumentTypeError("expected one or more sizes, e.g. 1,64,4096")
    return sorted(set(out))


def existing_file(text: str) -> Path:
    """An option type: a path to a file that exists."""
    path = Path(text)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"{text!r} is not a file" + ("" if path.exists() else " (no such file)"))
    return path


def delimiter(text: str) -> str:
    """An option type: a CSV delimiter by name (comma, semicolon, tab) or as the character itself."""
    from torchport.runtime.errors import InputError
    from torchport.runtime.tables import delimiter_of
    try:
        return delimiter_of(text)
    except InputError as e:
        raise argparse.ArgumentTypeError(e.message) from None
