"""The bundle's HTML report, report/index.html: one self-contained page (inline CSS, plots as data: URIs, no
script, a Content-Security-Policy that forbids loading anything) rendered by Jinja2 with autoescaping, so
every value from the manifest is escaped. It is written last, once parity is known, and listed in the
manifest with its sha256 like every other file."""
from __future__ import annotations

import json
import math
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

import jinja2

from torchport.export.report_view import Cell, Table, fit_table, files_table, inference_tables, \
    interval_table, metric_sets, parity_table, plots, summary
from torchport.export.verify import training_record
from torchport.export.formats import model_spec, torchport_version
from torchport.runtime.bundle import Bundle, FileEntry, FileWriter, Manifest
from torchport.runtime.files import write_text

REPORT_HTML = "report/index.html"
TEMPLATES = Path(__file__).resolve().parent / "templates"


def show(cell: Any) -> str:
    """A cell's text: its value in its format, n/a for None; plain text as it is."""
    if not isinstance(cell, Cell):
        return str(cell)
    v = cell.value
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    if cell.spec == "verdict":
        return "passed" if v else "FAILED"
    if cell.spec == "s" or isinstance(v, str):
        return str(v)
    return format(v, cell.spec)


def machine_value(cell: Cell) -> str:
    """The exact value of a cell as JSON (the ``value`` of its <data> element)."""
    return json.dumps(cell.value, allow_nan=False)


def key_json(cell: Cell) -> str:
    return json.dumps(list(cell.key))


def column_kinds(table: Table) -> list[str]:
    """Per column, "text" (left-aligned) when any row holds words there, else "num" (right-aligned)."""
    if table.align:
        return list(table.align)
    return ["text" if i == 0 or any(not isinstance(row[i], Cell) or isinstance(row[i].value, (str, bool))
                                    for row in table.rows) else "num" for i in range(len(table.columns))]


def environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters.update(show=show, machine_value=machine_value, key_json=key_json, column_kinds=column_kinds)
    env.tests["cell"] = lambda value: isinstance(value, Cell)
    return env


def render_report(bundle: Bundle, extra: Sequence[Table] = (), extra_title: str = "benchmark",
                  extra_notes: Sequence[str] = ()) -> str:
    """The report page of ``bundle`` (its plots read through their sha256 check); ``extra`` tables (a
    benchmark's) go in a section of their own."""
    m = bundle.manifest
    record = training_record(m)
    spec = model_spec(bundle)
    return environment().get_template("report.html.j2").render(
        title=f"{', '.join(m.targets)} ~ {', '.join(m.features)}", manifest=m, record=record, spec=spec,
        summary=summary(m, record, spec),
        fit=fit_table(m, record, spec) if record else None,
        metrics=metric_sets(record) if record else None,
        inference=inference_tables(record.inference) if record and record.inference else [],
        inference_unavailable=(record.inference_unavailable if record else None) or
        (None if spec.kind == "linear" else
         f"the model is {'an MLP' if spec.kind == 'mlp' else spec.description}, which has no coefficients to test"),
        intervals=interval_table(m), plots=plots(bundle), parity=parity_table(m.parity) if m.parity else None,
        files=files_table(m, REPORT_HTML), export=m.export, extra=list(extra), extra_title=extra_title,
        extra_notes=list(extra_notes))


def add_html_report(bundle: Bundle) -> Manifest:
    """Write report/index.html into ``bundle``'s directory (a staged bundle, or one whose manifest is being
    rewritten) and return its manifest with the page listed."""
    path = bundle.path / REPORT_HTML
    path.parent.mkdir(exist_ok=True)
    start = time.perf_counter()
    write_text(path, render_report(bundle))
    versions = {"torchport": torchport_version(), "jinja2": jinja2.__version__}
    writer = FileWriter("torchport report page (Jinja2)", versions, time.perf_counter() - start, "any")
    return replace(bundle.manifest, files={**bundle.manifest.files, REPORT_HTML: FileEntry.of(path, writer)})
