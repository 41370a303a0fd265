"""deploy.yml and approve.yml for real: a chroot deploy into a bookworm rootfs (twice: the second changes
nothing), that rootfs booted with systemd as PID 1 and paired through approve.yml with the real gateway on
loopback, and a deliberately broken release rolled back by the health gate."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.ansible.conftest import BROKEN_MARKER, Setup, write_inventory
from tests.support import nspawn
from tests.support.gateway import wait_for
from tests.support.node import NodeProcess

pytestmark = pytest.mark.timeout(600)
HOST = "board-1"
PREFIX = "/opt/edgeclaw"


def host_vars(setup: Setup, **extra: Any) -> dict[str, Any]:
    gw = setup.world.gw
    return {
        "edgeclaw_gateway_url": gw.url,
        "edgeclaw_hardware": "simulated",
        "edgeclaw_log_level": "debug",
        # the node retries a pending pairing every 2 s instead of 30 s, so approve.yml sees it quickly
        "edgeclaw_config_extra": {"gateway": {"pairing_retry_s": 2}},
        "edgeclaw_health_timeout": 45,
        **extra,
    }


deployed_state: dict[str, Any] = {}


@pytest.fixture(scope="module")
def deployed(setup: Setup) -> Path:
    """The rootfs after two chroot deploys (as an image build would run it); returns the overlay upper
    directory holding what Ansible wrote, to boot on top of the cached rootfs."""
    work = setup.tmp / "chroot"
    with nspawn.overlay([setup.rootfs], work) as (merged, upper):
        subprocess.run(["mount", "-t", "proc", "proc", str(merged / "proc")], check=True, timeout=30)
        try:
            vaulted = setup.ansible.encrypt(
                setup.src / "ansible", "edgeclaw_gateway_token", setup.world.gw.token
            )
            host = {"ansible_connection": "community.general.chroot", "ansible_host": str(merged)}
            inv = write_inventory(setup.tmp / "inv-chroot", {HOST: {**host, **host_vars(setup)}}, vaulted)
            t0 = time.monotonic()
            first = setup.ansible.run(setup.src / "ansible", "ansible-playbook", "-i", str(inv), "deploy.yml")
            assert first.rc == 0, first.output[-6000:]
            t1 = time.monotonic()
            second = setup.ansible.run(
                setup.src / "ansible", "ansible-playbook", "-i", str(inv), "deploy.yml"
            )
            assert second.rc == 0, second.output[-6000:]
            print(f"\n[ansible] chroot deploy: first {t1 - t0:.0f} s, second {time.monotonic() - t1:.0f} s")
            deployed_state.update(inspect_chroot(merged), first=first, second=second)
        finally:
            subprocess.run(["umount", str(merged / "proc")], check=False, timeout=30)
    return upper


def inspect_chroot(root: Path) -> dict[str, Any]:
    current = root / PREFIX.lstrip("/") / "current"
    token = root / "etc/edgeclaw/gateway.token"
    passwd = {line.split(":")[0]: line.split(":") for line in (root / "etc/passwd").read_text().splitlines()}
    return {
        "current": str(current.readlink()) if current.is_symlink() else None,
        "unit": (root / "etc/systemd/system/edgeclaw.service").read_text(),
        "enabled": (root / "etc/systemd/system/multi-user.target.wants/edgeclaw.service").is_symlink(),
        "config": (root / "etc/edgeclaw/config.yaml").read_text(),
        "token_mode": token.stat().st_mode & 0o777,
        "token_uid": token.stat().st_uid,
        "token_text": token.read_text().strip(),
        "edgeclaw_uid": int(passwd["edgeclaw"][2]) if "edgeclaw" in passwd else None,
        "releases": sorted(p.name for p in (root / PREFIX.lstrip("/") / "releases").iterdir()),
    }


def test_chroot_deploy_installs_and_second_run_changes_nothing(setup: Setup, deployed: Path) -> None:
    state = deployed_state
    assert state["first"].recap(HOST)["changed"] > 0
    assert state["second"].recap(HOST) | {"ok": 0, "skipped": 0} == {
        "ok": 0,
        "changed": 0,
        "unreachable": 0,
        "failed": 0,
        "skipped": 0,
        "rescued": 0,
        "ignored": 0,
    }, state["second"].output[-4000:]
    good = setup.good["release"]
    assert state["current"] == f"{PREFIX}/releases/{good}"
    assert state["releases"] == [good]
    assert f"ExecStart={PREFIX}/current/bin/edgeclaw --config /etc/edgeclaw/config.yaml run" in state["unit"]
    assert state["enabled"], "edgeclaw.service is not enabled in multi-user.target"
    # the vaulted token landed in a 0600 file owned by the service user, and nowhere in the output
    assert state["token_text"] == setup.world.gw.token
    assert state["token_mode"] == 0o600 and state["token_uid"] == state["edgeclaw_uid"]
    assert setup.world.gw.token not in state["first"].output + state["second"].output
    assert f"url: {setup.world.gw.url}" in state["config"] and f"display_name: {HOST}" in state["config"]


@pytest.fixture(scope="module")
def booted(setup: Setup, deployed: Path) -> Iterator[nspawn.Container]:
    gw = setup.world.ready()
    ct = nspawn.Container([deployed, setup.rootfs], setup.tmp / "ct")
    try:
        took = ct.boot()
        print(f"\n[ansible] deployed rootfs booted in {took:.2f} s")
        yield ct
    except BaseException:
        print(ct.console())
        raise
    finally:
        _ = gw
        ct.stop()


def node_status(ct: nspawn.Container) -> dict[str, Any]:
    proc = ct.exec(
        [f"{PREFIX}/current/bin/edgeclaw", "--config", "/etc/edgeclaw/config.yaml", "status", "--json"],
        check=False,
        timeout=30,
    )
    try:
        return dict(json.loads(proc.stdout))
    except ValueError:
        return {}


def nsenter_inventory(setup: Setup, ct: nspawn.Container, name: str, **extra: Any) -> Path:
    pid = ct._find_init()  # the container's PID 1 as seen from the host
    assert pid is not None
    vaulted = setup.ansible.encrypt(setup.src / "ansible", "edgeclaw_gateway_token", setup.world.gw.token)
    return write_inventory(
        setup.tmp / name,
        {
            HOST: {
                "ansible_connection": "community.docker.nsenter",
                "ansible_nsenter_pid": pid,
                "ansible_become": False,  # nsenter is root already, and the rootfs has no sudo
                **host_vars(setup, **extra),
            }
        },
        vaulted,
    )


def test_booted_node_waits_for_approval_then_approve_yml_pairs_only_inventory_devices(
    setup: Setup, booted: nspawn.Container, tmp_path: Path
) -> None:
    gw = setup.world.ready()
    ct = booted
    # started by systemd from the templated config, with the token: the gateway holds it pending
    st = wait_for(
        lambda: (s := node_status(ct)).get("connection") == "pairing-wait" and s,
        90,
        what="node waiting for pairing approval",
    )
    assert ct.show("edgeclaw", "ActiveState")["ActiveState"] == "active"
    assert st["display_name"] == HOST and st["gateway_url"] == gw.url
    board_id = st["device_id"]
    # a second device asks to pair too; it is not in the inventory
    stranger = NodeProcess(tmp_path / "stranger", gw, name="stranger")
    stranger.start()
    try:
        stranger_id = wait_for(
            lambda: stranger.state_dir.joinpath("identity.json").exists() and stranger.node_id,
            60,
            what="stranger identity",
        )
        wait_for(
            lambda: {board_id, stranger_id} <= {p.get("deviceId") for p in gw.pending_devices()},
            90,
            interval=1,
            what="both devices pending",
        )
        inv = nsenter_inventory(setup, ct, "inv-approve")
        extra = json.dumps(
            {"edgeclaw_openclaw_command": [str(gw.openclaw)], "edgeclaw_openclaw_environment": gw.env()}
        )
        t0 = time.monotonic()
        play = setup.ansible.run(
            setup.src / "ansible", "ansible-playbook", "-i", str(inv), "approve.yml", "-e", extra
        )
        print(f"\n[ansible] approve.yml: {time.monotonic() - t0:.0f} s")
        assert play.rc == 0, play.output[-6000:]
        # the board is paired, its command surface approved, and it is connected
        st = wait_for(
            lambda: (
                (s := node_status(ct)).get("connection") == "connected"
                and s.get("pairing") == "approved"
                and s
            ),
            60,
            what="board connected and approved",
        )
        assert "system.which" in st["commands"]
        # ... and the stranger is still pending, never approved
        pending = {p.get("deviceId") for p in gw.pending_devices()}
        assert stranger_id in pending and board_id not in pending
        assert stranger.live_status().get("connection") == "pairing-wait"
    finally:
        stranger.stop()


def test_config_change_reloads_without_restart(setup: Setup, booted: nspawn.Container) -> None:
    ct = booted
    before = ct.show("edgeclaw", "MainPID", "NRestarts")
    inv = nsenter_inventory(setup, ct, "inv-reload", edgeclaw_log_level="info")
    play = setup.ansible.run(setup.src / "ansible", "ansible-playbook", "-i", str(inv), "deploy.yml")
    assert play.rc == 0, play.output[-6000:]
    assert play.recap(HOST)["changed"] == 2, play.output[-4000:]  # config.yaml and the reload handler
    assert "RUNNING HANDLER [edgeclaw : Reload edgeclaw]" in play.output
    assert "RUNNING HANDLER [edgeclaw : Restart edgeclaw]" not in play.output
    assert "level: info" in ct.exec(["cat", "/etc/edgeclaw/config.yaml"]).stdout
    after = ct.show("edgeclaw", "MainPID", "NRestarts")
    assert after == before, "a config-only change must reload, not restart"
    assert node_status(ct).get("connection") == "connected"


def test_health_gate_rolls_back_a_broken_release(setup: Setup, booted: nspawn.Container) -> None:
    ct = booted
    good, broken = setup.good["release"], setup.broken["release"]
    before = ct.show("edgeclaw", "MainPID")["MainPID"]
    inv = nsenter_inventory(setup, ct, "inv-broken", edgeclaw_log_level="info", edgeclaw_health_timeout=20)
    t0 = time.monotonic()
    play = setup.ansible.run(setup.broken_src / "ansible", "ansible-playbook", "-i", str(inv), "deploy.yml")
    print(f"\n[ansible] broken release deploy + rollback: {time.monotonic() - t0:.0f} s")
    assert play.rc != 0, play.output[-6000:]
    assert play.recap(HOST)["failed"] == 1 and play.recap(HOST)["rescued"] == 1
    assert f"EdgeClaw {broken} failed the health gate" in play.output
    assert f"Rolled back to {good} (connected)" in play.output
    assert BROKEN_MARKER in play.output  # the journal lines say why
    # the board runs the previous release again, connected, and the broken venv is gone
    assert ct.exec(["readlink", f"{PREFIX}/current"]).stdout.strip() == f"{PREFIX}/releases/{good}"
    assert ct.exec(["ls", f"{PREFIX}/releases"]).stdout.split() == [good]
    st = wait_for(
        lambda: (s := node_status(ct)).get("connection") == "connected" and s, 60, what="reconnected"
    )
    assert st["pairing"] == "approved"
    assert ct.show("edgeclaw", "MainPID")["MainPID"] not in (before, "0")
