"""Real recordings that ship inside Python packages, found where pip installed them.

Nothing is downloaded at run time: a recording is a file of an installed package
(``riverbed[recordings]``, which ``make setup`` installs). Print a path with::

    python -m producers.replay.recordings occupancy

``occupancy`` is the UCI "Occupancy Detection" recording (Candanedo & Feldheim, 2016):
an office room in Mons, Belgium, in February 2015; temperature (°C), relative humidity
(%), light (lux) and CO2 (ppm), as river ships it for its drift detectors (one reading
every 16 minutes, 509 rows, columns ``time,V1,V2,V3,V4``, local time). See
docs/replay.md.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from producers.replay.domains import ReplayError


@dataclass(frozen=True)
class ShippedRecording:
    name: str
    package: str  # the distribution that ships it
    member: str  # its path inside the installed distribution
    description: str


RECORDINGS: dict[str, ShippedRecording] = {
    "occupancy": ShippedRecording(
        name="occupancy",
        package="river",
        member="river/drift/datasets/occupancy.csv",
        description="UCI Occupancy Detection: an office room's temperature, humidity, light "
        "and CO2, Feb 2015, every 16 min (509 rows)",
    ),
}


def recording_path(name: str) -> Path:
    """Where the installed package keeps recording ``name``.

    Found through the distribution's metadata, without importing the package (river
    imports numpy and scipy at import).
    """
    try:
        shipped = RECORDINGS[name]
    except KeyError:
        raise ReplayError(
            f"no shipped recording called {name!r}; there are: {', '.join(sorted(RECORDINGS))}"
        ) from None
    try:
        dist = metadata.distribution(shipped.package)
    except metadata.PackageNotFoundError:
        raise ReplayError(
            f"recording {name!r} ships in the {shipped.package} package, which is not "
            "installed: run make setup, or pip install -e '.[recordings]'"
        ) from None
    path = Path(str(dist.locate_file(shipped.member)))
    if not path.is_file():
        raise ReplayError(
            f"recording {name!r}: {shipped.package} {dist.version} has no {shipped.member}; "
            "install the version pinned in pyproject.toml (make setup)"
        )
    return path


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        for shipped in RECORDINGS.values():
            print(f"{shipped.name}: {shipped.description}", file=sys.stderr)
        print("usage: python -m producers.replay.recordings NAME", file=sys.stderr)
        return 2
    try:
        print(recording_path(args[0]))
    except ReplayError as exc:
        print(exc, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
