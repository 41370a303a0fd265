"""Will each supported board find its SD card, its Wi-Fi firmware and its watchdog? Read from the card.

Static checks of the built image (the `built` fixture of the tier), in seconds, for the boards the
card ships device trees for: every driver on the path from the SD host controller to its
regulators, clocks, pins, DMA, GPIO expander, firmware and mailbox is built into the kernel or packed
in the initramfs (else the root never appears: the probe defers forever); the radio's firmware
and NVRAM are on the root for each board's chip(s); the watchdog's driver autoloads.
"""

from __future__ import annotations

import fnmatch
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.image import bootdeps
from tests.image.conftest import Built, MiB
from tests.image.fdt import Tree

# The supported boards: the card's DTB name patterns (config.txt has upstream_kernel=1, so the
# firmware loads the kernel's own bcm2837/bcm2711 names).
BOARDS = {
    "Pi 3 (B, B+, A+)": "bcm2837-rpi-3-*.dtb",
    "Zero 2 W": "bcm2837-rpi-zero-2-w.dtb",
    "CM3": "bcm2837-rpi-cm3*.dtb",
    "Pi 4 B": "bcm2711-rpi-4-b.dtb",
    "Pi 400": "bcm2711-rpi-400.dtb",
    "CM4": "bcm2711-rpi-cm4*.dtb",
}
# The radio chip(s) a board's brcmfmac asks firmware for (firmware name = brcmfmac<chip>-sdio),
# by the board's root compatible. The Zero 2 W ships with either a BCM43430/1 or its RP3A0-era
# replacement, which the driver reports as 43436, 43436s or 43430b0 depending on the batch.
RADIOS = {
    "raspberrypi,3-model-b": ["43430"],
    "raspberrypi,3-model-b-plus": ["43455"],
    "raspberrypi,3-model-a-plus": ["43455"],
    "raspberrypi,model-zero-2-w": ["43430", "43436", "43436s", "43430b0"],
    "raspberrypi,4-model-b": ["43455"],
    "raspberrypi,400": ["43455"],
    "raspberrypi,4-compute-module": ["43455"],
}
NO_RADIO = {"raspberrypi,3-compute-module"}  # CM3 has no Wi-Fi; a carrier board may add its own


@dataclass
class Card:
    """What the card ships: its FAT files (DTBs, initramfs), its kernel's module index, its root."""

    fat: Path
    moddir: Path
    root: Path
    kernel: bootdeps.Kernel
    initramfs: set[str]

    def dtbs(self, pattern: str) -> list[Path]:
        return sorted(p for p in self.fat.iterdir() if fnmatch.fnmatch(p.name.lower(), pattern))


@pytest.fixture(scope="module")
def card(built: Built, tmp_path_factory: pytest.TempPathFactory) -> Card:
    fat = tmp_path_factory.mktemp("fat")
    img = f"{built.image}@@{4 * MiB}"
    listing = subprocess.run(
        ["mdir", "-b", "-i", img, "::"], capture_output=True, text=True, timeout=60, check=True
    ).stdout.split()
    names = [n.split("/")[-1] for n in listing]
    wanted = [n for n in names if n.lower().endswith(".dtb") or n.startswith(("initrd.img-", "vmlinuz-"))]
    for name in wanted:
        subprocess.run(["mcopy", "-n", "-i", img, f"::{name}", str(fat / name)], timeout=120, check=True)
    kernels = [n.removeprefix("vmlinuz-") for n in wanted if n.startswith("vmlinuz-")]
    assert len(kernels) == 1, f"expected one kernel on the FAT partition, found {kernels}"
    initrd = fat / f"initrd.img-{kernels[0]}"
    assert initrd.exists(), f"no initramfs for kernel {kernels[0]} on the FAT partition"
    moddir = built.rootfs / "usr/lib/modules" / kernels[0]
    assert (moddir / "modules.alias").exists(), f"the root has no module index for {kernels[0]}"
    return Card(
        fat=fat,
        moddir=moddir,
        root=built.rootfs,
        kernel=bootdeps.Kernel.load(moddir),
        initramfs=bootdeps.initramfs_modules(initrd),
    )


@pytest.mark.timeout(3300)  # the first test of a run may build the image
@pytest.mark.parametrize("board", list(BOARDS))
def test_sd_card_drivers_are_in_the_initramfs(card: Card, board: str) -> None:
    """Every driver between the SD host and its providers is built in or in the initramfs."""
    dtbs = card.dtbs(BOARDS[board])
    assert dtbs, f"no device tree for {board} ({BOARDS[board]}) on the FAT partition"
    for dtb in dtbs:
        tree = Tree.load(dtb)
        hosts = bootdeps.sd_hosts(tree)
        assert hosts, f"{dtb.name}: no enabled SD/MMC host controller found"
        needed = bootdeps.needs(tree, card.kernel)
        # the walk must reach the host's own driver, or it proves nothing about this board
        assert any(n.path in {h.path for h in hosts} for n in needed), (dtb.name, needed)
        lacking = bootdeps.missing(tree, card.kernel, card.initramfs)
        assert not lacking, f"{dtb.name}: the SD card would never appear:\n" + "\n".join(lacking)


def test_the_check_fails_when_the_pi4_sd_regulators_are_left_out(card: Card) -> None:
    """The same check on this card's files, minus the regulator drivers (the list before trixie):
    it must name both Pi 4 SD supplies, or it could not have caught the real bug."""
    old = card.initramfs - {"gpio_regulator", "fixed"}
    for pattern in ("bcm2711-rpi-4-b.dtb", "bcm2711-rpi-400.dtb", "bcm2711-rpi-cm4*.dtb"):
        for dtb in card.dtbs(pattern):
            lacking = "\n".join(bootdeps.missing(Tree.load(dtb), card.kernel, old))
            assert "regulator-gpio" in lacking and "gpio_regulator" in lacking, (dtb.name, lacking)
            assert "regulator-fixed" in lacking, (dtb.name, lacking)
    assert {"gpio_regulator", "fixed"} <= card.initramfs


def board_compatibles(card: Card) -> dict[str, str]:
    """Root `compatible` (what brcmfmac puts in board-specific firmware names) -> DTB name."""
    found = {}
    for dtb in card.dtbs("*.dtb"):
        if any(fnmatch.fnmatch(dtb.name.lower(), p) for p in BOARDS.values()):
            found[Tree.load(dtb).root.compatible[0]] = dtb.name
    return found


def firmware_file(root: Path, name: str) -> Path | None:
    """The file a firmware request resolves to on the card (symlinks followed inside the root)."""
    path = root / "usr/lib/firmware/brcm" / name
    for _ in range(8):
        if not path.is_symlink():
            return path if path.is_file() and path.stat().st_size > 0 else None
        target = os.readlink(path)
        path = (root / target.lstrip("/")) if target.startswith("/") else path.parent / target
    return None


def test_each_board_radio_has_its_wifi_firmware_and_nvram(card: Card) -> None:
    """brcmfmac asks for brcmfmac<chip>-sdio.<board>.bin, then brcmfmac<chip>-sdio.bin, and the NVRAM
    the same way (.txt): for every supported board and each chip it may carry, one of each must
    exist on the root, or that board has no Wi-Fi (and a Wi-Fi-only board cannot be reached)."""
    boards = board_compatibles(card)
    assert set(boards) >= set(RADIOS) | NO_RADIO, f"device trees on the card: {sorted(boards)}"
    missing = []
    for board in sorted(RADIOS):
        for chip in RADIOS[board]:
            for ext in ("bin", "txt"):
                tried = [f"brcmfmac{chip}-sdio.{board}.{ext}", f"brcmfmac{chip}-sdio.{ext}"]
                if not any(firmware_file(card.root, n) for n in tried):
                    missing.append(f"{board} ({boards[board]}), chip {chip}: none of {tried}")
    assert not missing, "Wi-Fi firmware missing:\n" + "\n".join(missing)


def test_zero_2_w_variants_come_from_the_shipped_raspberry_pi_firmware(card: Card) -> None:
    """Debian lacks the 43436/43436s/43430b0 files; the image ships Raspberry Pi's, with the licences."""
    repo_fw = Path(__file__).resolve().parents[2] / "image/firmware"
    for name in ("brcmfmac43436-sdio.bin", "brcmfmac43436s-sdio.bin", "brcmfmac43436-sdio.txt"):
        on_card = firmware_file(card.root, name)
        assert on_card is not None, name
        assert on_card.read_bytes() == (repo_fw / "brcm" / name).read_bytes(), name
    licences = card.root / "usr/share/doc/edgeclaw/firmware"
    for lic in ("LICENCE.broadcom_bcm43xx", "LICENCE.cypress"):
        assert "distribute" in (licences / lic).read_text(), lic


def test_watchdog_driver_autoloads_on_every_board(card: Card) -> None:
    """systemd's RuntimeWatchdogSec needs /dev/watchdog0: the PM block in each board's device tree
    is enabled, its driver is present, and it registers the platform device that udev autoloads
    bcm2835_wdt for (a module in Debian's kernel)."""
    aliases = (card.moddir / "modules.alias").read_text()
    found = re.search(r"^alias platform:bcm2835-wdt (\S+)$", aliases, re.M)
    assert found and found.group(1) == "bcm2835_wdt", "no platform alias for bcm2835_wdt"
    assert any(card.moddir.rglob("bcm2835_wdt.ko*")), "bcm2835_wdt.ko is not on the root"
    for pattern in BOARDS.values():
        for dtb in card.dtbs(pattern):
            tree = Tree.load(dtb)
            pm = [
                n
                for n in tree.nodes.values()
                if {"brcm,bcm2835-pm", "brcm,bcm2835-pm-wdt", "brcm,bcm2711-pm"} & set(n.compatible)
                and n.enabled
            ]
            assert pm, f"{dtb.name}: no enabled watchdog/PM node"
            # its driver, bcm2835-pm, registers the bcm2835-wdt device: built in, or a module with an
            # OF alias for this node (then udev loads it)
            mods = set().union(*(card.kernel.drivers(c)[0] for c in pm[0].compatible))
            assert "bcm2835_pm" in card.kernel.builtin or "bcm2835_pm" in mods, (dtb.name, pm[0].compatible)
