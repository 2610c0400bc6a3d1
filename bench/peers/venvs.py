"""One virtual environment per peer framework, made on first use, with pinned versions.

The peers never share the project's ``.venv``: their dependencies (Quix's own
confluent-kafka, Pathway's engine) would fight the project's pins. Each venv is made with
the interpreter the project uses and filled with pip from the same index the project's
``make setup`` uses (pip's own configuration on this machine: nothing is passed here).
Besides the top-level pins, every package the venv holds is pinned by a constraints file
(``constraints/<peer>.txt``, pip's freeze of a venv the benchmark ran with), so a peer's
dependencies do not drift between runs either. A venv is remade when its pins or
constraints change: they are written beside it once it installed.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Peer:
    name: str
    pins: tuple[str, ...]

    @property
    def version(self) -> str:
        return self.pins[0].split("==")[1]

    @property
    def constraints(self) -> Path:
        return CONSTRAINTS / f"{self.name}.txt"


CONSTRAINTS = Path(__file__).resolve().parent / "constraints"

# msgspec: the transaction contract (riverbed.contracts.payments) that every contender
# validates with. pyarrow: Quix's Parquet sink imports it but does not require it.
QUIX = Peer("quixstreams", ("quixstreams==3.28.1", "pyarrow==26.0.1", "msgspec==0.23.0"))
PATHWAY = Peer("pathway", ("pathway==0.33.0", "msgspec==0.23.0"))


def ensure_venv(peer: Peer, root: Path) -> Path:
    """The python of ``peer``'s venv under ``root``, made and filled if need be."""
    venv = root / peer.name
    python = venv / "bin" / "python"
    stamp = venv / "pins.txt"
    wanted = "\n".join(peer.pins) + "\n" + peer.constraints.read_text()
    if python.exists() and stamp.exists() and stamp.read_text() == wanted:
        return python
    print(f"making the {peer.name} venv in {venv} ({', '.join(peer.pins)}) ...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "-c", str(peer.constraints), *peer.pins],
        check=True,
    )
    stamp.write_text(wanted)
    return python
