"""The README's first command, run as a new user would: scripts/demo.py brings up the real gateway and a
node on a simulated board and prints a menu; every printed command is run exactly as printed (a shell,
from the directory the user is in) and does what the menu says — a photo from the camera, GPIO, the
doorbell trigger's photo and message stored by the gateway (its own chat history and media store), the
diagnostics commands — no printed line is long or carries a secret, and Ctrl-C stops everything.

--host-network: this test already runs in a loopback-only network namespace (scripts/test.sh), so the
demo does not make its own; the wrappers it writes differ only by the `ip netns exec` prefix.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from tests.support.gateway import wait_for
from tests.support.node import child_pids

pytestmark = pytest.mark.gateway

ROOT = Path(__file__).resolve().parents[2]
PIECE = 10  # a secret leaks if any 10 characters of it show


class Demo:
    """scripts/demo.py as a child process, its output collected by a reader thread."""

    def __init__(self, cwd: Path) -> None:
        self.cwd = cwd
        self.run_dir = cwd / "run" / "demo"
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "scripts" / "demo.py"), "--host-network", "--run-dir", "run/demo"],
            cwd=cwd,
            env={**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def text(self) -> str:
        return "\n".join(self.lines)

    def wait_menu(self, timeout: float) -> None:
        wait_for(
            lambda: any(x.startswith("node log:") for x in self.lines) or self.proc.poll() is not None,
            timeout,
            what="the demo's menu",
        )
        assert self.proc.poll() is None, f"demo exited:\n{self.text()}"

    def commands(self) -> list[str]:
        return [x.strip() for x in self.lines if x.startswith("  run/demo/")]


def sh(command: str, cwd: Path, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    """A printed command, pasted into a shell."""
    proc = subprocess.run(
        ["bash", "-c", command],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, (
        f"{command!r} failed ({proc.returncode}):\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}"
    )
    return proc


def payload(out: str) -> Any:
    doc = json.loads(out[out.find("{") :])
    assert doc.get("ok") is True, doc
    return doc["payload"]


def stored_photo(out: str) -> str | None:
    """The requests output once it lists a stored photo."""
    return out if "bytes:" in out else None


def leaked(text: str, secret: str) -> list[str]:
    return [secret[i : i + PIECE] for i in range(len(secret) - PIECE + 1) if secret[i : i + PIECE] in text]


def jpeg_size(data: bytes) -> tuple[int, int]:
    """Width and height from a baseline/progressive JPEG's SOF marker (the file must really be one)."""
    assert data[:3] == b"\xff\xd8\xff" and data.rstrip(b"\x00")[-2:] == b"\xff\xd9", "not a complete JPEG"
    i = 2
    while i + 9 < len(data):
        assert data[i] == 0xFF, f"bad marker at {i}"
        marker, length = data[i + 1], int.from_bytes(data[i + 2 : i + 4], "big")
        if marker in (0xC0, 0xC1, 0xC2):
            return int.from_bytes(data[i + 7 : i + 9], "big"), int.from_bytes(data[i + 5 : i + 7], "big")
        i += 2 + length
    raise AssertionError("no SOF marker")


def test_the_demo_menu_works_as_printed(tmp_path: Path) -> None:
    demo = Demo(tmp_path)
    started: list[int] = []
    try:
        demo.wait_menu(240)
        started = child_pids(demo.proc.pid)
        assert len(started) == 2, started  # the gateway and the node
        cmds = demo.commands()
        assert len(cmds) >= 10, demo.text()
        long = [x for x in demo.lines if len(x) > 100]
        assert not long, long

        gw_config = json.loads((demo.run_dir / "gateway" / "openclaw.json").read_text())
        token = gw_config["gateway"]["auth"]["token"]
        node_state = demo.run_dir / "node" / "state"
        device_token = json.loads((node_state / "device-token.json").read_text())["token"]
        node_log = (demo.run_dir / "node" / "node.log").read_text()
        declared = re.search(r"declaring \d+ commands: (.*)", node_log)
        assert declared, node_log[-3000:]
        # the allowlist is exactly what this board declares beyond the gateway's Linux defaults
        # (system.* and camera.list are served to a Linux node without an entry: checked live against
        # 2026.9.6; the rest of what this board declares is withheld without one)
        allow = set(gw_config["gateway"]["nodes"]["commands"]["allow"])
        defaults = {"camera.list"}
        expected = {c for c in declared.group(1).split(", ") if not c.startswith("system.")} - defaults
        assert allow == expected, allow ^ expected

        outputs: dict[str, str] = {}
        for cmd in cmds:
            if cmd.endswith("/requests"):
                # the gateway stores the trigger's turn asynchronously: look again, as a user would
                out = wait_for(
                    lambda c=cmd: stored_photo(sh(c, tmp_path).stdout),
                    60,
                    interval=2,
                    what="the doorbell's request in the gateway's chat history",
                )
            else:
                out = sh(cmd, tmp_path).stdout
            outputs[cmd.split("/")[-1]] = out

        described = outputs["openclaw nodes describe --node edgeclaw-demo"]
        assert "approved" in described and "connected" in described
        # nothing the board declares is withheld: the gateway lists every allow-listed command as served
        served = set(re.findall(r"^- (\S+)$", described, re.M))
        assert allow <= served, allow - served
        snap = Path(outputs["openclaw nodes camera snap --node edgeclaw-demo"].strip().splitlines()[-1])
        assert jpeg_size(snap.read_bytes())[0] <= 1600
        assert payload(outputs['invoke gpio.read \'{"name":"door"}\''])["state"] == "closed"
        assert payload(outputs['invoke gpio.pulse \'{"name":"relay","ms":500}\''])["restored_to"] == 0
        # the doorbell: the gateway's own record holds the message (door opened by `set door on`) and the
        # photo it stored, a real 1280x720 JPEG
        requests = outputs["requests"]
        assert "someone rang the doorbell" in requests and "the door is open" in requests, requests
        photo = tmp_path / requests.split("bytes: ")[1].split()[0]
        assert photo.resolve().is_relative_to((demo.run_dir / "gateway" / "state" / "media").resolve())
        assert jpeg_size(photo.read_bytes()) == (1280, 720)
        logs = payload(outputs["invoke edgeclaw.logs '{\"lines\":10}'"])
        assert any("agent.request sent: 1 event(s), 1 photo(s)" in x for x in logs["lines"]), logs
        assert payload(outputs["invoke edgeclaw.doctor"])["counts"]["fail"] == 0
        blink = payload(outputs["invoke device.identify '{\"seconds\":3}'"])
        assert blink["target"] == "gpio pin led" and blink["toggles"] >= 4 and blink["restored"] is True
        assert "doorbell: fired 1" in outputs["status"]

        shown = demo.text() + "".join(outputs.values())
        shown += "".join(p.read_text() for p in demo.run_dir.iterdir() if p.is_file())  # the wrappers
        for secret in (token, device_token):
            assert not leaked(shown, secret), "a secret was printed or written into a wrapper"
        assert "oc-pair://" not in shown and "Bearer" not in shown
        gw_logs = "".join(p.read_text(errors="replace") for p in (demo.run_dir / "gateway").glob("gateway*"))
        assert "surface withheld" not in gw_logs
    finally:
        if demo.proc.poll() is None:
            demo.proc.send_signal(signal.SIGINT)  # Ctrl-C
        try:
            code = demo.proc.wait(60)
        except subprocess.TimeoutExpired:
            demo.proc.kill()
            code = demo.proc.wait(10)
        left = [pid for pid in started if Path(f"/proc/{pid}").exists()]
        for pid in left:  # only what the demo started, if it left anything behind
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    assert code == 0, demo.text()
    assert "demo stopped." in demo.text()
    assert not left, f"the demo left running: {left}"
