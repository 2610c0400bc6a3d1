"""Where a benchmarked process spends its time: py-spy attached to it, and the top entries.

``py-spy`` (a dev dependency) samples a running Python process from outside without
pausing it (``--nonblocking``: pausing it 100 times a second made the flow three times
slower), and only the thread holding the GIL (``--gil``): a Python process goes as fast
as its GIL-holding code, and idle threads (sleeping watchdogs, librdkafka waits) would
otherwise fill the table. :func:`attach` starts it on a process the benchmark launched and
:func:`top` reads its raw output (one ``frame;frame;... count`` line per stack) into the
functions with the most samples on their own (self) and anywhere on the stack
(inclusive), which is what RESULTS.md quotes.
"""

from __future__ import annotations

import collections
import subprocess
import sys
from pathlib import Path

PY_SPY = Path(sys.executable).with_name("py-spy")


def attach(pid: int, out: Path, rate: int = 100) -> subprocess.Popen:
    """Sample ``pid`` until it exits; the raw profile goes to ``out``."""
    return subprocess.Popen(
        [
            *(str(PY_SPY), "record", "--gil", "--nonblocking", "-r", str(rate)),
            *("-p", str(pid), "-f", "raw", "-o", str(out)),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _short(frame: str) -> str:
    # "func (path/to/module.py:123)" -> "func (module.py)": lines split one function
    # into many entries, and the path is noise in a table.
    name, _, where = frame.partition(" (")
    file = where.rsplit(":", 1)[0].rsplit("/", 1)[-1]
    return f"{name} ({file})" if file else name


def top(raw: Path, count: int = 15) -> tuple[int, list[tuple[str, float]], list[tuple[str, float]]]:
    """(samples, top self entries, top inclusive entries) with their share of samples."""
    own: collections.Counter[str] = collections.Counter()
    anywhere: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        frames = [_short(f) for f in stack.split(";")]
        total += int(n)
        own[frames[-1]] += int(n)
        for frame in set(frames):
            anywhere[frame] += int(n)
    if not total:
        return 0, [], []

    def shares(counter: collections.Counter[str]) -> list[tuple[str, float]]:
        return [(f, c / total) for f, c in counter.most_common(count)]

    return total, shares(own), shares(anywhere)


def table(raw: Path, count: int = 15) -> str:
    """The top entries as a Markdown table."""
    total, own, anywhere = top(raw, count)
    lines = [
        f"py-spy, {total:,} samples at 100/s",
        "",
        "| self | function | | inclusive | function |",
        "|---:|---|---|---:|---|",
    ]
    for i in range(max(len(own), len(anywhere))):
        s = own[i] if i < len(own) else ("", 0.0)
        a = anywhere[i] if i < len(anywhere) else ("", 0.0)
        lines.append(f"| {s[1]:.1%} | `{s[0]}` | | {a[1]:.1%} | `{a[0]}` |")
    return "\n".join(lines)
