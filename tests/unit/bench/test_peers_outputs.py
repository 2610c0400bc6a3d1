"""Reading the peers' outputs back: Pathway's change stream, and the rows verdict."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.peers.contenders import net_rows
from bench.peers.report import rows_verdict


def write_lines(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_a_window_rewritten_leaves_its_last_value(tmp_path: Path) -> None:
    changes = write_lines(
        tmp_path / "windows.jsonl",
        [
            {"merchant_id": "m1", "count": 1, "time": 2, "diff": 1},
            {"merchant_id": "m2", "count": 5, "time": 2, "diff": 1},
            {"merchant_id": "m1", "count": 1, "time": 4, "diff": -1},
            {"merchant_id": "m1", "count": 2, "time": 4, "diff": 1},
        ],
    )
    assert sorted(net_rows(changes), key=lambda r: r["merchant_id"]) == [
        {"merchant_id": "m1", "count": 2},
        {"merchant_id": "m2", "count": 5},
    ]


def test_a_row_left_twice_is_an_error(tmp_path: Path) -> None:
    changes = write_lines(
        tmp_path / "x.jsonl",
        [{"error": "amount", "time": 2, "diff": 1}, {"error": "amount", "time": 4, "diff": 1}],
    )
    with pytest.raises(RuntimeError, match="more than once"):
        net_rows(changes)


def test_rows_verdict_names_what_is_missing_and_repeated() -> None:
    assert rows_verdict(["a", "b"], ["b", "a"]) == "✓"
    assert rows_verdict(["a", "a", "c"], ["a", "b"]) == "(1 missing, 2 extra or repeated)"
