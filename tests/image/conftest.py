"""The image tier prints its build and boot timings at the end of the run (also when all pass)."""

from __future__ import annotations

from typing import Any

TIMINGS: list[str] = []


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if TIMINGS:
        terminalreporter.section("image build and boot timings")
        for line in TIMINGS:
            terminalreporter.write_line(line)
