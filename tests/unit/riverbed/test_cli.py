"""The ``riverbed`` command's own start."""

from __future__ import annotations

import subprocess
import sys


def test_the_command_module_imports_only_the_standard_library() -> None:
    # main() imports settings, pydantic and Kafka inside its KeyboardInterrupt handler:
    # a Ctrl-C in the first fraction of a second exits 130 without a traceback. A
    # third-party import at the top of riverbed.cli would bring the traceback back.
    probe = (
        "import sys; before = set(sys.modules); import riverbed.cli; "
        "print(sorted({m.split('.')[0] for m in set(sys.modules) - before} "
        "- set(sys.stdlib_module_names)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "['riverbed']"
