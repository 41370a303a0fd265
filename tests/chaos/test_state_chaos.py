"""Chaos: the state directory is full (a tiny tmpfs), then read-only, at the moment the gateway issues the
device token (in the hello-ok after the device is approved). The identity must stay intact and loadable,
the node must say what is wrong (a coded log line and `edgeclaw status`), keep serving invokes on the live
connection, and store the token by itself once the directory takes writes again — no new pairing."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import stat
import subprocess
import time
from pathlib import Path

import pytest

from edgeclaw.platform.state import StateDir
from tests.support.gateway import Gateway, Operator, invoke_payload, only_loopback, wait_for
from tests.support.node import NodeProcess

TMPFS_SIZE = "256k"


def mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True, capture_output=True, timeout=30)


def fill(directory: Path) -> Path:
    """Write zeros until the file system says ENOSPC; returns the filler file."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC, exc
    finally:
        os.close(fd)
    return filler


def snapshot_identity(state_dir: Path) -> tuple[bytes, int]:
    path = state_dir / "identity.json"
    return path.read_bytes(), stat.S_IMODE(path.stat().st_mode)


async def serves(gateway: Gateway, node_id: str) -> None:
    async with Operator(gateway) as op:
        for _ in range(5):
            frame = await op.invoke(node_id, "system.which", {"bins": ["sh"]}, timeout_ms=10000)
            details = (frame.get("error") or {}).get("details") or {}
            # the gateway's own pairing-state lookup failed before it dispatched anything (seen once, on
            # a loaded box, right after a reconnect): the node never saw that invoke; ask again
            if frame.get("ok") or details.get("nodeCommandDispatched") is not False:
                break
            await asyncio.sleep(1.0)
        assert "sh" in invoke_payload(frame)["bins"], frame


@pytest.mark.timeout(240)
async def test_token_arrives_while_state_dir_is_full_then_read_only(gateway: Gateway, tmp_path: Path) -> None:
    if os.geteuid() != 0 or not only_loopback():
        pytest.skip("mounts a tmpfs: needs root in the gateway tier's private mount namespace")
    node = NodeProcess(tmp_path / "full", gateway, name="chaos-state-full")
    node.state_dir.mkdir(mode=0o700)
    mount("-t", "tmpfs", "-o", f"size={TMPFS_SIZE},mode=0700", "tmpfs", str(node.state_dir))
    try:
        node.start()
        node_id = wait_for(
            lambda: (node.state_dir / "identity.json").exists() and node.node_id, 30, what="identity"
        )
        pending = await asyncio.to_thread(
            wait_for,
            lambda: [p for p in gateway.pending_devices() if p.get("deviceId") == node_id],
            60,
            1,
            "pending device pairing",
        )
        identity_before = snapshot_identity(node.state_dir)
        filler = fill(node.state_dir)
        offset = len(node.log())
        # the device token is issued in the hello-ok that follows this approval
        await asyncio.to_thread(gateway.approve_device, pending[0]["requestId"])
        await asyncio.to_thread(
            node.wait_log, "STATE_WRITE_FAILED: cannot store the device token", 60, after=offset
        )
        line = next(x for x in node.log()[offset:].splitlines() if "cannot store the device token" in x)
        assert "(ENOSPC)" in line and "free space" in line, line
        assert "retries every" in line, line
        wait_for(lambda: node.live_status().get("connection") == "connected", 30, what="connected")
        # the surface approval, then the live connection serves invokes
        surface = await asyncio.to_thread(
            wait_for,
            lambda: [p for p in gateway.pending_nodes() if p.get("nodeId") == node_id],
            60,
            1,
            "pending node surface",
        )
        await asyncio.to_thread(gateway.approve_node, surface[0]["requestId"])
        wait_for(lambda: node.live_status().get("pairing") == "approved", 30, what="surface approved")
        await serves(gateway, node_id)

        # what the user sees: `edgeclaw status` names the problem and the fix; nothing half-written
        shown = await asyncio.to_thread(node.status)
        assert "STATE_WRITE_FAILED" in (shown.get("state_error") or ""), shown
        assert "STATE_WRITE_FAILED" in shown["status_line"] and "ENOSPC" in shown["status_line"], shown
        token_problem = next(p for p in shown["state_error"].split(" | ") if "device token" in p)
        token_problem = token_problem.replace(str(node.state_dir), "<state_dir>")
        assert not (node.state_dir / "device-token.json").exists()
        assert not [p.name for p in node.state_dir.iterdir() if ".tmp-" in p.name]
        assert snapshot_identity(node.state_dir) == identity_before
        assert StateDir(node.state_dir).load_identity().device_id == node_id

        # read-only as well now: the status follows the new problem
        mount("-o", "remount,ro", str(node.state_dir))
        wait_for(
            lambda: "EROFS" in (node.live_status().get("state_error") or ""), 30, what="read-only reported"
        )
        await serves(gateway, node_id)
        assert snapshot_identity(node.state_dir) == identity_before

        # writable again and space freed: stored at the next retry, without a new pairing
        mount("-o", "remount,rw", str(node.state_dir))
        filler.unlink()
        freed = time.monotonic()
        await asyncio.to_thread(
            node.wait_log, "stored the device token issued by the gateway", 30, after=offset
        )
        stored_after = time.monotonic() - freed
        token_path = node.state_dir / "device-token.json"
        assert stat.S_IMODE(token_path.stat().st_mode) == 0o600
        wait_for(lambda: not node.live_status().get("state_error"), 10, what="state error cleared")
        assert snapshot_identity(node.state_dir) == identity_before

        # the stored token alone is enough: no shared token, a restart, no pairing request
        assert node.stop() == 0
        del node.config["gateway"]["token_file"]
        node.write_config()
        offset = len(node.log())
        node.start()
        wait_for(lambda: node.live_status().get("connection") == "connected" or node._dead(), 30, what="back")
        assert not node._dead(), node.log()[-3000:]
        await serves(gateway, node_id)
        assert not [
            p for p in await asyncio.to_thread(gateway.pending_devices) if p.get("deviceId") == node_id
        ]
        assert "pairing required" not in node.log()[offset:]
        print(
            f"\n[figure] state dir full ({TMPFS_SIZE} tmpfs) then read-only when the device token arrived: "
            f"identity byte-identical (0{identity_before[1]:o}), status said {token_problem!r}, "
            f"invokes served throughout; token stored {stored_after:.1f} s after space was freed (retry "
            f"every 10 s), reused alone after a restart without re-pairing"
        )
    finally:
        node.stop()
        with contextlib.suppress(Exception):
            mount("-o", "remount,rw", str(node.state_dir))
        with contextlib.suppress(Exception):
            subprocess.run(["umount", "-l", str(node.state_dir)], check=False, timeout=30)
