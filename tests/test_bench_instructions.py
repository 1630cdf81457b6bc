"""bench/instructions.py: the instruction total is read off callgrind's output."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.instructions import total_instructions


def test_the_total_is_the_summary_or_totals_line(tmp_path: Path) -> None:
    out = tmp_path / "callgrind.out"
    out.write_text("# callgrind format\nversion: 1\nevents: Ir\nfn=main\n0 12\nsummary: 258507434\ntotals: 258507434\n")
    assert total_instructions(out) == 258_507_434
    out.write_text(
        "events: Ir\nsummary: 0\nfn=main\n0 12\ntotals: 298905984\n"
    )  # a dump `callgrind_control -d` asked for
    assert total_instructions(out) == 298_905_984
    out.write_text("events: Ir\nfn=main\n0 12\n")
    with pytest.raises(ValueError, match="no callgrind totals"):
        total_instructions(out)
