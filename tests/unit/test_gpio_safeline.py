"""`edgeclaw gpio-safe` on a real board: the kernel request it makes (uAPI v2), byte for byte, and its
errors. The kernel side (pinctrl-bcm2835 on an emulated Pi 3) is in tests/image/test_raspi.py."""

from __future__ import annotations

import ctypes
import json
from pathlib import Path

import pytest

from edgeclaw.capabilities.gpio import safeline
from edgeclaw.cli import main as cli_main


def test_request_layout_matches_linux_gpio_h() -> None:
    # struct gpio_v2_line_request is 592 bytes; GPIO_V2_GET_LINE_IOCTL and GPIO_GET_CHIPINFO_IOCTL as
    # the kernel defines them: a wrong layout would make the kernel read garbage flags
    assert ctypes.sizeof(safeline._LineRequest) == 592
    assert safeline.GET_LINE_IOCTL == 0xC250B407
    assert safeline.GET_CHIPINFO_IOCTL == 0x8044B401
    assert safeline._LineRequest.config.offset == 288 and safeline._LineRequest.fd.offset == 588


@pytest.mark.parametrize(
    ("safe", "active_high", "level", "pull"),
    [(0, True, 0, safeline.FLAG_BIAS_PULL_DOWN), (1, True, 1, safeline.FLAG_BIAS_PULL_UP),
     (0, False, 1, safeline.FLAG_BIAS_PULL_UP), (1, False, 0, safeline.FLAG_BIAS_PULL_DOWN)],
)  # fmt: skip
def test_line_is_driven_and_pulled_to_the_physical_safe_level(
    safe: int, active_high: bool, level: int, pull: int
) -> None:
    req = safeline.SafeRequest(17, safeline.physical_level(safe, active_high))
    raw = bytes(safeline.encode(req))
    r = safeline._LineRequest.from_buffer_copy(raw)
    assert r.offsets[0] == 17 and r.num_lines == 1 and r.consumer == b"edgeclaw-safe"
    assert r.config.flags == safeline.FLAG_OUTPUT | pull  # never both pulls, never as-is
    assert r.config.num_attrs == 1 and r.config.attrs[0].attr.id == safeline.ATTR_ID_OUTPUT_VALUES
    assert r.config.attrs[0].attr.value == level and r.config.attrs[0].mask == 1


def test_a_duty_cycle_is_refused_not_rounded() -> None:
    with pytest.raises(ValueError, match="only 0 or 1"):
        safeline.physical_level(0.2, True)


@pytest.mark.parametrize(
    ("pin", "offset"), [("GPIO17", 17), ("17", 17), ("BCM4", 4), ("BOARD11", 17), ("J8:40", 21)]
)
def test_header_pins_map_to_bcm_offsets(pin: str, offset: int) -> None:
    assert safeline.bcm_offset(pin) == offset


def test_no_gpio_controller_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "gpiochip0").write_text("not a character device")
    with pytest.raises(FileNotFoundError, match="no GPIO controller labelled pinctrl-bcm2835"):
        safeline.find_header_chip(tmp_path)


def test_gpio_safe_on_a_board_without_the_controller_fails_per_pin(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    real = safeline.find_header_chip
    monkeypatch.setattr(safeline, "find_header_chip", lambda: real(tmp_path))  # an empty /dev
    path = tmp_path / "config.yaml"
    path.write_text(
        f"node: {{state_dir: {tmp_path / 'state'}, runtime_dir: {tmp_path / 'run'}, hardware: auto}}\n"
        "gpio:\n  enabled: true\n  pins:\n    relay: {pin: GPIO17, safe_state: 0}\n"
    )
    assert cli_main(["--config", str(path), "gpio-safe", "--json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["simulated"] is False
    [row] = doc["pins"]
    assert row["ok"] is False and "no GPIO controller" in row["error"]
