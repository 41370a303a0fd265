"""A small reader of flattened device trees (.dtb), so the image tier needs no `dtc`.

Enough to walk a board's tree the way the kernel does when it probes the SD card: nodes by path,
properties as bytes, phandle references resolved, `status` honoured.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

FDT_MAGIC = 0xD00DFEED
BEGIN_NODE, END_NODE, PROP, NOP, END = 1, 2, 3, 4, 9


@dataclass
class Node:
    """One device-tree node: its full path, its properties and its children."""

    path: str
    props: dict[str, bytes] = field(default_factory=dict)
    children: list[Node] = field(default_factory=list)
    parent: Node | None = None

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1] or "/"

    def strings(self, prop: str) -> list[str]:
        """A string-list property (e.g. `compatible`), [] when absent."""
        raw = self.props.get(prop)
        return [s.decode() for s in raw.split(b"\0") if s] if raw else []

    def cells(self, prop: str) -> list[int]:
        """A property read as big-endian 32-bit cells, [] when absent."""
        raw = self.props.get(prop, b"")
        return list(struct.unpack(f">{len(raw) // 4}I", raw[: len(raw) // 4 * 4]))

    @property
    def compatible(self) -> list[str]:
        return self.strings("compatible")

    @property
    def enabled(self) -> bool:
        """The kernel probes a node whose status is absent, "okay" or "ok"."""
        status = self.strings("status")
        return not status or status[0] in ("okay", "ok")


class Tree:
    """A parsed .dtb: every node by path and by phandle."""

    def __init__(self, data: bytes) -> None:
        magic, total, off_struct, off_strings = struct.unpack_from(">4I", data, 0)
        if magic != FDT_MAGIC:
            raise ValueError("not a flattened device tree (bad magic)")
        if total > len(data):
            raise ValueError("truncated device tree")
        self.nodes: dict[str, Node] = {}
        self.by_phandle: dict[int, Node] = {}
        strings = data[off_strings:]
        pos = off_struct
        stack: list[Node] = []
        while True:
            (token,) = struct.unpack_from(">I", data, pos)
            pos += 4
            if token == BEGIN_NODE:
                end = data.index(b"\0", pos)
                name = data[pos:end].decode()
                pos = (end + 1 + 3) & ~3
                parent = stack[-1] if stack else None
                path = "/" if parent is None else f"{parent.path.rstrip('/')}/{name}"
                node = Node(path=path, parent=parent)
                if parent is not None:
                    parent.children.append(node)
                self.nodes[path] = node
                stack.append(node)
            elif token == END_NODE:
                stack.pop()
            elif token == PROP:
                length, nameoff = struct.unpack_from(">II", data, pos)
                pos += 8
                pname = strings[nameoff : strings.index(b"\0", nameoff)].decode()
                stack[-1].props[pname] = data[pos : pos + length]
                pos = (pos + length + 3) & ~3
            elif token == NOP:
                continue
            elif token == END:
                break
            else:
                raise ValueError(f"bad device-tree token {token} at {pos - 4}")
        for node in self.nodes.values():
            for key in ("phandle", "linux,phandle"):
                if key in node.props:
                    self.by_phandle[node.cells(key)[0]] = node

    @classmethod
    def load(cls, path: Path) -> Tree:
        return cls(path.read_bytes())

    @property
    def root(self) -> Node:
        return self.nodes["/"]

    def phandle_list(self, node: Node, prop: str, cells_prop: str | None) -> list[Node]:
        """The providers a `<&a args… &b args…>` property points at.

        The number of argument cells after each phandle is the provider's `cells_prop` (#clock-cells,
        #gpio-cells…); None means a plain list of phandles (pinctrl-N, *-supply, mmc-pwrseq).
        """
        cells = node.cells(prop)
        found: list[Node] = []
        i = 0
        while i < len(cells):
            provider = self.by_phandle.get(cells[i])
            i += 1
            if provider is None:  # a zero (empty) entry, or a dangling reference
                continue
            found.append(provider)
            if cells_prop is not None:
                i += (provider.cells(cells_prop) or [0])[0]
        return found
