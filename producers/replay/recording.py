"""Reading a recorded CSV: each row with its line number and its original text.

A row that goes to the dead-letter topic goes there as it is in the file, and its
headers say which line it was, so the reader tracks the physical lines the ``csv``
module consumes for each row (a quoted cell may span lines).
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from producers.replay.domains import ReplayError

_ID_DIGEST_CHARS = 10


@dataclass(frozen=True)
class CsvRow:
    """One data row of a recording."""

    number: int  # 1 for the first data row (the header is not a row)
    line: int  # the file's line where the row starts (the header is line 1)
    cells: list[str]
    raw: str  # the row's text in the file, without its line ending


@dataclass(frozen=True)
class Recording:
    """A CSV file with a header row, and what identifies its contents."""

    path: Path
    header: tuple[str, ...]
    digest: str  # of the file's bytes: ids derived from it are stable across machines
    rows: int  # data rows (blank lines are not rows)

    @classmethod
    def open(cls, path: Path) -> Recording:
        """Read the header and count the rows; a missing, empty or headless file fails."""
        if not path.is_file():
            raise ReplayError(f"{path}: no such file; give the path of a CSV recording")
        sha = hashlib.sha256()
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                sha.update(block)
        header: tuple[str, ...] | None = None
        rows = 0
        for i, row in enumerate(_read(path)):
            if i == 0:
                header = tuple(cell.strip() for cell in row.cells)
            else:
                rows += 1
        if not header or not any(header):
            raise ReplayError(f"{path}: the file is empty; a recording starts with a header row")
        return cls(path=path, header=header, digest=sha.hexdigest()[:_ID_DIGEST_CHARS], rows=rows)

    def rows_iter(self) -> Iterator[CsvRow]:
        """The data rows, in file order."""
        rows = _read(self.path)
        next(rows, None)  # the header
        for number, row in enumerate(rows, start=1):
            yield CsvRow(number=number, line=row.line, cells=row.cells, raw=row.raw)

    def row_id(self, number: int) -> str:
        """A stable id for data row ``number``: the same file gives the same ids anywhere,
        so a replay sent twice is recognised as resent (the flows keep an id once)."""
        return f"{self.path.stem}-{self.digest}-{number}"


def _read(path: Path) -> Iterator[CsvRow]:
    """Every non-blank CSV record (the header included), numbered from 0."""
    with path.open(encoding="utf-8-sig", newline="") as f:
        tap = _LineTap(f)
        reader = csv.reader(tap)
        number = 0
        for cells in reader:
            consumed, tap.lines = tap.lines, []
            if not cells:  # a blank line
                continue
            line = reader.line_num - len(consumed) + 1
            raw = "".join(consumed).rstrip("\r\n")
            yield CsvRow(number=number, line=line, cells=cells, raw=raw)
            number += 1


class _LineTap:
    """The lines of a file as ``csv.reader`` takes them, kept until the row is done."""

    def __init__(self, lines: Iterator[str]) -> None:
        self._lines = lines
        self.lines: list[str] = []

    def __iter__(self) -> _LineTap:
        return self

    def __next__(self) -> str:
        line = next(self._lines)
        self.lines.append(line)
        return line
