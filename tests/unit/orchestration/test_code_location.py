"""`dagster dev -w workspace.yaml` loads the code location with no errors or warnings."""

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]


def test_workspace_validates_without_warnings(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RIVERBED_")}
    env["DAGSTER_HOME"] = str(tmp_path)
    (tmp_path / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    # The CLI itself says `dg check defs` supersedes it; that is about the command, not us.
    env["PYTHONWARNINGS"] = "ignore:Function `definitions_validate_command` is superseded"
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "dagster"),
            "definitions",
            "validate",
            "-w",
            str(REPO / "workspace.yaml"),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Validation successful for code location riverbed" in output
    noisy = [line for line in output.splitlines() if "Warning" in line or "WARNING" in line]
    assert noisy == []
