"""Reading and writing tables in chunks for file scoring: one set of rules, two backends behind one small
interface. The pyarrow backend (the `io` extra) reads and writes CSV/TSV and Parquet; the stdlib backend
(Python's csv module) reads and writes CSV/TSV, for installs without pyarrow. Both accept the same files,
refuse the same mistakes with the same messages, and write the same bytes.

The same rules serve `torchport train` (``read_table``: whole columns as float64) and `torchport predict`
(chunks as float32, or float64 for a float64 model): a UTF-8 byte order mark is dropped; the delimiter (comma, semicolon or tab) is read
from the header, the same way for both, unless it is given; one-column files work; a header that repeats a
name is refused naming it; a number cell is a plain decimal number with '.' as the decimal mark (a decimal
comma is refused with a hint).

A reader has ``columns`` and ``total_rows`` (None when unknown), yields chunks of at most ``chunk_rows``
rows from ``chunks()``, and turns a chunk's feature columns into one array with ``features``. A writer
appends each chunk, its columns unchanged (CSV cells as their text), plus prediction columns (float32, or
float64 from a float64 model). CSV output quotes a cell only when it holds the separator, a quote or a line
break; prediction numbers are written unquoted with the shortest digits that read back as the same number."""
from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from torchport.runtime.errors import DataError, InputError

SEPARATORS = {".csv": ",", ".txt": ",", ".tsv": "\t", ".tab": "\t"}
PARQUET = ".parquet"
SUPPORTED = ".csv or .txt (comma-separated), .tsv or .tab (tab-separated), or .parquet"
IO_EXTRA = "pip install 'torchport[io]'"
# A number cell: optional spaces around a plain decimal number (no '1_000', no non-ASCII digits).
NUMBER = r" *[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)? *"
_number = re.compile(NUMBER).fullmatch
# A cell that would be a number with ',' as the decimal mark (or as a thousands separator): refused, with a hint.
_decimal_comma = re.compile(r" *[+-]?[0-9]*,[0-9]+(?:[eE][+-]?[0-9]+)? *").fullmatch
DECIMAL_COMMA_HINT = (" (a decimal comma: torchport reads '.' as the decimal mark and ',' only as a delimiter; "
                      "save the file with '.' decimals, for example as CSV from a spreadsheet set to an English "
                      "locale)")
# The delimiters a CSV/TSV file may use, by the names --delimiter also takes.
DELIMITERS = {"comma": ",", "semicolon": ";", "tab": "\t"}
SNIFF_CHARS = 1 << 16  # the header and the lines after it within this many characters decide the delimiter
# Prediction text: positional for decimal exponents in [LOW, HIGH), else d.ddde+N (pyarrow's layout).
POSITIONAL_EXPONENTS = (-6, 10)
BLOCK_BYTES = 1 << 20  # pyarrow reads CSV in blocks of this size: it bounds the reader's memory
PARQUET_BUFFER_BYTES = 1 << 20  # Parquet column chunks are read through a buffer this large
WHOLE_TABLE_ROWS = 1 << 18  # read_table's chunks: a reader asked for this many rows reads in bigger blocks


@dataclass(frozen=True)
class Format:
    """A file's table format, from its suffix: the suffix's CSV separator (what a written file uses), or None
    for Parquet; ``delimiter`` is the one a reader was told to use (None: read from the header)."""
    path: Path
    separator: str | None
    delimiter: str | None = None

    @property
    def parquet(self) -> bool:
        return self.separator is None


def delimiter_of(text: str | None, parameter: str = "delimiter") -> str | None:
    """A delimiter given by name (comma, semicolon, tab) or as the character itself (',', ';', a tab or
    '\\t'); None stays None (read it from the header). InputError for anything else."""
    if text is None:
        return None
    value = DELIMITERS.get(text.lower(), "\t" if text == "\\t" else text)
    if value not in DELIMITERS.values():
        raise InputError(f"unknown delimiter {text!r}; use comma, semicolon or tab", parameter=parameter)
    return value


def table_format(path: Path, parameter: str, delimiter: str | None = None) -> Format:
    """The format of ``path`` by its suffix; an unsupported suffix is an InputError for ``parameter``."""
    suffix = path.suffix.lower()
    if suffix in SEPARATORS:
        return Format(path, SEPARATORS[suffix], delimiter_of(delimiter))
    if suffix == PARQUET:
        return Format(path, None)
    what = f"unsupported file type {suffix!r}" if suffix else "no file type suffix"
    raise InputError(f"{path}: {what}; use {SUPPORTED}", parameter=parameter)


def detect_delimiter(path: Path, default: str) -> str:
    """The delimiter of a CSV/TSV file, read from its header: the one of comma, semicolon and tab that splits
    the header into more than one field; when several do, the one that also splits the lines after it into
    as many fields (``default``, the suffix's, if it is among them); ``default`` when none does (a file of one
    column). Quotes are honoured, so a quoted name may hold any of them."""
    with _open_text(path) as f:
        try:
            sample = f.read(SNIFF_CHARS)
            whole = not f.read(1)
        except UnicodeDecodeError:
            raise _not_utf8(path) from None
    splits = {}
    for candidate in DELIMITERS.values():
        try:
            rows = [r for r in csv.reader(io.StringIO(sample), delimiter=candidate) if r]
        except csv.Error:
            continue
        if rows and len(rows[0]) > 1:
            splits[candidate] = rows if whole else rows[:-1]  # the last line of a cut sample may be partial
    if len(splits) <= 1:
        return next(iter(splits), default)
    even = [c for c, rows in splits.items() if all(len(r) == len(rows[0]) for r in rows[1:])]
    if len(even) == 1:
        return even[0]
    choices = even or list(splits)
    return default if default in choices else max(choices, key=lambda c: len(splits[c][0]))


def check_columns(source: Path, columns: list[str], features: list[str], predictions: list[str]) -> None:
    """The rules on a table's columns, checked before any row is scored."""
    repeated = sorted({c for c in columns if columns.count(c) > 1})
    if repeated:
        raise DataError(f"{source}: the header repeats the column name(s) {', '.join(map(repr, repeated))}; "
                        "give each column its own name")
    missing = [f for f in features if f not in columns]
    if missing:
        raise DataError(f"{source}: missing feature column(s) {', '.join(map(repr, missing))}; "
                        f"the model expects {features}, the file has {columns}")
    clash = [p for p in predictions if p in columns]
    if clash:
        raise DataError(f"{source} already has the column(s) {', '.join(map(repr, clash))}, which the "
                        "predictions would overwrite; rename or drop them")


def _first_bad(source: Path, values: np.ndarray, names: list[str], first_row: int, cell) -> None:
    """Raise naming the first cell (row by row) that is not finite in ``values``' dtype; ``cell(i, j)``
    gives it as shown and as text (None for a null)."""
    bad = ~np.isfinite(values)
    if not bad.any():
        return
    i, j = (int(k) for k in np.argwhere(bad)[0])
    shown, text = cell(i, j)
    note = ""
    if text is not None and _number(text) and np.isfinite(float(text)):
        note = f" (beyond {values.dtype}'s range)"
    elif text is not None and _decimal_comma(text):
        note = DECIMAL_COMMA_HINT
    raise DataError(f"{source}: row {first_row + i} (data row, 1-based), column {names[j]!r}: expected a "
                    f"finite number, got {shown}{note}")


def _ragged(source: Path, row: int | None, got: int, expected: int) -> DataError:
    where = f"row {row} (data row, 1-based)" if row is not None else "a row"
    return DataError(f"{source}: {where} has {got} field(s); the header has {expected}")


def _ragged_row(path: Path, separator: str, width: int) -> int | None:
    """The first data row (1-based) with a field count other than ``width``: found again with Python's csv
    module when pyarrow's threaded parser could not say which row it was."""
    with _open_text(path) as f:
        rows = _csv_rows(path, separator, f)
        next(rows, None)
        return next((i for i, row in enumerate(rows, 1) if len(row) != width), None)


def _not_utf8(source: Path) -> DataError:
    return DataError(f"{source} is not UTF-8 text; save it as UTF-8 CSV/TSV")


def float_text(values: np.ndarray) -> list[str]:
    """Prediction cells as text: the shortest digits of float32 (float64 for float64 values) in pyarrow's
    layout (1.5, 0.000001, 1e-7, 1e+10)."""
    low, high = POSITIONAL_EXPONENTS
    out = []
    for value in values if values.dtype == np.float64 else values.astype(np.float32, copy=False):
        text = str(value)  # numpy: the shortest digits that read back as this float32 (or float64)
        if text in ("nan", "inf", "-inf"):
            out.append(text)
            continue
        sign, text = ("-", text[1:]) if text[0] == "-" else ("", text)
        mantissa, _, exp = text.partition("e")
        whole, _, frac = mantissa.partition(".")
        digits = (whole + frac).lstrip("0")
        point = len(whole) + int(exp or 0) - (len(whole + frac) - len(digits))
        digits = digits.rstrip("0")
        if not digits:
            out.append(sign + "0")
            continue
        exponent = point - 1
        if low <= exponent < high:
            if point <= 0:
                body = "0." + "0" * -point + digits
            elif point >= len(digits):
                body = digits + "0" * (point - len(digits))
            else:
                body = digits[:point] + "." + digits[point:]
        else:
            body = digits[0] + ("." + digits[1:] if len(digits) > 1 else "") + f"e{exponent:+d}"
        out.append(sign + body)
    return out


def _quote(cell: str, separator: str) -> str:
    if separator in cell or '"' in cell or "\n" in cell or "\r" in cell:
        return '"' + cell.replace('"', '""') + '"'
    return cell


def csv_line(cells: list[str], separator: str) -> str:
    """One CSV line (without its line break), quoting only the cells that need it."""
    return separator.join(_quote(c, separator) for c in cells)


def _csv_rows(path: Path, separator: str, file) -> Iterator[list[str]]:
    """The non-blank rows of an open CSV file; undecodable text and parser errors as DataError."""
    try:
        for row in csv.reader(file, delimiter=separator):
            if row:
                yield row
    except UnicodeDecodeError:
        raise _not_utf8(path) from None
    except csv.Error as e:
        raise DataError(f"{path}: cannot read it as CSV: {e}") from None


def _open_text(path: Path):
    return open(path, newline="", encoding="utf-8-sig")


def _header(path: Path, rows: Iterator[list[str]]) -> list[str]:
    header = next(rows, None)
    if header is None:
        raise DataError(f"{path} is empty; expected a header row naming the columns")
    return header


def read_header(path: Path, separator: str) -> list[str]:
    """The column names of a CSV file (its first non-blank row), read the same way by both backends."""
    with _open_text(path) as f:
        return _header(path, _csv_rows(path, separator, f))


def reader_separator(fmt: Format) -> str:
    """The delimiter a reader of ``fmt`` uses: the one given, else the one its header shows."""
    return fmt.delimiter or detect_delimiter(fmt.path, fmt.separator)


class _Closing:
    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ---- stdlib backend ---------------------------------------------------------------------------------------

class CsvReader(_Closing):
    """CSV/TSV through Python's csv module; a chunk is a list of rows of cell texts."""

    def __init__(self, fmt: Format, chunk_rows: int):
        self.path, self.chunk_rows = fmt.path, chunk_rows
        self.separator = reader_separator(fmt)
        self._file = _open_text(fmt.path)
        self._rows = _csv_rows(fmt.path, self.separator, self._file)
        try:
            self.columns = _header(fmt.path, self._rows)
        except BaseException:
            self._file.close()
            raise
        self.total_rows = None

    def chunks(self) -> Iterator[list[list[str]]]:
        width, row_number, chunk = len(self.columns), 0, []
        for row in self._rows:
            row_number += 1
            if len(row) != width:
                raise _ragged(self.path, row_number, len(row), width)
            chunk.append(row)
            if len(chunk) == self.chunk_rows:
                yield chunk
                chunk = []
        if chunk:
            yield chunk

    def features(self, chunk: list[list[str]], names: list[str], first_row: int,
                 dtype: type = np.float32) -> np.ndarray:
        out = np.empty((len(chunk), len(names)), dtype=dtype)
        parsed = np.empty(len(chunk), dtype=np.float64)
        for j, name in enumerate(names):
            c = self.columns.index(name)
            for i, row in enumerate(chunk):
                parsed[i] = float(row[c]) if _number(row[c]) else np.nan
            with np.errstate(over="ignore"):
                out[:, j] = parsed

        def cell(i, j):
            text = chunk[i][self.columns.index(names[j])]
            return repr(text), text
        _first_bad(self.path, out, names, first_row, cell)
        return out

    def cells(self, chunk: list[list[str]], name: str) -> list[str]:
        """One column's cells as read (text), for categorical and imputed columns."""
        c = self.columns.index(name)
        return [row[c] for row in chunk]

    def close(self) -> None:
        self._file.close()


class CsvWriter(_Closing):
    """CSV/TSV text written with Python; cells of the input are written as they were read."""

    def __init__(self, path: Path, fmt: Format, reader, predictions: list[str], dtype: type = np.float32):
        self.separator = fmt.separator
        self._file = open(path, "w", newline="", encoding="utf-8")
        self._file.write(csv_line(list(reader.columns) + predictions, self.separator) + "\n")

    def write(self, chunk: list[list[str]], predictions: np.ndarray) -> None:
        texts = [float_text(predictions[:, k]) for k in range(predictions.shape[1])]
        sep = self.separator
        self._file.writelines(f"{csv_line(row, sep)}{sep}{sep.join(p)}\n" for row, *p in zip(chunk, *texts))

    def close(self) -> None:
        self._file.close()


# ---- pyarrow backend --------------------------------------------------------------------------------------

class ArrowCsvReader(_Closing):
    """CSV/TSV through pyarrow, every column as text, in blocks of BLOCK_BYTES; a chunk is a RecordBatch."""

    def __init__(self, fmt: Format, chunk_rows: int):
        import pyarrow as pa
        import pyarrow.csv as pacsv

        self.path, self.chunk_rows, self._invalid = fmt.path, chunk_rows, []
        self.separator = reader_separator(fmt)
        self.columns = read_header(fmt.path, self.separator)
        check_columns(fmt.path, self.columns, [], [])  # column_types below needs distinct names
        self.schema = pa.schema([(c, pa.string()) for c in self.columns])
        self.total_rows = None
        self._source = pa.OSFile(str(fmt.path))  # a plain file, not memory-mapped: memory stays bounded
        whole = chunk_rows >= WHOLE_TABLE_ROWS  # read_table: bigger blocks, parsed on every core
        try:
            self._batches = self._arrow(lambda: pacsv.open_csv(
                self._source,
                read_options=pacsv.ReadOptions(block_size=BLOCK_BYTES * (16 if whole else 1), use_threads=whole),
                parse_options=pacsv.ParseOptions(delimiter=self.separator, newlines_in_values=True,
                                                 invalid_row_handler=self._on_invalid_row),
                convert_options=pacsv.ConvertOptions(column_types=dict(zip(self.schema.names, self.schema.types)),
                                                     strings_can_be_null=False, quoted_strings_can_be_null=False)))
            if self._batches.schema.names != self.columns:
                raise DataError(f"{fmt.path}: pyarrow reads the header as {self._batches.schema.names}, "
                                f"Python's csv module as {self.columns}")
        except BaseException:
            self._source.close()
            raise

    def _on_invalid_row(self, row) -> str:
        self._invalid.append(row)
        return "error"

    def _arrow(self, step):
        """``step()``, with pyarrow's parse errors said as DataError."""
        import pyarrow as pa

        try:
            return step()
        except pa.ArrowInvalid as e:
            if self._invalid:
                row = self._invalid[0]
                number = row.number - 1 if row.number else _ragged_row(self.path, self.separator, len(self.columns))
                raise _ragged(self.path, number, row.actual_columns, row.expected_columns) from None
            if "UTF8" in str(e):
                raise _not_utf8(self.path) from None
            raise DataError(f"{self.path}: cannot read it as CSV: {e}") from None

    def chunks(self):
        while True:
            batch = self._arrow(lambda: next(self._batches, None))
            if batch is None:
                return
            for start in range(0, batch.num_rows, self.chunk_rows):
                yield batch.slice(start, self.chunk_rows)

    def features(self, batch, names: list[str], first_row: int, dtype: type = np.float32) -> np.ndarray:
        return _arrow_features(self.path, batch, names, first_row, dtype)

    def cells(self, batch, name: str) -> list:
        """One column's cells as read (text; Parquet: its values, None for null), for categorical and imputed
        columns."""
        return batch.column(name).to_pylist()

    def close(self) -> None:
        self._source.close()


class ParquetReader(_Closing):
    """Parquet through pyarrow, row group by row group; a chunk is a RecordBatch with the file's types."""

    def __init__(self, fmt: Format, chunk_rows: int):
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.path, self.chunk_rows = fmt.path, chunk_rows
        if fmt.path.stat().st_size == 0:
            raise DataError(f"{fmt.path} is empty; expected a Parquet file")
        try:  # buffered column reads, nothing pre-buffered: memory stays bounded by a chunk, not the file
            self._file = pq.ParquetFile(fmt.path, buffer_size=PARQUET_BUFFER_BYTES, pre_buffer=False)
        except (pa.ArrowInvalid, OSError) as e:
            raise DataError(f"cannot read {fmt.path} as Parquet: {e}") from None
        self.schema = self._file.schema_arrow.remove_metadata()
        self.columns = self.schema.names
        if not self.columns:
            raise DataError(f"{fmt.path} has no columns")
        self.total_rows = self._file.metadata.num_rows

    def chunks(self):
        import pyarrow as pa

        try:
            yield from self._file.iter_batches(batch_size=self.chunk_rows)
        except (pa.ArrowInvalid, OSError) as e:
            raise DataError(f"cannot read {self.path} as Parquet: {e}") from None

    def features(self, batch, names: list[str], first_row: int, dtype: type = np.float32) -> np.ndarray:
        return _arrow_features(self.path, batch, names, first_row, dtype)

    def cells(self, batch, name: str) -> list:
        """One column's cells as read (text; Parquet: its values, None for null), for categorical and imputed
        columns."""
        return batch.column(name).to_pylist()

    def close(self) -> None:
        self._file.close()


def _arrow_features(path: Path, batch, names: list[str], first_row: int, dtype: type = np.float32) -> np.ndarray:
    """A RecordBatch's feature columns as (rows, features) of ``dtype``, by the same rules as CsvReader."""
    import pyarrow as pa
    import pyarrow.compute as pc

    out = np.empty((batch.num_rows, len(names)), dtype=dtype)
    for j, name in enumerate(names):
        column = batch.column(name)
        kind = column.type
        if pa.types.is_string(kind) or pa.types.is_large_string(kind):
            try:  # Arrow's parser takes exactly the NUMBER cells, and nan/inf (refused below): one pass
                values = pc.cast(column, pa.float64())
            except pa.ArrowInvalid:  # padded or bad cells: each checked against NUMBER
                ok = pc.fill_null(pc.match_substring_regex(column, f"^{NUMBER}$"), False)
                text = pc.if_else(ok, pc.utf8_trim(column, " "), pa.scalar("nan", kind))
                values = pc.cast(text, pa.float64())
        elif pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind):
            values = pc.cast(column, pa.float64(), safe=False)
        else:
            raise DataError(f"{path}: column {name!r} holds {kind} values; expected numbers")
        with np.errstate(over="ignore"):
            out[:, j] = pc.fill_null(values, np.nan).to_numpy(zero_copy_only=False)

    def cell(i, j):
        value = batch.column(names[j])[i].as_py()
        if value is None:
            return "an empty (null) cell", None
        return repr(str(value)), str(value)
    _first_bad(path, out, names, first_row, cell)
    return out


def _arrow_text(column):
    """A column as large_string cells (nulls as empty cells), for CSV output."""
    import pyarrow as pa
    import pyarrow.compute as pc

    text = pc.cast(column, pa.large_string())
    return pc.fill_null(text, "") if text.null_count else text


class ArrowCsvWriter(_Closing):
    """CSV/TSV text built with pyarrow compute, chunk by chunk; the same bytes as CsvWriter."""

    def __init__(self, path: Path, fmt: Format, reader, predictions: list[str], dtype: type = np.float32):
        import pyarrow as pa
        import pyarrow.compute as pc

        self.separator = fmt.separator
        self._file = open(path, "wb")
        for name, kind in zip(reader.schema.names, reader.schema.types):
            try:
                pc.cast(pa.array([], kind), pa.large_string())
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                raise DataError(f"{reader.path}: column {name!r} holds {kind} values, which CSV cannot hold; "
                                "write Parquet instead") from None
        self._file.write((csv_line(list(reader.columns) + predictions, self.separator) + "\n").encode("utf-8"))
        self._special = f"[{re.escape(self.separator)}\"\r\n]"
        self._sep = pa.scalar(self.separator, pa.large_string())
        self._newline, self._empty = pa.scalar("\n", pa.large_string()), pa.scalar("", pa.large_string())
        self._pa, self._pc = pa, pc

    def _quoted(self, text):
        pa, pc = self._pa, self._pc
        needs = pc.match_substring_regex(text, self._special)
        if not pc.any(needs).as_py():
            return text
        wrapped = pc.binary_join_element_wise(pa.scalar('"', pa.large_string()),
                                              pc.replace_substring(text, '"', '""'), self._empty)
        wrapped = pc.binary_join_element_wise(wrapped, pa.scalar('"', pa.large_string()), self._empty)
        return pc.if_else(needs, wrapped, text)

    def write(self, batch, predictions: np.ndarray) -> None:
        pa, pc = self._pa, self._pc
        cells = [self._quoted(_arrow_text(column)) for column in batch.columns]
        cells += [pc.cast(pa.array(predictions[:, k]), pa.large_string()) for k in range(predictions.shape[1])]
        cells[-1] = pc.binary_join_element_wise(cells[-1], self._empty, self._newline)
        lines = pc.binary_join_element_wise(*cells, self._sep)
        offsets = np.frombuffer(lines.buffers()[1], dtype=np.int64)[lines.offset:lines.offset + len(lines) + 1]
        if len(lines):
            self._file.write(memoryview(lines.buffers()[2])[offsets[0]:offsets[-1]])

    def close(self) -> None:
        self._file.close()


class ParquetWriter(_Closing):
    """Parquet through pyarrow: the input's columns with their types, then the predictions (float32, or
    float64 from a float64 model: ``dtype``)."""

    def __init__(self, path: Path, fmt: Format, reader, predictions: list[str], dtype: type = np.float32):
        import pyarrow as pa
        import pyarrow.parquet as pq

        self._pa = pa
        kind = pa.float64() if np.dtype(dtype) == np.float64 else pa.float32()
        self.schema = pa.schema(list(reader.schema) + [pa.field(p, kind) for p in predictions])
        self._writer = pq.ParquetWriter(path, self.schema)

    def write(self, batch, predictions: np.ndarray) -> None:
        arrays = batch.columns + [self._pa.array(predictions[:, k]) for k in range(predictions.shape[1])]
        self._writer.write_batch(self._pa.RecordBatch.from_arrays(arrays, schema=self.schema))

    def close(self) -> None:
        self._writer.close()


# ---- choosing one -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Backend:
    """The reader and writer classes of one backend; Parquet's are None where it has none."""
    name: str
    csv_reader: type
    csv_writer: type
    parquet_reader: type | None = None
    parquet_writer: type | None = None

    def require(self, fmt: Format, parameter: str) -> None:
        """Refuse a format this backend cannot handle (Parquet without pyarrow)."""
        if fmt.parquet and self.parquet_reader is None:
            raise InputError(f"{fmt.path}: Parquet needs pyarrow: {IO_EXTRA}", parameter=parameter)

    def reader(self, fmt: Format, chunk_rows: int):
        return (self.parquet_reader if fmt.parquet else self.csv_reader)(fmt, chunk_rows)

    def writer(self, path: Path, fmt: Format, reader, predictions: list[str], dtype: type = np.float32):
        """A writer of ``fmt``'s format into ``path`` for rows read by ``reader``, predictions of ``dtype``."""
        return (self.parquet_writer if fmt.parquet else self.csv_writer)(path, fmt, reader, predictions, dtype)


ARROW = Backend("pyarrow", ArrowCsvReader, ArrowCsvWriter, ParquetReader, ParquetWriter)
STDLIB = Backend("stdlib", CsvReader, CsvWriter)


def backend(name: str | None = None) -> Backend:
    """The backend called ``name`` ("pyarrow" or "stdlib"); by default pyarrow when it is installed."""
    if name is None:
        try:
            import pyarrow.csv  # noqa: F401
            import pyarrow.parquet  # noqa: F401
        except ImportError:
            return STDLIB
        return ARROW
    for b in (ARROW, STDLIB):
        if b.name == name:
            return b
    raise InputError(f"unknown table backend {name!r}; expected 'pyarrow' or 'stdlib'", parameter="backend")


# ---- whole columns, for training ----------------------------------------------------------------------------

class TableChunks(_Closing):
    """A table file's chosen columns as float64 chunks (iterate once), with its ``header`` and the chosen
    ``names``; closing it closes the file."""

    def __init__(self, reader, header: list[str], names: list[str]):
        self._reader, self.header, self.names = reader, header, names

    def __iter__(self) -> Iterator[np.ndarray]:
        done = 0
        for chunk in self._reader.chunks():
            values = self._reader.features(chunk, self.names, done + 1, np.float64)
            done += len(values)
            yield values

    def cells(self) -> dict[str, list]:
        """The chosen columns' cells as read, whole (instead of iterating float64 chunks)."""
        out: dict[str, list] = {name: [] for name in self.names}
        for chunk in self._reader.chunks():
            for name in self.names:
                out[name] += self._reader.cells(chunk, name)
        return out

    def close(self) -> None:
        self._reader.close()


def table_chunks(path: str | Path, columns: Sequence[str] | Callable[[list[str]], Sequence[str]], *,
                 chunk_rows: int = WHOLE_TABLE_ROWS, delimiter: str | None = None, parameter: str = "path",
                 backend_name: str | None = None) -> TableChunks:
    """The file's chosen columns as float64 chunks of up to ``chunk_rows`` rows, read by the rules `torchport
    predict` reads with (a bad cell is named by its row in the file): memory stays bounded by a chunk.
    ``columns`` names them, or picks them from the header (a function of the column names that may raise its
    own error). Use it in a ``with`` block: the file stays open until it is closed."""
    path = Path(path)
    fmt = table_format(path, parameter, delimiter)
    chosen = backend(backend_name)
    chosen.require(fmt, parameter)
    if not path.is_file():
        raise InputError(f"{path} " + ("is not a file" if path.exists() else "does not exist"), parameter=parameter)
    reader = chosen.reader(fmt, chunk_rows)
    try:
        header = list(reader.columns)
        check_columns(path, header, [], [])
        names = list(columns(header) if callable(columns) else columns)
        check_columns(path, header, names, [])
    except BaseException:
        reader.close()
        raise
    return TableChunks(reader, header, names)


def read_cells(path: str | Path, columns: Sequence[str], *, delimiter: str | None = None,
               parameter: str = "path", backend_name: str | None = None) -> dict[str, list]:
    """The chosen columns' cells as read (CSV: text; Parquet: values, None for null), by the same rules as
    ``read_table``: for tables with categorical columns and missing cells, which the caller interprets."""
    with table_chunks(path, columns, delimiter=delimiter, parameter=parameter, backend_name=backend_name) as chunks:
        return chunks.cells()


def read_table(path: str | Path, columns: Sequence[str] | Callable[[list[str]], Sequence[str]], *,
               delimiter: str | None = None, parameter: str = "path", on_rows: Callable[[int], None] | None = None,
               backend_name: str | None = None) -> tuple[list[str], dict[str, np.ndarray]]:
    """The file's column names and the chosen columns as float64 arrays, read by the rules `torchport predict`
    reads with. ``columns`` names them, or picks them from the header (a function of the column names that
    may raise its own error). ``on_rows(rows_read)`` is called after each chunk."""
    with table_chunks(path, columns, delimiter=delimiter, parameter=parameter, backend_name=backend_name) as chunks:
        parts, done = [], 0
        for values in chunks:
            parts.append(values)
            done += len(values)
            if on_rows is not None:
                on_rows(done)
    values = np.concatenate(parts) if parts else np.empty((0, len(chunks.names)))
    return chunks.header, {name: np.ascontiguousarray(values[:, j]) for j, name in enumerate(chunks.names)}
