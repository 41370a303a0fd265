"""The gpio config section: the board is declared, mistakes point at file:line:key; gpio-safe; lazy import."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from edgeclaw.cli import main as cli_main
from edgeclaw.config import parse_config
from edgeclaw.typedconfig import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def gpio_yaml(pins: str, extra: str = "") -> str:
    return "gpio:\n  enabled: true\n" + extra + "  pins:\n" + textwrap.indent(textwrap.dedent(pins), "    ")


def error_of(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_config(text, file="board.yaml")
    return info.value


def test_valid_board_parses() -> None:
    cfg = parse_config(
        gpio_yaml("""\
        relay: {pin: GPIO17, safe_state: 0, safe_on_failsafe: true}
        fan: {pin: 13, kind: pwm, frequency: 25000}
        button: {pin: BOARD15, kind: button, on_edge: agent}
        sonar: {pin: GPIO24, trigger: GPIO23, kind: distance}
    """),
        file="board.yaml",
    ).capabilities["gpio"]
    assert cfg.pins["relay"].safe_state == 0 and cfg.pins["fan"].pin == "13"
    assert cfg.pins["button"].active_when_high() is False  # buttons default to pull-up


@pytest.mark.parametrize(
    ("pins", "key", "needle"),
    [
        ("a: {pin: GPIO17}\nb: {pin: BOARD11}\n", "gpio.pins.b.pin", "already used by gpio.pins.a"),
        ("a: {pin: 17}\nb: {pin: BCM17, kind: input}\n", "gpio.pins.b.pin", "already used"),
        ("s: {pin: 24, trigger: GPIO24, kind: distance}\n", "gpio.pins.s.trigger", "already used"),
        ("b: {pin: 22, kind: button, frequency: 100}\n", "gpio.pins.b", "impossible on an input"),
        ("r: {pin: 17, frequency: 100}\n", "gpio.pins.r", "needs kind: pwm"),
        ("r: {pin: 17, on_edge: agent}\n", "gpio.pins.r", "only to inputs"),
        ("b: {pin: 22, kind: input, safe_state: 1}\n", "gpio.pins.b", "only to outputs"),
        ("r: {pin: 17, safe_state: 0.5}\n", "gpio.pins.r", "must be 0 or 1"),
        ("r: {pin: BOARD6}\n", "gpio.pins.r", "power or ground"),
        ("b: {pin: 22, kind: button, message: '{name} at {when}'}\n", "gpio.pins.b", "unknown field"),
        ("Bad-Name: {pin: 22}\n", "gpio.pins.Bad-Name", "lower-case"),
        ("r: {pin: 17, kind: servo}\n", "gpio.pins.r.kind", "expected one of"),
        ("s: {pin: 24, kind: distance}\n", "gpio.pins.s", "needs `trigger`"),
    ],
)
def test_config_mistakes_name_the_key_and_line(pins: str, key: str, needle: str) -> None:
    err = error_of(gpio_yaml(pins))
    assert err.key == key, str(err)
    assert needle in err.message
    assert err.file == "board.yaml" and err.line is not None and err.line >= 4


def test_unknown_pin_key_is_an_error() -> None:
    err = error_of(gpio_yaml("r: {pin: 17, colour: red}\n"))
    assert err.key == "gpio.pins.r.colour" and "unknown key" in err.message


def _write_config(tmp_path: Path, pins: str, hardware: str = "simulated") -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(
        f"node: {{state_dir: {tmp_path / 'state'}, runtime_dir: {tmp_path / 'run'}, hardware: {hardware}}}\n"
        + gpio_yaml(pins)
    )
    return path


def test_gpio_safe_sets_marked_outputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write_config(
        tmp_path,
        """\
        relay: {pin: 17, safe_state: 0}
        lamp: {pin: 18, safe_state: 1}
        fan: {pin: 13, kind: pwm, safe_state: 0.2}
        keep: {pin: 19, safe_state: 1, safe_on_shutdown: false}
        plain: {pin: 20}
        button: {pin: 22, kind: button}
    """,
    )
    assert cli_main(["--config", str(path), "gpio-safe", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["simulated"] is True
    assert [(p["name"], p["value"], p["ok"]) for p in doc["pins"]] == [
        ("relay", 0, True),
        ("lamp", 1, True),
        ("fan", 0.2, True),
    ]
    assert cli_main(["--config", str(path), "gpio-safe", "--dry-run"]) == 0
    assert "would set lamp (18) to 1" in capsys.readouterr().out


def test_gpio_safe_reports_a_failing_pin(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write_config(tmp_path, "relay: {pin: 17, safe_state: 0}\nghost: {pin: GPIO99, safe_state: 0}\n")
    assert cli_main(["--config", str(path), "gpio-safe"]) == 1
    out = capsys.readouterr().out
    assert "set relay (17) to 0" in out and "FAILED to set ghost (GPIO99)" in out


def test_gpio_safe_bad_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write_config(tmp_path, "a: {pin: 17}\nb: {pin: GPIO17}\n")
    assert cli_main(["--config", str(path), "gpio-safe"]) == 78
    assert "gpio.pins.b.pin" in capsys.readouterr().out


def test_gpiozero_is_not_imported_without_pins(tmp_path: Path) -> None:
    """Config parsing and the capability module stay light: gpiozero loads only when pins start."""
    code = (
        "import sys; from edgeclaw.config import parse_config; import edgeclaw.capabilities.gpio as g;"
        "parse_config(open(sys.argv[1]).read());"
        "print(any(m.startswith('gpiozero') for m in sys.modules))"
    )
    path = _write_config(tmp_path, "relay: {pin: 17, safe_state: 0}\n")
    out = subprocess.run(
        [sys.executable, "-c", code, str(path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
