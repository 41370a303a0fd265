"""Suite-wide: tests print measured figures as lines starting with "[figure]"; they are collected from the
captured output and repeated at the end of the run, so CI logs show them without `-s`."""

from __future__ import annotations

import pytest

_FIGURES: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "call":
        for line in report.capstdout.splitlines():
            if line.startswith("[figure]"):
                _FIGURES.append(f"{line}  ({report.nodeid.split('::')[-1]})")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _FIGURES:
        terminalreporter.section("figures")
        for line in _FIGURES:
            terminalreporter.write_line(line)
