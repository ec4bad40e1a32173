"""model.aoti.pt2 (and model.aoti.cuda.pt2): the ExportedProgram compiled ahead of time by AOTInductor to
native code in a .pt2 package, with what it needs to run (torch release, platform, device, the CPU features
its code may use) recorded in the manifest, and refused where that does not hold: an AVX-512 build on an
AVX2 machine would die of SIGILL, not raise."""
from __future__ import annotations

import functools
import io
import re
import subprocess
import zipfile
import time
from pathlib import Path

import torch

from torchport.export.exported import archive_members
from torchport.export.format_choices import CPU_TARGETS
from torchport.export.torch_calls import export_error, first_line, quiet_torch
from torchport.runtime.bundle import Bundle, FileWriter, Requirements, platform_tag
from torchport.runtime.cpus import cpu_flags
from torchport.runtime.errors import BundleError, InputError

TOOL = "torch._inductor.aoti_compile_and_package"
# What a package AOTInductor writes for one model holds (below its root folder): the archive's version
# files and the compiled model. torch's package loader would also load any ExportedProgram in the archive,
# unpickling its pickled weights, so a package with anything else (models/, weights, extra files) is refused.
PACKAGE_MEMBERS = re.compile(r"(archive_format|archive_version|byteorder|\.data/version|\.data/serialization_id"
                             r"|data/aotinductor/model/[^/]+)")
_V2 = ("cx16", "lahf_lm", "pni", "popcnt", "sse4_1", "sse4_2", "ssse3")
_V3 = _V2 + ("abm", "avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "movbe", "xsave")
LEVEL_FLAGS = {"x86-64-v2": _V2, "x86-64-v3": _V3,
               "x86-64-v4": _V3 + ("avx512bw", "avx512cd", "avx512dq", "avx512f", "avx512vl")}
# Instruction-set extensions (as /proc/cpuinfo names them) that -march=native lets g++ use on x86, besides
# every avx*, amx*, sse* and sha* flag.
NATIVE_EXTRAS = {"abm", "adx", "aes", "bmi1", "bmi2", "clflushopt", "clwb", "cx16", "f16c", "fma", "fsgsbase",
                 "gfni", "lahf_lm", "movbe", "movdir64b", "movdiri", "pclmulqdq", "pni", "popcnt", "prfchw",
                 "rdpid", "rdrand", "rdseed", "serialize", "ssse3", "vaes", "vpclmulqdq", "xsave", "xsavec",
                 "xsaveopt", "xsaves"}
# g++ -m flags of Inductor's vector ISAs whose /proc/cpuinfo names differ from the flag.
GCC_TO_CPUINFO = {"avx512vnni": "avx512_vnni", "avx512bf16": "avx512_bf16", "avx512fp16": "avx512_fp16",
                  "amx-tile": "amx_tile", "amx-bf16": "amx_bf16", "amx-int8": "amx_int8", "amx-fp16": "amx_fp16"}


class PackageCannotRun(BundleError):
    """A package whose manifest says it needs what this process lacks (torch release, platform, CPU
    features, a GPU): refused before it is loaded. verify and bench skip it with this message as a note."""


def _native_flags() -> tuple[str, ...]:
    flags = cpu_flags()
    if platform_tag().endswith(("x86_64", "amd64")):
        flags = {f for f in flags if f in NATIVE_EXTRAS or f.startswith(("avx", "amx", "sse", "sha"))}
    return tuple(sorted(flags))


def _vector_isa(simdlen: int | None) -> tuple[str, tuple[str, ...]]:
    """The vector ISA Inductor picks for ``simdlen`` here, and the CPU flags its kernels' -m flags need."""
    from torch._inductor import config
    from torch._inductor.cpu_vec_isa import pick_vec_isa
    with config.patch({"cpp.simdlen": simdlen}):
        isa = pick_vec_isa()
    names = {GCC_TO_CPUINFO.get(f[2:], f[2:]) for f in isa.build_arch_flags().split() if f.startswith("-m")}
    return (str(isa) or "none"), tuple(sorted(names))


@functools.lru_cache(maxsize=1)
def compiler_version() -> str:
    """The first line of ``--version`` of the C++ compiler Inductor uses."""
    from torch._inductor.cpp_builder import get_cpp_compiler
    compiler = get_cpp_compiler()
    try:
        out = subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=30).stdout
    except OSError as e:
        raise BundleError(f"AOTInductor needs a C++ compiler, and {compiler!r} cannot be run ({e}); install "
                          "g++ or set CXX") from None
    return out.splitlines()[0] if out else compiler


def cuda_capabilities() -> tuple[str, ...]:
    """The compute capabilities (``major.minor``) of the GPUs torch can use here."""
    if not torch.cuda.is_available():
        return ()
    return tuple("{}.{}".format(*torch.cuda.get_device_capability(i)) for i in range(torch.cuda.device_count()))


def requirements(device: str, cpu_target: str) -> Requirements:
    """What a package compiled here for ``device`` and ``cpu_target`` needs where it runs."""
    if cpu_target not in CPU_TARGETS:
        raise InputError(f"aoti_cpu must be one of {', '.join(CPU_TARGETS)}; got {cpu_target!r}",
                         parameter="aoti_cpu")
    _, simdlen = CPU_TARGETS[cpu_target]
    isa, isa_flags = _vector_isa(simdlen)
    flags = _native_flags() if cpu_target == "native" else tuple(sorted(set(LEVEL_FLAGS[cpu_target]) | set(isa_flags)))
    cuda = device == "cuda"
    return Requirements(torch.__version__, platform_tag(), device, cpu_target, isa, flags,
                        cuda_capabilities()[0] if cuda else None, torch.cuda.get_device_name(0) if cuda else None)


def compile_package(program: torch.export.ExportedProgram, path: Path, device: str = "cpu",
                    cpu_target: str = "native") -> FileWriter:
    """Compile ``program`` (traced on ``device``) into the AOTInductor package ``path``; returns what wrote
    it (the compiler, the seconds it took, what the package needs)."""
    requires = requirements(device, cpu_target)
    march, simdlen = CPU_TARGETS[cpu_target]
    configs = {} if cpu_target == "native" else {"cpp.march": march, "cpp.simdlen": simdlen}
    compiler = compiler_version()
    start = time.perf_counter()
    package = io.BytesIO()  # packaged in memory, then written by Python: a full disk is an OSError
    try:
        with quiet_torch():
            torch._inductor.aoti_compile_and_package(program, package_path=package, inductor_configs=configs)
    except Exception as e:  # Inductor raises many types (lowering, the C++ compiler's errors)
        raise export_error(f"compile the module with AOTInductor for {device}", e) from e
    path.write_bytes(package.getvalue())
    seconds = time.perf_counter() - start
    if device == "cuda":
        import triton
        compiler += f"; triton {triton.__version__}"
    return FileWriter(TOOL, {"torch": torch.__version__}, seconds, device, compiler, requires)


def load_package(bundle: Bundle, name: str):
    """The AOTInductor package ``name`` of ``bundle`` as torch's callable, loaded from the bytes its sha256
    was checked on; refused (BundleError naming the file) where the manifest says it cannot run, or where
    the archive holds more than the compiled model (torch's loader would unpickle an ExportedProgram in it)."""
    where = bundle.path / name
    data = bundle.read(name)
    writer = bundle.manifest.files[name].writer
    if writer is None or writer.requires is None:
        raise BundleError(f"{where}: the manifest does not say what this package needs to run (torch, platform, "
                          "CPU features), so it is not loaded; re-export the bundle")
    problems = writer.requires.problems(torch.__version__, cuda_capabilities())
    if problems:
        raise PackageCannotRun(f"{where} cannot run here: {'; '.join(problems)}; re-export the bundle on this "
                               "machine, or with a cpu target this CPU has (aoti_cpu)")
    try:
        archive_members(data, str(where), PACKAGE_MEMBERS, "an AOTInductor package")
    except zipfile.BadZipFile as e:
        raise BundleError(f"{where} is not an AOTInductor package ({e})") from None
    try:
        with quiet_torch():
            return torch._inductor.aoti_load_package(io.BytesIO(data))
    except Exception as e:  # the loader raises RuntimeError and others for packages it cannot read
        raise BundleError(f"{where} could not be loaded by torch {torch.__version__} ({first_line(e)}); "
                          "re-export the bundle") from None
