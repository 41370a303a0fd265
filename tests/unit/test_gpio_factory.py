"""The pin factory on a real board: LGPIOFactory when a /dev/gpiochip* exists and lgpio imports,
MockFactory only when configured as simulated, and otherwise a coded error with the fix while the node
keeps running; gpiozero's own fallback (NativeFactory, /dev/gpiomem or /dev/mem) is never reached.
The machine is faked at the seam only: the gpiochip listing and whether lgpio can be imported."""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any

import pytest

from edgeclaw.capabilities.gpio import create, factory
from edgeclaw.capabilities.gpio.factory import PinFactoryError, choose, make_factory
from tests.unit.test_gpio_capability import FakeServices, call, code_of, gpio_config


def test_simulated_board_gets_the_mock_factory_whatever_the_machine_has() -> None:
    choice = choose(True, chips=lambda: ["/dev/gpiochip0"], has_lgpio=lambda: True)
    assert choice.name == "MockFactory" and "simulated" in choice.reason
    assert type(make_factory(True)).__name__ == "MockFactory"


def test_real_board_with_gpiochip_and_lgpio_gets_lgpio() -> None:
    choice = choose(False, chips=lambda: ["/dev/gpiochip0", "/dev/gpiochip1"], has_lgpio=lambda: True)
    assert choice.name == "LGPIOFactory"
    assert "/dev/gpiochip0, /dev/gpiochip1" in choice.reason and "lgpio" in choice.reason


def test_no_gpiochip_is_a_coded_error_not_a_silent_mock() -> None:
    with pytest.raises(PinFactoryError) as info:
        choose(False, chips=lambda: [], has_lgpio=lambda: True)
    assert info.value.code == "GPIO_NO_CHIP" and "node.hardware: simulated" in info.value.fix


def test_missing_lgpio_says_how_to_install_it() -> None:
    with pytest.raises(PinFactoryError) as info:
        choose(False, chips=lambda: ["/dev/gpiochip0"], has_lgpio=lambda: False)
    exc = info.value
    assert exc.code == "GPIO_NO_LGPIO" and "/dev/gpiochip0" in exc.message and "NativeFactory" in exc.message
    for fix in ("pip install lgpio", "apt install python3-lgpio", "--system-site-packages"):
        assert fix in exc.fix, fix


def test_gpiochips_lists_the_character_devices(tmp_path: Path) -> None:
    (tmp_path / "gpiochip0").touch()
    (tmp_path / "gpiochip4").touch()
    (tmp_path / "gpiomem").touch()
    assert factory.gpiochips(tmp_path) == [str(tmp_path / "gpiochip0"), str(tmp_path / "gpiochip4")]


def test_gpiozero_never_falls_back_to_native(monkeypatch: pytest.MonkeyPatch) -> None:
    """With no lgpio, make_factory raises before gpiozero could pick NativeFactory (which would try
    /dev/gpiomem and /dev/mem, neither of which the unit allows)."""
    import gpiozero.pins.native as native

    monkeypatch.setattr(factory, "gpiochips", lambda dev=None: ["/dev/gpiochip0"])
    monkeypatch.setattr(factory, "lgpio_importable", lambda: False)
    made: list[Any] = []
    monkeypatch.setattr(native.NativeFactory, "__init__", lambda self, *a, **k: made.append(self))
    with pytest.raises(PinFactoryError) as info:
        make_factory(False)
    assert info.value.code == "GPIO_NO_LGPIO" and made == []


def test_lgpio_that_cannot_open_the_chip_is_coded(monkeypatch: pytest.MonkeyPatch) -> None:
    """lgpio present but the chip refuses (no gpio group, DeviceAllow=): GPIO_CHIP_UNAVAILABLE."""

    class LgpioError(Exception):
        pass

    fake = types.ModuleType("lgpio")
    fake.error = LgpioError  # type: ignore[attr-defined]

    def gpiochip_open(chip: int) -> int:
        raise LgpioError("can not open gpiochip")

    fake.gpiochip_open = gpiochip_open  # type: ignore[attr-defined]
    fake.__getattr__ = lambda name: 0  # type: ignore[attr-defined]  # lgpio's flag constants
    monkeypatch.setitem(sys.modules, "lgpio", fake)
    monkeypatch.setattr(factory, "gpiochips", lambda dev=None: ["/dev/gpiochip0"])
    monkeypatch.setattr(factory, "lgpio_importable", lambda: True)
    monkeypatch.setattr(factory, "board_revision", lambda proc=None: 0xA02082)
    try:
        with pytest.raises(PinFactoryError) as info:
            make_factory(False)
    finally:
        sys.modules.pop("gpiozero.pins.lgpio", None)  # imported against the fake: not for later tests
    assert info.value.code == "GPIO_CHIP_UNAVAILABLE" and "can not open gpiochip" in str(info.value)


class RealBoardServices(FakeServices):
    @property
    def simulated(self) -> bool:
        return False


async def test_node_keeps_running_and_every_pin_answers_with_the_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(factory, "gpiochips", lambda dev=None: ["/dev/gpiochip0"])
    monkeypatch.setattr(factory, "lgpio_importable", lambda: False)
    pins = {
        "relay": {"pin": "GPIO17", "kind": "output", "safe_state": 0},
        "door": {"pin": "GPIO27", "kind": "input"},
    }
    cap = create(gpio_config(pins), RealBoardServices(tmp_path))
    await cap.start()  # does not raise: the node stays up, the pins are unavailable
    try:
        assert await code_of(cap, "gpio.write", name="relay", value=1) == "GPIO_UNAVAILABLE"
        with pytest.raises(Exception) as info:
            await call(cap, "gpio.read", name="door")
        assert "GPIO_NO_LGPIO" in str(info.value) and "pip install lgpio" in str(info.value)
        listing = await call(cap, "gpio.list")  # the listing says why, pin by pin
        assert [("GPIO_NO_LGPIO" in p.get("error", "")) for p in listing["pins"]] == [True, True]
    finally:
        await cap.stop()


def test_board_revision_from_firmware_cpuinfo_or_device_tree_model(tmp_path: Path) -> None:
    """Without the Pi firmware (U-Boot, QEMU's raspi3b) only the device tree's model names the board;
    gpiozero alone would give up with PinUnknownPi there."""
    proc = tmp_path / "proc"
    (proc / "device-tree/system").mkdir(parents=True)
    assert factory.board_revision(proc) is None
    (proc / "device-tree/compatible").write_bytes(b"raspberrypi,3-model-b\0brcm,bcm2837\0")
    assert factory.board_revision(proc) == 0xA02082
    (proc / "cpuinfo").write_text("processor\t: 0\nRevision\t: a22082\n")
    assert factory.board_revision(proc) == 0xA22082
    (proc / "device-tree/system/linux,revision").write_bytes((0xC03114).to_bytes(4, "big"))
    assert factory.board_revision(proc) == 0xC03114
    other = tmp_path / "other"
    (other / "device-tree").mkdir(parents=True)
    (other / "device-tree/compatible").write_bytes(b"pine64,rockpro64\0rockchip,rk3399\0")
    assert factory.board_revision(other) is None


def test_unknown_board_is_coded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(factory, "gpiochips", lambda dev=None: ["/dev/gpiochip0"])
    monkeypatch.setattr(factory, "lgpio_importable", lambda: True)
    monkeypatch.setattr(factory, "board_revision", lambda proc=None: None)
    with pytest.raises(PinFactoryError) as info:
        make_factory(False)
    assert info.value.code == "GPIO_BOARD_UNKNOWN"
