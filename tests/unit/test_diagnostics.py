"""Diagnostics commands (issue 19 item 2) on a unit level: edgeclaw.logs redaction attacks (ring and a fake
journalctl the test controls: hanging, garbage, flooding), parameter errors, caps; device.identify on a
fake /sys/class/leds (toggles, restore on done/cancel/deadline/stop/crash-restart, one at a time, a GPIO
pin through gpio.write); edgeclaw.doctor as JSON without secrets; the published tools."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import re
import secrets
import stat
import time
import urllib.parse
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from edgeclaw.capabilities.base import InvokeContext, InvokeError
from edgeclaw.capabilities.diagnostics import Config, create
from edgeclaw.capabilities.diagnostics.logs import MAX_BYTES
from edgeclaw.platform import events
from edgeclaw.platform.logsetup import REDACTOR, RING, LogRing
from edgeclaw.platform.redact import PIECE, Redactor
from edgeclaw.typedconfig import build
from tests.unit.test_gpio_capability import FakeServices
from tests.unit.test_gpio_capability import started as gpio_started

pytestmark = pytest.mark.timeout(60)


def b64url(n: int) -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(n)).decode().rstrip("=")


class Secrets:
    """Fresh secrets shaped like the real ones."""

    def __init__(self) -> None:
        self.gateway_token = secrets.token_hex(24)  # what `openclaw` writes as gateway.auth.token
        self.device_token = b64url(32)
        self.bootstrap_token = b64url(32)
        self.setup_code = "oc-pair://" + base64.urlsafe_b64encode(
            json.dumps({"url": "ws://127.0.0.1:18789", "bootstrapToken": self.bootstrap_token}).encode()
        ).decode().rstrip("=")
        self.seed = secrets.token_bytes(32)
        self.device_id = secrets.token_hex(32)

    def all(self) -> list[str]:
        return [
            self.gateway_token,
            self.device_token,
            self.bootstrap_token,
            self.setup_code.removeprefix("oc-pair://"),
            base64.b64encode(self.seed).decode(),
            self.seed.hex(),
        ]


def leaks(text: str, secret: str) -> list[str]:
    """Every PIECE-long window of the secret (and of its URL-encoded form) found in text."""
    found = []
    for form in {secret, urllib.parse.quote(secret, safe="")}:
        for i in range(len(form) - PIECE + 1):
            if form[i : i + PIECE] in text:
                found.append(form[i : i + PIECE])
    return found


class DiagServices(FakeServices):
    def __init__(self, tmp: Path, s: Secrets, *, config_path: str = "") -> None:
        super().__init__(tmp)
        self.node_id = s.device_id
        self.config = SimpleNamespace(
            runtime_dir=tmp / "run", gateway_token=s.gateway_token, setup_code=None, path=config_path
        )
        self.local: Any = None

    async def invoke_local(
        self, command: str, params: dict[str, Any], *, timeout: float = 5.0
    ) -> dict[str, Any]:
        assert self.local is not None
        handler = self.local.handlers()[command]
        return await handler(make_ctx(command, params, timeout))


def make_ctx(command: str, params: dict[str, Any], timeout: float = 30.0) -> InvokeContext:
    return InvokeContext(
        invoke_id="i",
        command=command,
        params=params,
        deadline=asyncio.get_running_loop().time() + timeout,
        timeout_ms=int(timeout * 1000),
    )


def diag_config(**values: Any) -> Config:
    return build(Config, values, path="diagnostics")


async def diag(tmp: Path, s: Secrets | None = None, **values: Any) -> tuple[Any, DiagServices]:
    svc = DiagServices(tmp, s or Secrets())
    values.setdefault("leds_dir", str(tmp / "leds"))
    cap = create(diag_config(**values), svc)
    await cap.start()
    return cap, svc


async def call(cap: Any, command: str, timeout: float = 30.0, **params: Any) -> Any:
    return await cap.handlers()[command](make_ctx(command, params, timeout))


async def code_of(cap: Any, command: str, **params: Any) -> str:
    with pytest.raises(InvokeError) as info:
        await call(cap, command, **params)
    return info.value.code


@pytest.fixture
def ring() -> Any:
    """The process ring, attached to the root logger for this test (setup_logging does it in the node)."""
    root = logging.getLogger()
    old_level = root.level
    root.setLevel(logging.DEBUG)
    root.addHandler(RING)
    RING.entries.clear()
    yield RING
    root.removeHandler(RING)
    root.setLevel(old_level)
    RING.entries.clear()


def seed_log(log: logging.Logger, s: Secrets) -> None:
    """Every way a secret has reached a log line in the wild."""
    half = len(s.device_token) // 2
    quoted = urllib.parse.quote(s.gateway_token + "+/=", safe="")
    log.info("connecting with token %s", s.gateway_token)
    log.info("hello-ok: deviceToken=%s", s.device_token)
    log.info('{"auth": {"deviceToken": "%s", "bootstrapToken": "%s"}}', s.device_token, s.bootstrap_token)
    log.warning("setup code %s refused", s.setup_code)
    log.warning("setup code (url-encoded) %s", urllib.parse.quote(s.setup_code, safe=""))
    log.info("GET /x?token=%s&x=1", quoted)
    log.info("Authorization: Bearer %s", s.device_token)
    log.info("headers {'authorization': 'Bearer %s'}", s.gateway_token)
    log.info("seed %s / %s", base64.b64encode(s.seed).decode(), s.seed.hex())
    log.info(
        "key -----BEGIN PRIVATE KEY-----\n%s\n-----END PRIVATE KEY-----", base64.b64encode(s.seed).decode()
    )
    log.info("token split: %s", s.device_token[:half])  # one secret across two lines
    log.info("%s (continued)", s.device_token[half:])
    log.error("boom", exc_info=RuntimeError(f"refused token {s.gateway_token}"))
    log.info("device %s connected", s.device_id)  # public: stays readable


def assert_clean(text: str, s: Secrets) -> None:
    for secret in s.all():
        assert not leaks(text, secret), (secret, leaks(text, secret), text[:3000])
    # a split secret leaves at most PIECE-1 characters on either side of the break
    assert "oc-pair://" not in text or "oc-pair://[redacted]" in text


# edgeclaw.logs: redaction -----------------------------------------------------------------------------
async def test_logs_from_memory_never_return_a_token_key_or_setup_code(tmp_path: Path, ring: LogRing) -> None:
    """The attack: the node's real secrets are in its log in every form; none comes back. The device
    token is registered with the logging filter as the node does; the rest are known only to the
    capability (config, pairing) or not at all (a seed): the read-side redaction must catch them."""
    s = Secrets()
    REDACTOR.add(s.device_token)
    cap, _ = await diag(tmp_path, s)
    try:
        seed_log(logging.getLogger("edgeclaw.test"), s)
        out = await call(cap, "edgeclaw.logs", lines=1000)
        text = json.dumps(out)
        assert out["source"] == "memory" and out["count"] >= 14
        assert_clean(text, s)
        assert s.device_id in text  # the device id is public and operators need it
        assert "[redacted]" in text and "(continued)" in text and "RuntimeError" in text
    finally:
        await cap.stop()


def test_redactor_pieces_catch_split_and_encoded_secrets() -> None:
    s = Secrets()
    r = Redactor([s.gateway_token, s.device_token], public=[s.device_id])
    half = 17
    lines = [f"a {s.device_token[:half]}", f"{s.device_token[half:]} b", f"x={s.gateway_token[:5]}"]
    joined = "\n".join(r.redact_lines(lines))
    assert not leaks(joined, s.device_token)
    b64 = base64.b64encode(s.gateway_token.encode()).decode()
    assert not leaks(r.redact(f"basic {b64}"), b64)
    assert r.redact(f"id {s.device_id}") == f"id {s.device_id}"
    other_hex = secrets.token_hex(32)
    assert other_hex not in r.redact(f"seed {other_hex}")
    # ordinary log text is left alone
    plain = "gpio write: relay = 1 (invoke 3f1c2d9e-8a41-4a55-9d35-0c1b2a3e4f50) in 12 ms at /var/lib/edgeclaw/state"
    assert r.redact(plain) == plain


# edgeclaw.logs: parameters and caps --------------------------------------------------------------------
@pytest.mark.parametrize(
    "params",
    [
        {"lines": 0},
        {"lines": 1001},
        {"lines": "50"},
        {"lines": True},
        {"level": "loud"},
        {"level": 3},
        {"since": "yesterday-ish"},
        {"since": -5},
        {"since": True},
        {"since": "2999-01-01T00:00:00Z"},
        {"tail": 5},
    ],
)
async def test_bad_logs_params_are_invalid_request(tmp_path: Path, params: dict[str, Any]) -> None:
    cap, _ = await diag(tmp_path)
    try:
        assert await code_of(cap, "edgeclaw.logs", **params) == "INVALID_REQUEST"
    finally:
        await cap.stop()


async def test_logs_caps_level_and_since(tmp_path: Path, ring: LogRing) -> None:
    cap, _ = await diag(tmp_path)
    log = logging.getLogger("edgeclaw.cap")
    try:
        for i in range(1200):
            log.info("line %04d %s", i, "x" * 200)
        out = await call(cap, "edgeclaw.logs", lines=1000)
        size = sum(len(line.encode()) + 1 for line in out["lines"])
        assert size <= MAX_BYTES and out["truncated"] is True
        assert out["lines"][-1].endswith("x" * 200) and "line 1199" in out["lines"][-1]  # newest kept
        few = await call(cap, "edgeclaw.logs", lines=3)
        assert [ln.split("line ")[1][:4] for ln in few["lines"]] == ["1197", "1198", "1199"]
        log.warning("a warning")
        log.error("an error")
        warn = await call(cap, "edgeclaw.logs", level="warning", lines=10)
        assert [ln.split(": ", 1)[1] for ln in warn["lines"]] == ["a warning", "an error"]
        assert " WARNING " in warn["lines"][0] and " ERROR " in warn["lines"][1]
        time.sleep(0.05)
        mark = time.time()
        time.sleep(0.05)
        log.info("after the mark")
        iso = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(mark)) + f".{int(mark % 1 * 1000):03d}Z"
        newer = await call(cap, "edgeclaw.logs", since=iso)
        assert [ln.split(": ", 1)[1] for ln in newer["lines"]] == ["after the mark"]
        assert (await call(cap, "edgeclaw.logs", since="1m", lines=1))["lines"][0].endswith("after the mark")
    finally:
        await cap.stop()


# edgeclaw.logs: a fake journalctl ----------------------------------------------------------------------
def fake_journalctl(tmp: Path, body: str) -> Path:
    """A `journalctl` on PATH that records its argv and pid, then runs `body` (sh)."""
    bin_dir = tmp / "bin"
    bin_dir.mkdir(exist_ok=True)
    script = bin_dir / "journalctl"
    script.write_text(f'#!/bin/sh\necho "$$" > {tmp}/jc.pid\nprintf "%s\\n" "$@" > {tmp}/jc.argv\n{body}\n')
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return bin_dir


def journal_entries(tmp: Path, messages: list[tuple[int, str]]) -> Path:
    path = tmp / "journal.json"
    now = int(time.time() * 1_000_000)
    with open(path, "w") as fh:
        for i, (prio, msg) in enumerate(messages):
            fh.write(
                json.dumps({"MESSAGE": msg, "PRIORITY": str(prio), "__REALTIME_TIMESTAMP": str(now + i)})
                + "\n"
            )
    return path


@pytest.fixture
def under_systemd(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    def use(body: str) -> None:
        bin_dir = fake_journalctl(tmp_path, body)
        monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
        monkeypatch.setenv("INVOCATION_ID", "0123456789abcdef0123456789abcdef")

    return use


async def test_logs_read_the_units_journal_redacted(tmp_path: Path, under_systemd: Any) -> None:
    s = Secrets()
    path = journal_entries(
        tmp_path,
        [
            (6, f"edgeclaw.node: hello with {s.gateway_token}"),
            (4, f"edgeclaw.node: setup code {s.setup_code}"),
            (3, f"child printed deviceToken={s.device_token}"),
            (6, f"edgeclaw.node: device {s.device_id} approved"),
        ],
    )
    under_systemd(f"cat {path}")
    cap, _ = await diag(tmp_path, s, journal_unit="edgeclaw.service")
    REDACTOR.add(s.device_token)  # as the node's credentials do once it has one
    try:
        out = await call(cap, "edgeclaw.logs", lines=50, level="warning", since="2h")
        argv = (tmp_path / "jc.argv").read_text().split("\n")
        assert argv[:2] == ["-u", "edgeclaw.service"] and "-o" in argv and "json" in argv
        assert argv[argv.index("-n") + 1] == "50" and argv[argv.index("-p") + 1] == "4"
        since = argv[argv.index("--since") + 1]
        assert since.startswith("@") and abs(int(since[1:]) - (time.time() - 7200)) < 5
        assert out["source"] == "journal" and out["unit"] == "edgeclaw.service" and out["count"] == 4
        text = json.dumps(out)
        assert_clean(text, s)
        assert s.device_id in text and " ERROR child printed" in text
    finally:
        await cap.stop()


async def test_a_user_outside_the_journal_groups_gets_memory_and_is_told_why(
    tmp_path: Path, under_systemd: Any, ring: LogRing, monkeypatch: pytest.MonkeyPatch
) -> None:
    """journalctl run by such a user shows nothing of a system unit and exits 0: an empty journal is not
    an answer (the hardened unit's user, before the operator opts in)."""
    path = journal_entries(tmp_path, [(6, "from the journal")])
    under_systemd(f"cat {path}")
    monkeypatch.setattr(os, "geteuid", lambda: 4242)
    monkeypatch.setattr(os, "getegid", lambda: 4242)
    monkeypatch.setattr(os, "getgroups", lambda: [4242])
    cap, _ = await diag(tmp_path, journal_unit="edgeclaw.service")
    logging.getLogger("edgeclaw.t").info("from memory")
    try:
        out = await call(cap, "edgeclaw.logs")
        assert out["source"] == "memory" and any(ln.endswith("from memory") for ln in out["lines"])
        assert "not in group systemd-journal" in out["notes"][0]
        assert not (tmp_path / "jc.argv").exists()  # journalctl was not asked for what it cannot give
    finally:
        await cap.stop()


async def test_a_hanging_journalctl_is_killed_and_memory_answers(
    tmp_path: Path, under_systemd: Any, ring: LogRing
) -> None:
    under_systemd("sleep 30")
    cap, _ = await diag(tmp_path, journal_timeout_s=0.5)
    logging.getLogger("edgeclaw.t").info("from memory")
    try:
        t0 = time.monotonic()
        out = await call(cap, "edgeclaw.logs")
        assert time.monotonic() - t0 < 5
        assert out["source"] == "memory" and "did not finish within 0.5 s" in out["notes"][0]
        assert any(ln.endswith("from memory") for ln in out["lines"])
        pid = int((tmp_path / "jc.pid").read_text())
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    finally:
        await cap.stop()


async def test_journalctl_garbage_is_skipped_and_a_flood_is_capped(
    tmp_path: Path, under_systemd: Any
) -> None:
    good = json.dumps({"MESSAGE": "fine", "PRIORITY": "6", "__REALTIME_TIMESTAMP": "1700000000000000"})
    binary = json.dumps(
        {"MESSAGE": list(b"bytes \xff ok"), "PRIORITY": "4", "__REALTIME_TIMESTAMP": "1700000000000001"}
    )
    under_systemd(
        f"echo 'not json'; echo '[1,2]'; printf '\\001\\377garbage\\n'; echo '{good}'; "
        f'echo \'{{"MESSAGE": 5}}\'; echo \'{binary}\'; echo \'{{"MESSAGE": "x", "PRIORITY": "zz"}}\''
    )
    cap, _ = await diag(tmp_path)
    try:
        out = await call(cap, "edgeclaw.logs")
        assert out["source"] == "journal" and out["skipped"] == 5
        assert [ln.split(" ", 2)[2] for ln in out["lines"]] == ["fine", "bytes \ufffd ok"]
    finally:
        await cap.stop()
    # a journalctl that never stops printing: read up to the cap, killed, answer within MAX_BYTES
    under_systemd(f"while :; do echo '{good}'; done")
    cap, _ = await diag(tmp_path)
    try:
        out = await call(cap, "edgeclaw.logs", lines=1000)
        assert out["source"] == "journal" and "more than" in out["notes"][0]
        assert out["count"] == 1000 and sum(len(x) + 1 for x in out["lines"]) <= MAX_BYTES
    finally:
        await cap.stop()


# device.identify ----------------------------------------------------------------------------------------
def fake_led(tmp: Path, name: str = "ACT", trigger: str = "none rc-feedback [mmc0] timer heartbeat") -> Path:
    led = tmp / "leds" / name
    led.mkdir(parents=True)
    (led / "trigger").write_text(trigger + "\n")
    (led / "brightness").write_text("0\n")
    (led / "max_brightness").write_text("255\n")
    return led


def led_state(led: Path) -> tuple[str, str]:
    return (led / "trigger").read_text().strip(), (led / "brightness").read_text().strip()


async def sample(led: Path, seconds: float) -> set[tuple[str, str]]:
    seen = set()
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        seen.add(led_state(led))
        await asyncio.sleep(0.02)
    return seen


async def test_identify_blinks_the_act_led_and_restores_its_trigger(tmp_path: Path) -> None:
    led = fake_led(tmp_path)
    cap, svc = await diag(tmp_path)
    try:
        task = asyncio.ensure_future(call(cap, "device.identify", seconds=1))
        seen = await sample(led, 0.8)
        assert {("none", "255"), ("none", "0")} <= seen  # trigger taken, brightness toggled
        out = await asyncio.wait_for(task, 5)
        assert out["restored"] is True and out["toggles"] >= 3 and out["cut_short"] is None
        assert out["target"].endswith("/leds/ACT")
        assert led_state(led)[0] == "mmc0"  # the activity trigger is back
        assert not (svc.state_dir / "identify-restore.json").exists()
        assert "device_identify" in {t["name"] for t in cap.plugin_tools()}
    finally:
        await cap.stop()


async def test_identify_restores_on_cancel_deadline_and_stop(tmp_path: Path) -> None:
    led = fake_led(tmp_path, "led0", trigger="[none] mmc0")
    (led / "brightness").write_text("255\n")  # `none` + on: brightness is restored too
    cap, svc = await diag(tmp_path)
    try:
        # cancelled (node.invoke.cancel)
        task = asyncio.ensure_future(call(cap, "device.identify", seconds=30))
        await asyncio.sleep(0.4)
        assert led_state(led)[0] == "none" and task.done() is False
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert led_state(led) == ("none", "255")
        # the invoke deadline comes first: the blink ends before it, restored
        t0 = time.monotonic()
        out = await call(cap, "device.identify", timeout=1.5, seconds=60)
        assert time.monotonic() - t0 < 1.5 and out["cut_short"] == "invoke deadline"
        assert led_state(led) == ("none", "255")
        # one at a time
        task = asyncio.ensure_future(call(cap, "device.identify", seconds=30))
        await asyncio.sleep(0.3)
        assert await code_of(cap, "device.identify", seconds=1) == "IDENTIFY_BUSY"
        # the node stops (drain begins: STATE stopping) mid-blink
        svc.bus.emit(events.STATE, state="stopping", detail="")
        out = await asyncio.wait_for(task, 3)
        assert out["cut_short"] == "node stopping" and led_state(led) == ("none", "255")
    finally:
        await cap.stop()
    assert led_state(led) == ("none", "255")


async def test_a_node_killed_mid_blink_restores_the_led_at_its_next_start(tmp_path: Path) -> None:
    led = fake_led(tmp_path)
    s = Secrets()
    cap, svc = await diag(tmp_path, s)
    (svc.state_dir / "identify-restore.json").write_text(
        json.dumps({"led": str(led), "trigger": "heartbeat", "brightness": 0})
    )
    (led / "trigger").write_text("none\n")
    await cap.stop()
    cap2 = create(diag_config(leds_dir=str(tmp_path / "leds")), svc)
    await cap2.start()
    try:
        assert led_state(led)[0] == "heartbeat"
        assert not (svc.state_dir / "identify-restore.json").exists()
    finally:
        await cap2.stop()


async def test_identify_params_and_missing_led(tmp_path: Path) -> None:
    cap, _ = await diag(tmp_path)  # no LED under leds_dir
    try:
        assert await code_of(cap, "device.identify", seconds=0) == "INVALID_REQUEST"
        assert await code_of(cap, "device.identify", seconds=121) == "INVALID_REQUEST"
        assert await code_of(cap, "device.identify", seconds="5") == "INVALID_REQUEST"
        assert await code_of(cap, "device.identify", blink=True) == "INVALID_REQUEST"
        assert await code_of(cap, "device.identify", seconds=2) == "IDENTIFY_UNAVAILABLE"
        assert "device_identify" not in {t["name"] for t in cap.plugin_tools()}
    finally:
        await cap.stop()


async def test_identify_a_gpio_pin_through_gpio_write(tmp_path: Path) -> None:
    (tmp_path / "g").mkdir()
    gpio, _ = await gpio_started(tmp_path / "g", pins={"beacon": {"pin": "GPIO5", "kind": "output"}})
    cap, svc = await diag(tmp_path, identify_pin="beacon")
    svc.local = gpio
    seen: set[int] = set()
    try:
        task = asyncio.ensure_future(call(cap, "device.identify", seconds=1))
        end = time.monotonic() + 0.8
        while time.monotonic() < end:
            seen.add(int(gpio.pins["beacon"].device.pin.state))
            await asyncio.sleep(0.02)
        out = await asyncio.wait_for(task, 5)
        assert seen == {0, 1} and out["target"] == "gpio pin beacon" and out["restored"]
        assert gpio.pins["beacon"].device.pin.state == 0  # back to where it was
    finally:
        await cap.stop()
        await gpio.stop()


# edgeclaw.doctor ----------------------------------------------------------------------------------------
async def test_doctor_returns_its_checks_as_json_without_secrets(tmp_path: Path) -> None:
    s = Secrets()
    token_file = tmp_path / "gateway.token"
    token_file.write_text(s.gateway_token + "\n")
    token_file.chmod(0o600)
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "gateway": {"url": "ws://127.0.0.1:9", "token_file": str(token_file), "connect_timeout_s": 2},
                "node": {
                    "display_name": "doc",
                    "state_dir": str(tmp_path / "state"),
                    "runtime_dir": str(tmp_path / "run"),
                    "hardware": "simulated",
                },
            }
        )
    )
    svc = DiagServices(tmp_path, s, config_path=str(config))
    cap = create(diag_config(leds_dir=str(tmp_path / "leds")), svc)
    await cap.start()
    try:
        out = await call(cap, "edgeclaw.doctor")
        ids = {c["id"] for c in out["checks"]}
        assert {"config", "board"} <= ids, ids
        assert all(
            c["status"] in ("pass", "warn", "fail") and c["name"] and "detail" in c for c in out["checks"]
        )
        gateway = [c for c in out["checks"] if c["status"] == "fail"]
        assert gateway and all(c["fix"] for c in gateway) and out["ok"] is False  # nothing listens on :9
        assert out["counts"]["fail"] == len(gateway)
        assert s.gateway_token not in json.dumps(out)
        assert await code_of(cap, "edgeclaw.doctor", verbose=True) == "INVALID_REQUEST"
    finally:
        await cap.stop()


# tools --------------------------------------------------------------------------------------------------
async def test_tools_fit_the_gateways_rules(tmp_path: Path) -> None:
    fake_led(tmp_path)
    cap, _ = await diag(tmp_path)
    try:
        tools = cap.plugin_tools()
        assert {t["name"] for t in tools} == {"edgeclaw_logs", "edgeclaw_doctor", "device_identify"}
        assert {t["command"] for t in tools} == set(cap.handlers())
        for t in tools:
            assert re.match(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$", t["name"]) and len(t["description"]) <= 1024
            assert t["parameters"]["type"] == "object" and t["parameters"]["additionalProperties"] is False
    finally:
        await cap.stop()
    off = create(diag_config(enabled=False), DiagServices(tmp_path, Secrets()))
    assert off.handlers() == {} and off.plugin_tools() == []
