"""Reading a CSV file polars refuses: bad records become marked rows, polars parses the rest.

A line-level pass groups physical lines into records (a quoted field may hold line breaks),
checks each one (UTF-8, quoting, one field per header column) and hands the good ones to polars
in their original bytes, so they parse exactly as in a clean file. A bad record becomes a row
holding its fields as far as they can be read, with its reason in the `_malformed` column,
prefixed with the line where it starts (1-based, the header is line 1). A blank line is a row of
nulls, as polars reads it. Every record keeps its place, so row numbers match a clean read.
"""

from __future__ import annotations

import csv
import io
import re
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import polars as pl

from churn_mlops.errors import SourceError, first_line

MALFORMED = "_malformed"
MAX_RECORD_LINES = 1_000  # an open quote not closed within this many lines is a broken record
_ORDER = "_record_order_"


@dataclass(frozen=True)
class _Record:
    """One record: the line it starts on, its bytes (line breaks kept), and its problem if any."""

    line: int
    data: bytes
    problem: str | None = None
    fields: tuple[str | None, ...] = ()
    broken_quoting: bool = False


class _Checker:
    """Checks records against the header: UTF-8, quoting, field count."""

    def __init__(self, separator: str, width: int) -> None:
        field = f'(?:"(?:[^"]|"")*"|[^"{re.escape(separator)}]*)'
        self.separator = separator
        self._separator = separator.encode()
        self.width = width
        self._quoted = re.compile(f"{field}(?:{re.escape(separator)}{field})*", re.DOTALL)

    def check(self, line: int, data: bytes) -> _Record:
        """The record with its problem (None when polars can take it) and readable fields."""
        if data.isascii() and b'"' not in data and data.count(self._separator) == self.width - 1:
            return _Record(line, data)  # the common case, decided without decoding
        problems = []
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            problems.append(f"not valid UTF-8 (byte 0x{data[exc.start]:02x})")
            text = data.decode("utf-8", "replace")
        body = _strip_line_break(text)
        if body == "" and not problems:
            return _Record(line, data)
        fields = self.fields(body)
        broken_quoting = fields is None
        if fields is None:
            problems.append("broken quoting (a quote inside an unquoted field or after a closing one)")
            fields = body.split(self.separator)
        elif len(fields) != self.width:
            problems.append(f"{len(fields)} fields, the header has {self.width}")
        if not problems:
            return _Record(line, data)
        problem = f"line {line}: {'; '.join(problems)}"
        shown = tuple([*(f or None for f in fields[: self.width]), *[None] * (self.width - len(fields))])
        return _Record(line, data, problem, shown, broken_quoting)

    def fields(self, body: str) -> list[str] | None:
        """The fields of a record's text; None when its quoting is broken."""
        if '"' not in body:
            return body.split(self.separator)
        if self._quoted.fullmatch(body) is None:
            return None
        return next(csv.reader([body], delimiter=self.separator, strict=True))


def recovered_batches(
    path: Path, separator: str, batch_rows: int, *, skip: int = 0
) -> Iterator[pl.DataFrame]:
    """The file's records after the first `skip`, in frames of at most batch_rows rows, bad ones marked.

    At least one frame comes, so a file of only a header still gives its columns.
    """
    with path.open("rb") as file:
        header, names = _header(file, path, separator)
        checker = _Checker(separator, len(names))
        records = _records(file, checker, first_line=header.count(b"\n") + 1)
        for _ in range(skip):
            next(records, None)
        chunks = _chunks(records, batch_rows)
        yield _frame(path, header, separator, names, next(chunks, []))
        for chunk in chunks:
            yield _frame(path, header, separator, names, chunk)


def _header(file: BinaryIO, path: Path, separator: str) -> tuple[bytes, list[str]]:
    """The header's bytes and column names; a file without a readable text header is refused."""
    header = file.readline()
    while header.count(b'"') % 2 and (more := file.readline()):
        header += more
    if not header.strip():
        raise SourceError(f"{path}: cannot read as CSV (the file is empty or its first line is blank)")
    try:
        text = header.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = "\x00"
    names = None if "\x00" in text else _Checker(separator, 0).fields(_strip_line_break(text))
    if names is None:
        raise SourceError(f"{path}: cannot read as CSV (line 1 is not a header of text columns)")
    return header, names


def _records(file: BinaryIO, checker: _Checker, *, first_line: int) -> Iterator[_Record]:
    """Physical lines grouped into checked records; a quote that is never closed spoils only its line."""
    lines = enumerate(file, start=first_line)
    pending: deque[tuple[int, bytes]] = deque()
    while (nxt := pending.popleft() if pending else next(lines, None)) is not None:
        number, data = nxt
        if data.count(b'"') % 2 == 0:
            yield checker.check(number, data)
            continue
        taken = _until_quote_closes(pending, lines)
        record = data + b"".join(d for _, d in taken)
        joined = checker.check(number, record)
        if record.count(b'"') % 2 == 0 and not joined.broken_quoting:
            yield joined
            continue
        pending.extendleft(reversed(taken))
        yield _Record(
            number, data, f"line {number}: a quote is never closed", checker.check(number, data).fields
        )


def _until_quote_closes(
    pending: deque[tuple[int, bytes]], lines: Iterator[tuple[int, bytes]]
) -> list[tuple[int, bytes]]:
    """The lines after an odd-quoted one, up to the one that closes its quote (or as far as allowed)."""
    taken: list[tuple[int, bytes]] = []
    while len(taken) < MAX_RECORD_LINES:
        nxt = pending.popleft() if pending else next(lines, None)
        if nxt is None:
            break
        taken.append(nxt)
        if nxt[1].count(b'"') % 2:
            break
    return taken


def _chunks(records: Iterator[_Record], size: int) -> Iterator[list[_Record]]:
    chunk: list[_Record] = []
    for record in records:
        chunk.append(record)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _frame(path: Path, header: bytes, separator: str, names: list[str], chunk: list[_Record]) -> pl.DataFrame:
    """The chunk as text columns in record order, bad records marked in the `_malformed` column."""
    good = [(i, r) for i, r in enumerate(chunk) if r.problem is None]
    bad = [(i, r) for i, r in enumerate(chunk) if r.problem is not None]
    parsed = _parse(path, header, separator, [r.data for _, r in good])
    if parsed.height != len(good):
        raise SourceError(f"{path}: cannot read as CSV (line {chunk[0].line} onwards: records do not parse)")
    parsed = parsed.with_columns(
        pl.lit(None, pl.String).alias(MALFORMED), pl.Series(_ORDER, [i for i, _ in good], pl.Int64)
    )
    if not bad:
        return parsed.drop(_ORDER)
    columns = {name: [r.fields[k] for _, r in bad] for k, name in enumerate(parsed.columns[: len(names)])}
    marked = pl.DataFrame(
        {**columns, MALFORMED: [r.problem for _, r in bad], _ORDER: [i for i, _ in bad]},
        schema={**dict.fromkeys(columns, pl.String), MALFORMED: pl.String, _ORDER: pl.Int64},
    )
    return pl.concat([parsed, marked]).sort(_ORDER).drop(_ORDER)


def _parse(path: Path, header: bytes, separator: str, records: Iterable[bytes]) -> pl.DataFrame:
    body = b"".join(r if r.endswith(b"\n") else r + b"\n" for r in records)
    try:
        return pl.read_csv(io.BytesIO(header + body), infer_schema=False, separator=separator)
    except pl.exceptions.PolarsError as exc:
        raise SourceError(f"{path}: cannot read as CSV ({first_line(exc)})") from exc


def _strip_line_break(text: str) -> str:
    if text.endswith("\n"):
        text = text[:-1]
    return text[:-1] if text.endswith("\r") else text
