"""From a CSV row to a contract's fields: ``--map``, ``--set``, ``--id-column`` and the
time column, checked against the file's header and the domain's fields before anything
is sent, so a typo fails at once with what to write instead.

A cell becomes a JSON number where the contract has a number, and stays text where a
number does not parse: the contract then rejects the row by name ("temperature_c:
expected `float | null`, got `str`") and the row goes to the dead-letter topic, rather
than the replay guessing. An empty cell is an absent field.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from producers.replay.domains import EVENT_TIME, Domain, ReplayError

TIME_FORMATS = "ISO 8601 such as 2015-02-04 17:51:00 or 2015-02-04T17:51:00Z, or epoch seconds"
# A number below this (1973-03-03) is a measurement, not a recorded time: a column of
# temperatures given as --time-column fails instead of replaying January 1970.
MIN_EPOCH_S = 100_000_000


class RowError(ValueError):
    """A row that cannot become a message; ``str()`` is the dead-letter reason."""


@dataclass(frozen=True)
class RowMapping:
    """Which cell of a row fills which field, and what every row gets."""

    domain: Domain
    header: tuple[str, ...]
    time_index: int
    columns: tuple[tuple[int, str], ...]  # (cell index, field), in the domain's field order
    fixed: Mapping[str, object]  # --set, converted like a cell
    time_zone: tzinfo  # for recorded times without an offset

    @classmethod
    def build(
        cls,
        domain: Domain,
        header: Sequence[str],
        *,
        time_column: str,
        maps: Sequence[str] = (),
        sets: Sequence[str] = (),
        id_column: str | None = None,
        time_zone: str = "UTC",
    ) -> RowMapping:
        header = tuple(header)
        columns_text = ", ".join(header)
        index = {name: i for i, name in enumerate(header)}
        fields = domain.fields
        fields_text = ", ".join(f for f in fields if f != EVENT_TIME)

        if time_column not in index:
            raise ReplayError(
                f"--time-column {time_column!r}: the file has no such column; "
                f"its columns are: {columns_text}"
            )
        mapped: dict[str, str] = {}  # field -> column
        for spec in maps:
            column, field = _split(spec, "--map", "column=field", "Temperature=temperature_c")
            where = f"--map {spec}"
            if column not in index:
                raise ReplayError(
                    f"{where}: the file has no column {column!r}; its columns are: {columns_text}"
                )
            _check_field(domain, field, where, fields_text)
            if field in mapped:
                raise ReplayError(
                    f"{where}: {field} is already mapped from column {mapped[field]!r}; "
                    "map one column to each field"
                )
            mapped[field] = column
        if id_column is not None:
            where = f"--id-column {id_column}"
            if id_column not in index:
                raise ReplayError(
                    f"{where}: the file has no such column; its columns are: {columns_text}"
                )
            if domain.id_field in mapped:
                raise ReplayError(
                    f"{where}: {domain.id_field} is already mapped from column "
                    f"{mapped[domain.id_field]!r}; give one of the two"
                )
            mapped[domain.id_field] = id_column
        fixed: dict[str, object] = {}
        for spec in sets:
            field, value = _split(spec, "--set", "field=value", "device_id=office-1")
            where = f"--set {spec}"
            _check_field(domain, field, where, fields_text)
            if field == domain.id_field:
                raise ReplayError(
                    f"{where}: every row needs its own {field}; take it from a column with "
                    "--id-column, or leave it out and the replay derives one per row"
                )
            if field in mapped:
                raise ReplayError(
                    f"{where}: {field} is already mapped from column {mapped[field]!r}; "
                    "drop the --map or the --set"
                )
            fixed[field] = convert(domain, field, value)
        # A column named like a field fills it, unless that field is given otherwise.
        for name in header:
            taken = name in mapped.values() or name == time_column
            given = name in mapped or name in fixed
            if name in fields and name != EVENT_TIME and not taken and not given:
                mapped[name] = name
        columns = tuple((index[mapped[f]], f) for f in fields if f in mapped)
        return cls(
            domain=domain,
            header=header,
            time_index=index[time_column],
            columns=columns,
            fixed=fixed,
            time_zone=_zone(time_zone),
        )

    @property
    def time_column(self) -> str:
        return self.header[self.time_index]

    def fields_of(self, cells: Sequence[str]) -> dict[str, object]:
        """The fields a row fills (not its id when derived, nor its event time)."""
        self._check_width(cells)
        values: dict[str, object] = dict(self.fixed)
        for i, field in self.columns:
            value = convert(self.domain, field, cells[i])
            if value is not None:
                values[field] = value
        return values

    def recorded_time(self, cells: Sequence[str]) -> datetime:
        """The row's time as recorded, as an aware datetime."""
        self._check_width(cells)
        return parse_time(cells[self.time_index], self.time_zone, self.time_column)

    def _check_width(self, cells: Sequence[str]) -> None:
        if len(cells) != len(self.header):
            raise RowError(f"row: {len(cells)} cells where the header has {len(self.header)}")


def convert(domain: Domain, field: str, text: str) -> object:
    """A cell as the contract's JSON wants it: None (absent) when empty; a number in a
    number field when it parses as a finite one; otherwise the text."""
    if field in domain.number_fields:
        stripped = text.strip()
        if not stripped:
            return None
        try:
            number = float(stripped)
        except ValueError:
            return text
        # NaN would be encoded as JSON null, silently dropping a broken reading.
        return number if math.isfinite(number) else text
    return text if text != "" else None


def parse_time(text: str, zone: tzinfo, column: str) -> datetime:
    """A recorded time: ISO 8601 (a time without an offset is in ``zone``) or epoch
    seconds."""
    stripped = text.strip()
    try:
        seconds = float(stripped)
    except ValueError:
        pass
    else:
        if math.isfinite(seconds) and seconds >= MIN_EPOCH_S:
            try:
                return datetime.fromtimestamp(seconds, UTC)
            except (OverflowError, OSError, ValueError):
                pass
        raise RowError(
            f"time: {text!r} in column {column!r} is not a time: as epoch seconds it is "
            f"outside {MIN_EPOCH_S:,} (1973) .. year 9999"
        )
    try:
        parsed = datetime.fromisoformat(stripped)
    except ValueError:
        raise RowError(
            f"time: {text!r} in column {column!r} is not a time ({TIME_FORMATS})"
        ) from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=zone)


def format_time(when: datetime) -> str:
    """RFC 3339 in UTC, with as many fractional digits as the time has (ms or µs)."""
    utc = when.astimezone(UTC)
    spec = "milliseconds" if utc.microsecond % 1000 == 0 else "microseconds"
    return utc.isoformat(timespec=spec).replace("+00:00", "Z")


def _split(spec: str, option: str, shape: str, example: str) -> tuple[str, str]:
    left, sep, right = spec.partition("=")
    if not sep or not left.strip() or not right:
        raise ReplayError(f"{option} {spec!r}: write it as {shape}, e.g. {option} {example}")
    return left.strip(), right


def _check_field(domain: Domain, field: str, where: str, fields_text: str) -> None:
    if field == EVENT_TIME:
        raise ReplayError(
            f"{where}: {EVENT_TIME} comes from --time-column (shifted unless --keep-time); "
            "drop this option"
        )
    if field not in domain.fields:
        raise ReplayError(
            f"{where}: the {domain.name} contract has no field {field!r}; "
            f"its fields are: {fields_text}"
        )


def _zone(name: str) -> tzinfo:
    if name.upper() == "UTC":
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ReplayError(
            f"--time-zone {name!r}: not a time zone name; use an IANA name such as "
            "Europe/Brussels, or UTC"
        ) from None
