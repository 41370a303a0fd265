"""`edgeclaw doctor` on a board: which pin factory drives GPIO and why (with the fix when there is
none), and a CSI camera configured where picamera2/libcamera cannot work. Hosts are fake root trees."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from edgeclaw.doctor import Host, render, run_checks
from edgeclaw.doctor_board import check_camera_os, check_pin_factory, is_raspberry_pi_os
from tests.unit.test_doctor import fake_gateway_factory, fake_host, make_setup  # noqa: F401


def host_at(
    root: Path, *, modules: tuple[str, ...] = ("gpiozero", "lgpio"), tools: tuple[str, ...] = ()
) -> Host:
    return Host(
        root=root,
        user="edgeclaw",
        systemctl=lambda args: None,
        has_module=lambda name: name in modules,
        which=lambda name: f"/usr/bin/{name}" if name in tools else None,
    )


def board(tmp_path: Path, *, chip: bool = True, model: bytes | None = b"raspberrypi,3-model-b-plus") -> Path:
    root = tmp_path / "root"
    (root / "dev").mkdir(parents=True)
    (root / "proc/device-tree").mkdir(parents=True)
    if chip:
        (root / "dev/gpiochip0").touch()
    if model:
        (root / "proc/device-tree/compatible").write_bytes(model + b"\0brcm,bcm2837\0")
    return root


def test_real_board_reports_lgpio_and_why(tmp_path: Path) -> None:
    check = check_pin_factory(host_at(board(tmp_path)), simulated=False)
    assert check.status == "pass"
    assert check.detail == f"LGPIOFactory: real board: {tmp_path}/root/dev/gpiochip0 and lgpio importable"


def test_simulated_reports_mock(tmp_path: Path) -> None:
    check = check_pin_factory(host_at(board(tmp_path, chip=False), modules=("gpiozero",)), simulated=True)
    assert check.status == "pass" and check.detail.startswith("MockFactory: node.hardware: simulated")


def test_missing_lgpio_fails_with_the_install_fix(tmp_path: Path) -> None:
    check = check_pin_factory(host_at(board(tmp_path), modules=("gpiozero",)), simulated=False)
    assert check.status == "fail" and "GPIO_NO_LGPIO" in check.detail
    assert check.fix is not None and "pip install lgpio" in check.fix and "python3-lgpio" in check.fix
    text = render([check])
    assert "FAIL  gpio pin factory: none (GPIO_NO_LGPIO:" in text and "fix: install lgpio" in text


@pytest.mark.parametrize(
    ("chip", "model", "modules", "code"),
    [
        (False, b"raspberrypi,4-model-b", ("gpiozero", "lgpio"), "GPIO_NO_CHIP"),
        (True, b"pine64,rockpro64", ("gpiozero", "lgpio"), "GPIO_BOARD_UNKNOWN"),
        (True, b"raspberrypi,4-model-b", ("lgpio",), "gpiozero is not importable"),
    ],
)
def test_other_missing_pieces_are_named(
    tmp_path: Path, chip: bool, model: bytes, modules: tuple[str, ...], code: str
) -> None:
    check = check_pin_factory(host_at(board(tmp_path, chip=chip, model=model), modules=modules), False)
    assert check.status == "fail" and code in check.detail and check.fix


def test_doctor_run_names_the_factory(tmp_path: Path, fake_gateway_factory: Any) -> None:  # noqa: F811
    gw = fake_gateway_factory()
    host = fake_host(tmp_path)
    host.has_module = lambda name: name != "lgpio"
    checks = {c.id: c for c in run_checks(str(make_setup(tmp_path, f"ws://127.0.0.1:{gw.port}")), host)}
    assert checks["gpio.factory"].status == "fail" and "GPIO_NO_LGPIO" in checks["gpio.factory"].detail


def pi_os(root: Path, how: str) -> None:
    if how == "rpi-issue":
        (root / "etc").mkdir(parents=True, exist_ok=True)
        (root / "etc/rpi-issue").write_text("Raspberry Pi reference 2024-11-19\n")
    else:
        (root / "etc/apt/sources.list.d").mkdir(parents=True, exist_ok=True)
        (root / "etc/apt/sources.list.d/raspi.sources").write_text(
            "Types: deb\nURIs: http://archive.raspberrypi.com/debian/\nSuites: trixie\nComponents: main\n"
        )


@pytest.mark.parametrize("how", ["rpi-issue", "apt"])
def test_raspberry_pi_os_is_recognised(tmp_path: Path, how: str) -> None:
    root = board(tmp_path)
    (root / "etc/apt").mkdir(parents=True)
    (root / "etc/apt/sources.list").write_text("deb http://deb.debian.org/debian trixie main\n")
    assert not is_raspberry_pi_os(root)
    pi_os(root, how)
    assert is_raspberry_pi_os(root)


@pytest.mark.parametrize("backend", ["picamera2", "rpicam"])
def test_csi_camera_on_debian_says_it_cannot_work_and_what_to_do(tmp_path: Path, backend: str) -> None:
    root = board(tmp_path)
    cam = SimpleNamespace(backend=backend, picamera2_python="/usr/bin/python3")
    [check] = check_camera_os(cam, host_at(root, tools=("rpicam-still", "rpicam-vid")))
    assert check.status == "fail" and "not Raspberry Pi OS" in check.detail and "ISP" in check.detail
    assert check.fix is not None and "Raspberry Pi OS" in check.fix and "camera.backend: v4l2" in check.fix


def test_usb_camera_backends_are_not_questioned(tmp_path: Path) -> None:
    for backend in ("v4l2", "auto", "simulated"):
        assert check_camera_os(SimpleNamespace(backend=backend), host_at(board(tmp_path / backend))) == []


def test_picamera2_on_raspberry_pi_os_needs_the_apt_package(tmp_path: Path) -> None:
    root = board(tmp_path)
    pi_os(root, "rpi-issue")
    (root / "usr/bin").mkdir(parents=True)
    (root / "usr/bin/python3").touch()
    cam = SimpleNamespace(backend="picamera2", picamera2_python="/usr/bin/python3")
    [check] = check_camera_os(cam, host_at(root))
    assert check.status == "fail" and check.fix == "sudo apt install python3-picamera2"
    (root / "usr/lib/python3/dist-packages/picamera2").mkdir(parents=True)
    [check] = check_camera_os(cam, host_at(root))
    assert check.status == "pass" and "picamera2" in check.detail


def test_rpicam_on_raspberry_pi_os_needs_rpicam_apps(tmp_path: Path) -> None:
    root = board(tmp_path)
    pi_os(root, "apt")
    cam = SimpleNamespace(backend="rpicam")
    [check] = check_camera_os(cam, host_at(root, tools=("rpicam-still",)))
    assert (
        check.status == "fail"
        and "rpicam-vid" in check.detail
        and check.fix == "sudo apt install rpicam-apps"
    )
    [check] = check_camera_os(cam, host_at(root, tools=("rpicam-still", "rpicam-vid")))
    assert check.status == "pass"


def test_doctor_run_flags_a_csi_camera_on_debian(tmp_path: Path, fake_gateway_factory: Any) -> None:  # noqa: F811
    import yaml

    gw = fake_gateway_factory()
    path = make_setup(tmp_path, f"ws://127.0.0.1:{gw.port}", gpio=False)
    doc = yaml.safe_load(path.read_text())
    doc["camera"] = {"enabled": True, "backend": "picamera2"}
    path.write_text(yaml.safe_dump(doc))
    checks = {c.id: c for c in run_checks(str(path), fake_host(tmp_path))}
    assert checks["camera.csi"].status == "fail" and "not Raspberry Pi OS" in checks["camera.csi"].detail
