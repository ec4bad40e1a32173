"""Present a benchmark report: a table for the terminal, the same in Markdown with a summary, a log-log
plot of rows/s against batch size, and the three files (JSON, Markdown, PNG) written atomically."""
from __future__ import annotations

from pathlib import Path

from torchport.benchmarks.records import BACKEND_ORDER, BenchReport, ModelEntry, ResultRow
from torchport.runtime.files import atomic_write, write_json, write_text

COLUMNS = ("batch", "backend", "device", "median", "p99", "rows/s", "x fastest", "x ORT", "FLOP/s", "x peak",
           "calls")
TEXT_COLUMNS = (1, 2)  # backend and device: aligned to the left, the figures to the right
RATIO_NOTE = ("x fastest / x ORT: median time per call over that of the fastest backend that computes the "
              "model / of plain ORT session.run on the same device, at the same batch size (lower is better; the "
              "copy floor does not compute the model); FLOP/s: the model's multiply-adds (2 FLOP each) per second at "
              "the median; x peak: that over the machine's float32 matmul rate measured in the same run")
SUMMARY_NOTE = "time per call over plain ORT session.run's; below 1 is faster"
FILES = {"json": "bench.json", "markdown": "bench.md", "plot": "bench.png"}


def fmt_seconds(s: float) -> str:
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if s >= scale:
            return f"{s / scale:.3g} {unit}"
    return f"{s * 1e9:.3g} ns"


def fmt_rate(r: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if r >= scale:
            return f"{r / scale:.3g} {unit}"
    return f"{r:.3g}"


def _ratio(r: float | None) -> str:
    return "-" if r is None else f"{r:.2f}"


def cells(r: ResultRow) -> list[str]:
    return [str(r.batch_size), r.label, r.device, fmt_seconds(r.median_s), fmt_seconds(r.p99_s),
            fmt_rate(r.rows_per_s), _ratio(r.x_fastest), _ratio(r.x_ort_plain),
            "-" if r.flops_per_s is None else fmt_rate(r.flops_per_s), _ratio(r.x_matmul_peak), str(r.calls)]


def header(report: BenchReport) -> list[str]:
    env = report.environment
    cpu, t, v = env.cpu, env.threads, env.versions
    gpus = ", ".join(f"{g.name} (driver {g.driver or '?'})" for g in env.gpus) or "none"
    return [f"CPU: {cpu.model} (family {cpu.cpu_family} model {cpu.cpuid_model}), {cpu.usable_cpus} usable CPUs, "
            f"{cpu.physical_cores} physical cores; GPU: {gpus}",
            f"torch {v.get('torch')}, onnxruntime {v.get('onnxruntime')}, numpy {v.get('numpy')}; threads: torch "
            f"{t.torch_num_threads}, ORT intra-op {t.ort_plain_intra_op_num_threads}, numpy BLAS "
            f"{t.numpy_blas_threads}, Predictor: {t.predictor}"] + peak_line(report)


def peak_line(report: BenchReport) -> list[str]:
    """The run's float32 matmul rate, which the x peak column divides by (none in older reports)."""
    p = report.matmul_peak
    if p is None:
        return []
    return [f"machine's float32 matmul peak in this run: {fmt_rate(p.flops_per_s)}FLOP/s (best of {p.calls} numpy "
            f"{p.size}x{p.size} products before and after the rows, {p.threads} BLAS threads; median "
            f"{fmt_rate(p.median_flops_per_s)}FLOP/s)"]


def disagreements(report: BenchReport) -> list[str]:
    """One line per result whose backend answered differently from torch eager beyond the tolerance."""
    def by(r: ResultRow) -> str:
        return "a non-finite value" if r.max_abs_diff_vs_torch is None else f"{r.max_abs_diff_vs_torch:.3g}"
    return [f"WRONG ANSWERS: {r.label} on {r.device} for {r.model} at batch {r.batch_size} differs from torch eager "
            f"by up to {by(r)}; its figures are void" for r in report.disagreements()]


def reduced_lines(report: BenchReport) -> list[str]:
    """One line per model run in reduced precision (bf16): its largest error against the module in float64,
    beside plain ORT's (float32), over the batch sizes measured."""
    lines = []
    for m in report.models:
        rows = report.rows(m.name)
        for backend in dict.fromkeys(r.backend for r in rows if r.agrees_with_torch is None and r.max_abs_diff_vs_torch
                                     is not None):
            errors = [r.max_abs_error_vs_float64 for r in rows if r.backend == backend]
            plain = [r.max_abs_error_vs_float64 for r in rows if r.backend == "ort_plain" and r.device == "cpu"]
            if None in errors or not errors:
                continue
            label = next(r.label for r in rows if r.backend == backend)
            lines.append(f"reduced precision: {label} on {m.name}: largest error against the model in float64 "
                         f"{max(errors):.3g}" + (f" (plain ORT, float32: {max(plain):.3g})" if plain and None not in
                                                 plain else "") + "; not counted in x fastest")
    return lines


def skipped_lines(report: BenchReport) -> list[str]:
    return [f"not run: {s.backend} on {s.device} for {m.name}: {s.reason}"
            for m in report.models for s in m.skipped] + reduced_lines(report) + disagreements(report)


def _aligned(row: list[str], widths: list[int]) -> str:
    """Text columns (backend, device) to the left, figures to the right."""
    return "  ".join(c.ljust(w) if i in TEXT_COLUMNS else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))


def format_table(report: BenchReport) -> str:
    """The results as aligned text, one block per model; ratios are of the median per call."""
    lines = header(report) + [""]
    for m in report.models:
        rows = [cells(r) for r in report.rows(m.name)]
        widths = [max(len(c), *(len(row[i]) for row in rows)) for i, c in enumerate(COLUMNS)]
        lines += [f"model {m.describe()}", _aligned(list(COLUMNS), widths)]
        previous = None
        for row in rows:
            if previous is not None and row[0] != previous:
                lines.append("")
            previous = row[0]
            lines.append(_aligned(row, widths))
        lines.append("")
    lines += skipped_lines(report)
    lines.append(RATIO_NOTE)
    return "\n".join(lines)


def summary_cells(report: BenchReport, m: ModelEntry) -> list[list[str]]:
    """One row per backend of model ``m``: its label, device, and rows/s with the ratio to plain ORT in
    brackets per batch size (the columns are ``report.settings.batch_sizes``)."""
    cell = {(r.backend, r.device, r.batch_size): r for r in report.rows(m.name)}
    return [[b.label, b.device] + [f"{fmt_rate(r.rows_per_s)} ({_ratio(r.x_ort_plain)}x)"
                                   for r in (cell[b.backend, b.device, n] for n in report.settings.batch_sizes)]
            for b in m.backends]


def summary_markdown(report: BenchReport) -> str:
    """Rows/s per backend (rows) and batch size (columns), with the ratio to plain ORT, per model."""
    sizes = report.settings.batch_sizes
    out = []
    for m in report.models:
        out += [f"**{m.describe()}**: rows/s (in brackets: {SUMMARY_NOTE})", "",
                "| backend | device | " + " | ".join(f"{n:,}" for n in sizes) + " |",
                "| --- | --- |" + " ---: |" * len(sizes)]
        out += ["| " + " | ".join(row) + " |" for row in summary_cells(report, m)]
        out.append("")
    return "\n".join(out)


def format_markdown(report: BenchReport, plot_name: str = FILES["plot"]) -> str:
    """The whole report in Markdown: machine, summary, plot, the detailed table and what was not run."""
    out = ["# torchport bench", "", f"Run {report.created}: `{report.command}`", ""]
    out += [f"- {line}" for line in header(report) + skipped_lines(report)] + [""]
    out += [summary_markdown(report), f"![rows/s against batch size]({plot_name})", "", "## All figures", ""]
    for m in report.models:
        out += [f"**{m.describe()}**", "", "| " + " | ".join(COLUMNS) + " |",
                "| " + " | ".join("---" if i in TEXT_COLUMNS else "---:" for i in range(len(COLUMNS))) + " |"]
        out += ["| " + " | ".join(cells(r)) + " |" for r in report.rows(m.name)]
        out.append("")
    out.append(f"Times are per call, host numpy in to host numpy out. {RATIO_NOTE}. The JSON file has every "
               "figure and the environment.")
    return "\n".join(out) + "\n"


def _size_label(n: int) -> str:
    for unit, scale in (("M", 1 << 20), ("k", 1 << 10)):
        if n >= scale and n % scale == 0:
            return f"{n // scale}{unit}"
    return str(n)


def plot(report: BenchReport, path: Path) -> None:
    """Rows/s against batch size, log-log: one panel per model, one line per backend and device."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, axes = plt.subplots(1, len(report.models), figsize=(6.4 * len(report.models), 4.8), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    sizes = report.settings.batch_sizes
    for ax, m in zip(axes[0], report.models):
        for b in m.backends:
            rows = sorted((r for r in report.rows(m.name) if r.backend == b.backend and r.device == b.device),
                          key=lambda r: r.batch_size)
            ax.plot([r.batch_size for r in rows], [r.rows_per_s for r in rows], marker="o", markersize=4,
                    color=colors[BACKEND_ORDER.index(b.backend) % len(colors)],
                    linestyle="-" if b.device == "cpu" else "--", label=f"{b.label} ({b.device})")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xticks(sizes, [_size_label(n) for n in sizes])
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.set_xlabel("batch size (rows per call)")
        ax.set_ylabel("rows/s (median call)")
        ax.set_title(m.describe().split(" (")[0], fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    env = report.environment
    fig.suptitle(f"torchport bench: {env.cpu.model}, {env.threads.threads} threads"
                 + (f"; {env.gpus[0].name}" if env.gpus else ""), fontsize=11)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)


def write_outputs(report: BenchReport, out: Path) -> dict[str, Path]:
    """bench.json, bench.md and bench.png in ``out`` (created if missing), each written then renamed."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {k: out / v for k, v in FILES.items()}
    write_json(paths["json"], report.to_json())
    write_text(paths["markdown"], format_markdown(report))
    plot(report, paths["plot"])
    return paths
