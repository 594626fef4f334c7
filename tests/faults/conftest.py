"""Prints the fault and security table at the end of any run that included tests/faults."""

from __future__ import annotations

from typing import Any

import pytest

from tests.faults.faultlib import ROWS, FaultRow

_FAILED: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if "tests/faults/" in report.nodeid and report.failed and report.when == "call":
        _FAILED.append(report.nodeid.split("::", 1)[-1])


def pytest_terminal_summary(terminalreporter: Any) -> None:
    rows = list(ROWS) + [FaultRow("FAILED", name, survived=False, note="see the failure above")
                         for name in _FAILED]
    if not rows:
        return
    write = terminalreporter.write_line
    terminalreporter.section("faults and bad input: what was injected and what survived")
    widths = (10, 62, 8, 8, 10, 9, 14)
    head = ("group", "fault", "injected", "survived", "bad input", "disturbed", "baseline")
    write("  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)))
    write("  ".join("-" * w for w in widths))
    for row in rows:
        cells = (row.group, row.fault[:62], str(row.injected), "yes" if row.survived else "NO",
                 str(row.bad_inputs), str(row.disturbed), row.baseline)
        write("  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)))
    survived = [r for r in rows if r.survived]
    checked = [r for r in rows if r.baseline.startswith("ok")]
    write("")
    write(f"faults injected: {sum(r.injected for r in rows)} in {len(rows)} cases; survived: "
          f"{len(survived)}/{len(rows)} cases")
    write(f"bad inputs tried: {sum(r.bad_inputs for r in rows)}")
    write(f"other calls disturbed: {sum(r.disturbed for r in rows)} (must be 0)")
    write(f"memory and calls back to baseline: {len(checked)} cases checked, all ok"
          if checked else "memory and calls back to baseline: not checked in this run")
