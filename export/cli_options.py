"""Options and output lines that `torchport train` and `torchport export` share."""
from __future__ import annotations

import argparse

from torchport.export.format_choices import CPU_TARGETS, check_formats
from torchport.export.opsets import DEFAULT_OPSET
from torchport.export.parity import Tolerance
from torchport.runtime.bundle import AOTI_CUDA_FILE, FORMAT_FILES, Manifest, ParityReport
from torchport.runtime.errors import TorchportError
from torchport.runtime.options import positive_float, positive_int

NO_LARGE_BATCH_GRAPH_HELP = ("do not write model.large_batch.onnx nor model.threaded.onnx. By default, when the "
                             "model has a linear layer with a single input (as the one-feature linear model's) or "
                             "scaling, the bundle also holds the same model with that layer as Mul+Add instead of "
                             "Gemm and the scaling folded into the first and last layers' weights, verified like "
                             "model.onnx; the Predictor runs it for batches of more than 64 rows (every batch "
                             "when only the scaling was folded) and model.onnx for the others. An MLP with relu "
                             "also gets model.threaded.onnx, that graph with its hidden layers' biases carried in "
                             "a column of ones (also verified), which the Predictor runs on several threads")


PARITY_HELP = ("By default each exported copy must answer within {multiple:g} times float32 torch's own error "
               "(against the same model run in float64, per target) plus {floor:g} float32 ulps of the target's "
               "largest answer: rounding passes at any scale, a real defect fails")


def add_tolerance_options(p: argparse.ArgumentParser) -> None:
    """--atol and --rtol: a fixed tolerance instead of the default criterion."""
    t = Tolerance()
    p.add_argument("--atol", type=positive_float, metavar="A",
                   help="with --rtol: check |copy - float64| <= A + R * |float64| instead of the default criterion. "
                        + PARITY_HELP.format(multiple=t.multiple, floor=t.floor_ulps))
    p.add_argument("--rtol", type=positive_float, metavar="R", help="with --atol: the relative part")


FORMATS_HELP = ("model formats to write, comma-separated, from: onnx (model.onnx, what the runtime runs: always "
                "written), torchscript (model.torchscript.pt; left out with a note where torch refuses it), "
                "exported (model.pt2, a torch.export ExportedProgram), aoti (model.aoti.pt2, compiled ahead of "
                "time by AOTInductor with the C++ compiler, which takes tens of seconds; also "
                f"{AOTI_CUDA_FILE} when torch sees a GPU)")
AOTI_CPU_HELP = ("which CPUs the AOTInductor package's native code is for: native (this CPU's every instruction-set "
                 "extension, the fastest here; refused on CPUs without them) or an x86-64 level "
                 "(x86-64-v3: AVX2, x86-64-v4: AVX-512) to run on any CPU that has it (default: native)")


def formats_option(value: str) -> tuple[str, ...]:
    """A --formats value: known names, "onnx" added."""
    try:
        return check_formats([v.strip() for v in value.split(",") if v.strip()])
    except TorchportError as e:
        raise argparse.ArgumentTypeError(e.message) from None


def add_formats_options(p: argparse.ArgumentParser, default: str) -> None:
    """--formats and --aoti-cpu; ``default`` says what --formats defaults to."""
    p.add_argument("--formats", type=formats_option, metavar="F,F,...", help=f"{FORMATS_HELP} (default: {default})")
    p.add_argument("--aoti-cpu", default="native", choices=list(CPU_TARGETS), help=AOTI_CPU_HELP)


def add_export_options(p: argparse.ArgumentParser) -> None:
    """--opset, --no-large-batch-graph, --atol, --rtol and --publish-failed."""
    p.add_argument("--opset", type=positive_int, default=DEFAULT_OPSET,
                   help=f"ONNX opset to export (default: {DEFAULT_OPSET})")
    p.add_argument("--no-large-batch-graph", action="store_true", help=NO_LARGE_BATCH_GRAPH_HELP)
    add_tolerance_options(p)
    p.add_argument("--publish-failed", action="store_true",
                   help="publish a bundle that fails parity anyway, marked failed in its manifest (the runtime "
                        "then refuses it unless told --allow-failed-parity / allow_failed_parity=True). Without "
                        "it such a bundle is not published: it stays beside --out as <out>.parity-failed")


def tolerance(args: argparse.Namespace) -> Tolerance:
    return Tolerance(atol=args.atol, rtol=args.rtol)


def graph_lines(manifest: Manifest, asked: bool) -> list[str]:
    """Whether the bundle holds the large-batch graph (and why not), and its threaded graph if any."""
    graph, threaded = manifest.export.large_batch_graph, manifest.export.threaded_graph
    if graph:
        sizes = "batches of more than 64 rows" if "gemm_k1_to_mul_add" in graph.rewrites else "every batch"
        lines = [f"large-batch graph: {graph.file} (ops {', '.join(graph.ops)}), run by the Predictor for {sizes}"]
    else:
        why = ("the model has no linear layer with a single input and no scaling, or the rewritten graph failed "
               "parity" if asked else "--no-large-batch-graph")
        runs = "one-thread runs use model.onnx" if threaded else "every batch runs model.onnx"
        lines = [f"large-batch graph: none ({why}); {runs}"]
    if threaded:
        lines.append(f"threaded graph: {threaded.file} (ops {', '.join(threaded.ops)}; "
                     f"{threaded.rewrites.get('fold_hidden_biases', 0)} hidden biases in a ones column), run by the "
                     "Predictor where ONNX Runtime runs a batch on several threads")
    return lines


def formats_lines(manifest: Manifest) -> list[str]:
    """The formats the bundle holds, how long the compiled ones took, and those not written (and why)."""
    m = manifest
    names = {**FORMAT_FILES, "aoti_cuda": AOTI_CUDA_FILE}
    lines = [f"formats: {', '.join(f'{f} ({names[f]})' for f in m.export.formats)}"]
    for f in m.export.formats:
        writer = m.files[names[f]].writer
        if writer and writer.requires:
            r = writer.requires
            lines.append(f"  {names[f]}: compiled by {writer.compiler} in {writer.seconds:.1f} s for {r.device} "
                         f"(cpu target {r.cpu_target}, vectors {r.vector_isa}), {m.files[names[f]].bytes / 1e6:.2f} MB")
    lines += [f"  {f}: not written: {why}" for f, why in m.export.not_written.items()]
    return lines


def notes_lines(report: ParityReport) -> list[str]:
    """The files verification left out, and why."""
    return [f"  note: {note}" for note in report.notes]
