"""Which kernel drivers a board needs before it can read its SD card, and whether the card has them.

The kernel mounts the root only after the SD host controller has probed, and that probe waits
("deferred") until every provider it references has probed too: regulators for vmmc/vqmmc, clocks,
pin control, DMA, power domains, resets, the GPIO (expander) a regulator switches, the firmware and
mailbox behind that expander. A provider whose driver is a module that is not in the initramfs
never probes, and the board waits for its root forever. This module walks that graph in a board's
device tree and answers it from the image's own modules.alias / modules.builtin and the initramfs.
"""

from __future__ import annotations

import fnmatch
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from tests.image.fdt import Node, Tree

# property -> the provider's "#…-cells" (None: each entry is a bare phandle)
PHANDLE_PROPS: dict[str, str | None] = {
    "clocks": "#clock-cells",
    "dmas": "#dma-cells",
    "power-domains": "#power-domain-cells",
    "resets": "#reset-cells",
    "mboxes": "#mbox-cells",
    "gpios": "#gpio-cells",
    "interrupts-extended": "#interrupt-cells",
    "mmc-pwrseq": None,
    "interrupt-parent": None,
}
SUFFIX_PROPS: dict[str, str | None] = {"-supply": None, "-gpios": "#gpio-cells", "-gpio": "#gpio-cells"}
# a node under one of these is probed by the core, not by a driver of its own
BUS_COMPATIBLES = {"simple-bus", "simple-mfd", "arm,amba-bus"}
MMC_NODE = re.compile(r"^(mmc|mmcnr|sdhci|sdhost|emmc\d*)(@|$)")


def sd_hosts(tree: Tree) -> list[Node]:
    """The enabled SD/MMC host controllers (the card slot, and on Pi 3/Zero 2 W also the Wi-Fi's)."""
    return [n for n in tree.nodes.values() if MMC_NODE.match(n.name) and n.compatible and n.enabled]


def references(tree: Tree, node: Node) -> list[Node]:
    """Every provider a node points at through the properties the kernel resolves before probing."""
    found: list[Node] = []
    for prop in node.props:
        if prop in PHANDLE_PROPS:
            found += tree.phandle_list(node, prop, PHANDLE_PROPS[prop])
        elif re.fullmatch(r"pinctrl-\d+", prop):
            found += tree.phandle_list(node, prop, None)
        else:
            for suffix, cells in SUFFIX_PROPS.items():
                if prop.endswith(suffix) and not prop.startswith("#"):
                    found += tree.phandle_list(node, prop, cells)
    return found


def device_of(node: Node) -> Node | None:
    """The node a driver binds to: a pin-config group belongs to its pin controller, etc."""
    cur: Node | None = node
    while cur is not None and not cur.compatible:
        cur = cur.parent
    return cur if cur is not None and cur.parent is not None else None  # never the board's root node


def boot_devices(tree: Tree) -> dict[str, Node]:
    """The SD hosts and, recursively, everything they (and their parents) need, by path."""
    todo = list(sd_hosts(tree))
    seen: dict[str, Node] = {}
    while todo:
        node = todo.pop()
        dev = device_of(node)
        if dev is None or dev.path in seen:
            continue
        seen[dev.path] = dev
        for ref in references(tree, dev):
            # a provider that points back at its consumer (cprman's optional DSI parent clocks, DSI
            # clocked by cprman) is a cycle the kernel's fw_devlink ignores: not a probe dependency
            back = device_of(ref)
            if back is not None and dev not in [device_of(r) for r in references(tree, back)]:
                todo.append(ref)
        parent = dev.parent
        if parent is not None and set(parent.compatible) - BUS_COMPATIBLES:
            todo.append(parent)  # e.g. the GPIO expander is populated by the firmware node's driver
    return seen


@dataclass
class Kernel:
    """The image kernel's drivers: module name per OF alias pattern, built-in names, dependencies."""

    aliases: list[tuple[str, str]]  # (pattern, module)
    builtin: set[str]
    builtin_aliases: list[tuple[str, str]]
    deps: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def load(cls, moddir: Path) -> Kernel:
        aliases = []
        for line in (moddir / "modules.alias").read_text().splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[0] == "alias" and parts[1].startswith("of:"):
                aliases.append((parts[1], parts[2]))
        builtin = {modname(p) for p in (moddir / "modules.builtin").read_text().split()}
        builtin_aliases = []
        info = moddir / "modules.builtin.modinfo"
        for entry in info.read_bytes().split(b"\0") if info.exists() else []:
            key, _, value = entry.decode(errors="replace").partition("=")
            if "." in key:  # bool drivers (not in modules.builtin) still leave their modinfo here
                builtin.add(key.split(".", 1)[0])
            if key.endswith(".alias") and value.startswith("of:"):
                builtin_aliases.append((value, key.removesuffix(".alias")))
        deps = {}
        for line in (moddir / "modules.dep").read_text().splitlines():
            mod, _, rest = line.partition(":")
            deps[modname(mod)] = [modname(d) for d in rest.split()]
        return cls(aliases, builtin, builtin_aliases, deps)

    def drivers(self, compatible: str) -> tuple[set[str], set[str]]:
        """(modules, built-in drivers) whose OF table matches this compatible string."""
        key = f"of:N{'x'}T{'x'}C{compatible}"  # N/T are globbed in every alias; any value matches

        def match(table: list[tuple[str, str]]) -> set[str]:
            return {mod for pat, mod in table if fnmatch.fnmatchcase(key, pat)}

        return match(self.aliases), match(self.builtin_aliases)

    def closure(self, mods: set[str]) -> set[str]:
        """The modules plus everything they depend on (what modprobe loads)."""
        out, todo = set(), list(mods)
        while todo:
            m = todo.pop()
            if m not in out:
                out.add(m)
                todo += self.deps.get(m, [])
        return out


def modname(path: str) -> str:
    """kernel/drivers/mmc/host/sdhci-iproc.ko.xz -> sdhci_iproc (how modprobe names it)."""
    base = path.rsplit("/", 1)[-1]
    return re.sub(r"\.ko(\.(xz|zst|gz))?$", "", base).replace("-", "_")


@dataclass
class Need:
    """One device on the boot path and the drivers that could bind it."""

    path: str
    compatible: list[str]
    modules: set[str]
    builtin: bool


def needs(tree: Tree, kernel: Kernel) -> list[Need]:
    """Every boot-path device whose driver is a loadable module (and not also built in)."""
    out = []
    for path, node in sorted(boot_devices(tree).items()):
        mods: set[str] = set()
        builtin = False
        for compat in node.compatible:
            m, b = kernel.drivers(compat)
            mods |= m
            builtin |= bool(b) or bool(m & kernel.builtin)
        if mods or builtin:
            out.append(Need(path, node.compatible, mods - kernel.builtin, builtin))
    return out


def missing(tree: Tree, kernel: Kernel, in_initramfs: set[str]) -> list[str]:
    """Human-readable lines for each boot-path device no driver in the initramfs can bind."""
    lines = []
    for need in needs(tree, kernel):
        if need.builtin:
            continue
        if not need.modules & in_initramfs:
            lines.append(f"{need.path} ({need.compatible[0]}): needs {' or '.join(sorted(need.modules))}")
            continue
        for mod in need.modules & in_initramfs:
            lacking = kernel.closure({mod}) - in_initramfs - kernel.builtin
            if lacking:
                lines.append(
                    f"{need.path}: {mod} is in the initramfs but not its dependencies {sorted(lacking)}"
                )
    return lines


def cpio_members(data: bytes) -> tuple[list[str], int]:
    """The member names of the newc cpio archive at the start of data, and where it ends."""
    names: list[str] = []
    pos = 0
    while pos + 110 <= len(data) and data[pos : pos + 6] in (b"070701", b"070702"):
        size = int(data[pos + 54 : pos + 62], 16)
        namesize = int(data[pos + 94 : pos + 102], 16)
        name = data[pos + 110 : pos + 110 + namesize - 1].decode(errors="replace")
        pos = (pos + 110 + namesize + 3) & ~3
        pos = (pos + size + 3) & ~3
        if name == "TRAILER!!!":
            break
        names.append(name.removeprefix("./"))
    return names, pos


def initramfs_members(path: Path) -> list[str]:
    """Every file name in an initramfs: uncompressed early cpio(s), then the zstd (or gzip) main one."""
    data = path.read_bytes()
    names: list[str] = []
    while data[:6] in (b"070701", b"070702"):
        early, end = cpio_members(data)
        names += early
        data = data[end:].lstrip(b"\0")
    if data[:4] == b"\x28\xb5\x2f\xfd":
        data = subprocess.run(
            ["zstd", "-dc"], input=data, capture_output=True, timeout=120, check=True
        ).stdout
    elif data[:2] == b"\x1f\x8b":
        data = subprocess.run(
            ["gzip", "-dc"], input=data, capture_output=True, timeout=120, check=True
        ).stdout
    elif data:
        raise ValueError(f"unknown initramfs compression: {data[:4].hex()}")
    while data[:6] in (b"070701", b"070702"):
        more, end = cpio_members(data)
        names += more
        data = data[end:].lstrip(b"\0")
    return names


def initramfs_modules(path: Path) -> set[str]:
    """The kernel modules packed into an initramfs, by modprobe name."""
    return {modname(n) for n in initramfs_members(path) if re.search(r"\.ko(\.(xz|zst|gz))?$", n)}
