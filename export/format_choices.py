"""The model formats a bundle may be written in and the CPUs an AOTInductor package may be compiled for, by
the names the options take, without importing torch (the `torchport` command builds its options from them
before anything heavy is loaded)."""
from __future__ import annotations

from typing import Iterable

from torchport.runtime.bundle import FORMAT_FILES
from torchport.runtime.errors import InputError

# What a bundle holds unless asked otherwise: quick to write (AOTInductor's compile takes tens of seconds,
# so "aoti" is asked for by name).
DEFAULT_FORMATS = ("onnx", "torchscript", "exported")
# cpu_target -> (Inductor's cpp.march, cpp.simdlen: the vector width its kernels use; 0 = no vectors).
# "native" is Inductor's default: -march=native, the widest vectors the CPU has.
CPU_TARGETS = {"native": (None, None), "x86-64-v2": ("x86-64-v2", 0), "x86-64-v3": ("x86-64-v3", 256),
               "x86-64-v4": ("x86-64-v4", 512)}


def check_formats(formats: Iterable[str]) -> tuple[str, ...]:
    """``formats`` in FORMAT_FILES' order, with "onnx" (the runtime runs it) always among them."""
    asked = list(formats) if not isinstance(formats, str) else formats.split(",")
    unknown = [f for f in asked if f not in FORMAT_FILES]
    if unknown:
        raise InputError(f"unknown format(s) {', '.join(map(repr, unknown))}; choose from "
                         f"{', '.join(FORMAT_FILES)}", parameter="formats")
    return tuple(f for f in FORMAT_FILES if f == "onnx" or f in asked)
