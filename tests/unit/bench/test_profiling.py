"""bench.profiling reads py-spy's raw output into self and inclusive shares."""

from pathlib import Path

from bench import profiling


def test_self_and_inclusive_shares_count_each_stack_once(tmp_path: Path) -> None:
    raw = tmp_path / "profile.txt"
    raw.write_text(
        "main (run.py:1);process (flows/p/processor.py:10);check (flows/p/fraud.py:5) 6\n"
        "main (run.py:1);process (flows/p/processor.py:12) 3\n"
        # a recursive frame counts once for its stack
        "main (run.py:1);walk (a.py:1);walk (a.py:2) 1\n"
    )
    total, own, anywhere = profiling.top(raw)
    assert total == 10
    assert dict(own) == {"check (fraud.py)": 0.6, "process (processor.py)": 0.3, "walk (a.py)": 0.1}
    assert dict(anywhere)["main (run.py)"] == 1.0
    assert dict(anywhere)["process (processor.py)"] == 0.9
    assert dict(anywhere)["walk (a.py)"] == 0.1
    assert "| 60.0% | `check (fraud.py)` |" in profiling.table(raw)
