"""Triggers: config errors, schedule, threshold hysteresis on a fake thermal zone, cooldown and rate
limit, photos through the spool (on disk, ordered, bounded, aged, quarantined), backlog batching."""

from __future__ import annotations

import base64
import datetime as dt
import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from edgeclaw.capabilities.base import InvokeError
from edgeclaw.capabilities.triggers.config import ScheduleSource, ThresholdSource
from edgeclaw.capabilities.triggers.sources import Hysteresis, next_fire
from edgeclaw.capabilities.triggers.spool import Spool
from edgeclaw.config import parse_config
from edgeclaw.typedconfig import ConfigError
from tests.unit.test_gpio_capability import until
from tests.unit.triggerharness import JPEG, TriggerServices, start_triggers

BASE = {"gateway": {"url": "ws://127.0.0.1:1"}, "node": {"hardware": "simulated"}}


def config_error(triggers: dict[str, Any]) -> str:
    text = yaml.safe_dump({**BASE, "triggers": triggers}, sort_keys=False)
    with pytest.raises(ConfigError) as info:
        parse_config(text, file="/etc/edgeclaw/config.yaml")
    return str(info.value)


def test_config_mistakes_name_file_line_and_key() -> None:
    both = config_error({"rules": {"tick": {"source": {"schedule": {"every_s": 5, "at": "07:00"}}}}})
    assert both.startswith("/etc/edgeclaw/config.yaml:")
    assert "triggers.rules.tick.source.schedule" in both and "exactly one of every_s or at" in both
    assert "HH:MM" in config_error({"rules": {"t": {"source": {"schedule": {"at": "25:00"}}}}})
    two = config_error({"rules": {"t": {"source": {"schedule": {"every_s": 5}, "gpio": {"pin": "b"}}}}})
    assert "exactly one of" in two
    template = config_error(
        {"rules": {"t": {"source": {"schedule": {"every_s": 5}}, "message": "{node} {area}"}}}
    )
    assert "unknown field(s) ['area']" in template
    hyst = config_error(
        {"rules": {"hot": {"source": {"threshold": {"metric": "cpu_temp_c", "above": 70, "clear_at": 75}}}}}
    )
    assert "clear_at (75.0) must be <= above (70.0)" in hyst
    metric = config_error({"rules": {"t": {"source": {"threshold": {"metric": "fan_rpm", "above": 1}}}}})
    assert "triggers.rules.t.source.threshold.metric" in metric
    assert "lower-case" in config_error({"rules": {"Bad-Name": {"source": {"schedule": {"every_s": 5}}}}})
    unknown = config_error({"rules": {"t": {"source": {"schedule": {"every_s": 5}}, "cooldown": 5}}})
    assert "unknown key" in unknown and "cooldown_s" in unknown
    # camera_motion is checked by the watcher's own rules at load time, not by a crash-looping worker
    wide = config_error({"rules": {"yard": {"source": {"camera_motion": {"width": 1280}}}}})
    assert (
        wide.startswith("/etc/edgeclaw/config.yaml:") and "triggers.rules.yard.source.camera_motion" in wide
    )
    assert "width: must be an even whole number between 16 and 640" in wide
    odd = config_error({"rules": {"yard": {"source": {"camera_motion": {"height": 121}}}}})
    assert "height: must be an even whole number" in odd


def test_schedule_next_fire_every_and_time_of_day() -> None:
    now = time.time()
    assert next_fire(ScheduleSource(every_s=90), now) == pytest.approx(now + 90)
    jittered = next_fire(ScheduleSource(every_s=90, jitter_s=10), now)
    assert now + 90 <= jittered <= now + 100
    local = dt.datetime.fromtimestamp(now).astimezone()
    soon = local + dt.timedelta(minutes=2)
    at = next_fire(ScheduleSource(at=soon.strftime("%H:%M")), now)
    assert 0 < at - now <= 120 and dt.datetime.fromtimestamp(at).second == 0
    past = local - dt.timedelta(minutes=2)
    tomorrow = next_fire(ScheduleSource(at=past.strftime("%H:%M")), now)
    assert 23 * 3600 < tomorrow - now <= 24 * 3600 + 3600  # next day (DST may add an hour)


def test_hysteresis_fires_once_per_crossing() -> None:
    hyst = Hysteresis(ThresholdSource(metric="cpu_temp_c", above=70, clear_at=60))
    fired = [hyst.feed(v) for v in (50, 71, 80, 65, 72, 59, 71, 40)]
    assert fired == [False, True, False, False, False, False, True, False]
    low = Hysteresis(ThresholdSource(metric="disk_used_pct", below=10, clear_at=20))
    assert [low.feed(v) for v in (50, 9, 5, 15, 8, 25, 9)] == [False, True, False, False, False, False, True]


async def test_schedule_trigger_fires_on_time_and_shows_next_fire(tmp_path: Path) -> None:
    svc = TriggerServices(tmp_path)
    rules = {"tick": {"source": {"schedule": {"every_s": 1}}, "message": "tick {count} from {node}"}}
    started = time.time()
    cap = await start_triggers(svc, rules)
    try:
        await until(lambda: cap.status_report()["triggers"]["tick"]["next_fire"] is not None)
        assert cap.status_report()["triggers"]["tick"]["source"] == "schedule"
        await until(lambda: len(svc.sent) == 2, timeout=4)
        assert 1.9 <= time.time() - started <= 3.5
        assert [p["message"] for _, p in svc.sent] == ["tick 1 from Garage Pi", "tick 2 from Garage Pi"]
        assert cap.status_report()["triggers"]["tick"]["fired"] == 2
        assert "test/triggers/schedule-tick" in svc.supervisor.snapshot()
    finally:
        await cap.stop()


async def test_threshold_on_a_fake_thermal_zone_fires_once_per_crossing(tmp_path: Path) -> None:
    zone = tmp_path / "temp"
    zone.write_text("45000\n")
    svc = TriggerServices(tmp_path)
    rules = {
        "hot": {
            "source": {
                "threshold": {
                    "metric": "cpu_temp_c",
                    "above": 70,
                    "clear_at": 60,
                    "interval_s": 0.5,
                    "thermal_zone": str(zone),
                }
            },
            "message": "{node}: CPU at {value:.1f} °C (limit {limit:g})",
        }
    }
    seen: list[tuple[Any, int]] = []  # what a status.json write on each "reading" event would show
    svc.bus.subscribe(
        lambda name, f: (
            seen.append((cap.states["hot"].last_value, cap.states["hot"].fired))
            if f.get("outcome") == "reading"
            else None
        )
    )
    cap = await start_triggers(svc, rules)
    try:
        for milli, fires in ((75000, 1), (82000, 1), (65000, 1), (71000, 1), (55000, 1), (73000, 2)):
            zone.write_text(f"{milli}\n")
            await until(lambda m=milli: cap.states["hot"].last_value == m / 1000, timeout=3)
            assert cap.states["hot"].fired == fires, milli
            assert (milli / 1000, fires) in seen  # a reading is published with its fire, not before it
        await until(lambda: len(svc.sent) == 2)
        assert [p["message"] for _, p in svc.sent] == [
            "Garage Pi: CPU at 75.0 °C (limit 70)",
            "Garage Pi: CPU at 73.0 °C (limit 70)",
        ]
    finally:
        await cap.stop()


async def test_cooldown_and_rate_limit_suppress_and_count(tmp_path: Path) -> None:
    svc = TriggerServices(tmp_path, connected=False)
    rules = {
        "bell": {
            "source": {"schedule": {"every_s": 3600}},
            "cooldown_s": 5,
            "rate_limit": {"count": 2, "per_s": 60},
        }
    }
    cap = await start_triggers(svc, rules)
    try:
        t0 = time.time()
        admitted = [cap.admit("bell", t0 + dt_) for dt_ in (0, 1, 4.9, 6, 8, 20, 61, 62)]
        # 0 ok; 1, 4.9 cooldown; 6 ok (2nd in the minute); 8 cooldown; 20 rate; 61 ok (0 left the window);
        # 62 cooldown
        assert admitted == [True, False, False, True, False, False, True, False]
        state = cap.status_report()["triggers"]["bell"]
        assert state["fired"] == 3 and state["suppressed"] == 5
    finally:
        await cap.stop()


SNAP_RULE = {
    "source": {"schedule": {"every_s": 3600}},
    "actions": [
        {"snap": {"max_width": 640, "quality": 70}},
        {"read_device": ["cpu_temp_c", "memory.used_percent"]},
    ],
    "message": "{trigger}: cpu {device[cpu_temp_c]} °C, memory {device[memory.used_percent]} %",
    "session_key": "porch",
    "deliver": True,
    "channel": "telegram",
    "to": "12345",
}


async def test_photos_are_spooled_as_files_and_a_backlog_goes_out_as_one_ordered_request(
    tmp_path: Path,
) -> None:
    svc = TriggerServices(tmp_path, connected=False)
    svc.snap_sizes = [1000, 2000, 3000]
    cap = await start_triggers(svc, {"porch": SNAP_RULE})
    try:
        t0 = time.time() - 30
        for n in range(3):
            task = cap.fire("porch", t0 + n, {})
            await task
        spool = cap.spool
        assert [e.message for e in spool.entries] == ["porch: cpu 47.5 °C, memory 12.0 %"] * 3
        files = sorted(p.name for p in spool.media_dir.iterdir())
        assert len(files) == 3 and [p.stat().st_size for p in sorted(spool.media_dir.iterdir())] == [
            1000,
            2000,
            3000,
        ]
        on_disk = json.loads(spool.path.read_text())
        assert "content" not in json.dumps(on_disk)  # photos are files, not in the index
        snap = next(p for c, p in svc.local if c == "camera.snap")
        assert snap["maxWidth"] == 640 and snap["quality"] == pytest.approx(0.7)
        svc.connected = True
        await cap.on_session_ready()
        await until(lambda: len(svc.sent) == 1)
        event, payload = svc.sent[0]
        assert event == "agent.request"
        assert payload["sessionKey"] == "porch" and payload["deliver"] is True
        assert (payload["channel"], payload["to"]) == ("telegram", "12345")
        lines = payload["message"].splitlines()
        assert lines[0].startswith("3 events, oldest first")
        assert [line.split("] ", 1)[1] for line in lines[1:4]] == ["porch: cpu 47.5 °C, memory 12.0 %"] * 3
        assert [line.split(".")[0] for line in lines[1:4]] == ["1", "2", "3"]
        sizes = [len(base64.b64decode(a["content"])) for a in payload["attachments"]]
        assert sizes == [1000, 2000, 3000]  # in order
        assert {a["type"] for a in payload["attachments"]} == {"image"}
        assert {a["mimeType"] for a in payload["attachments"]} == {"image/jpeg"}
        assert all(a["fileName"].startswith("porch-") for a in payload["attachments"])
        assert list(spool.media_dir.iterdir()) == [] and spool.entries == []
        assert spool.counters.sent == 3 and spool.counters.requests == 1
    finally:
        await cap.stop()


async def test_media_cap_shrinks_a_photo_and_leaves_out_what_does_not_fit(tmp_path: Path) -> None:
    svc = TriggerServices(tmp_path, connected=False)
    svc.snap_sizes = [30_000, 9_000, 8_000, 8_000]  # first try too big for the cap, retried smaller
    cap = await start_triggers(svc, {"porch": SNAP_RULE}, media_max_bytes=10_000)
    try:
        for n in range(3):
            await cap.fire("porch", time.time() - 10 + n, {})
        snaps = [p for c, p in svc.local if c == "camera.snap"]
        assert len(snaps) == 4 and snaps[1]["maxWidth"] < snaps[0]["maxWidth"]
        assert snaps[1]["quality"] < snaps[0]["quality"]
        svc.connected = True
        await cap.on_session_ready()
        await until(lambda: len(svc.sent) == 1)
        payload = svc.sent[0][1]
        assert [len(base64.b64decode(a["content"])) for a in payload["attachments"]] == [9_000]
        assert "2 photo(s) left out to stay under the 10000 byte media cap" in payload["message"]
    finally:
        await cap.stop()


async def test_photos_stay_under_the_gateways_own_image_and_frame_limits(tmp_path: Path) -> None:
    """A generous media_max_bytes (the gateway's mediaMaxMb can be 20) must not produce a photo over the
    gateway's 6 MiB image limit or a batch over its frame: it would drop the whole request silently."""
    svc = TriggerServices(tmp_path, connected=False)
    svc.snap_sizes = [7_000_000, 5_000_000]
    cap = await start_triggers(svc, {"porch": SNAP_RULE}, media_max_bytes=40_000_000)
    try:
        for n in range(5):
            await cap.fire("porch", time.time() - 10 + n, {})
        assert len([c for c, _ in svc.local if c == "camera.snap"]) == 6  # the first retaken smaller
        svc.connected = True
        await cap.on_session_ready()
        await until(lambda: len(svc.sent) >= 1, 10)
        payload = svc.sent[0][1]
        sizes = [len(base64.b64decode(a["content"])) for a in payload["attachments"]]
        assert sizes == [5_000_000, 5_000_000, 5_000_000]  # 18 MB per request at most
        assert "2 photo(s) left out to stay under the 18000000 byte media cap" in payload["message"]
    finally:
        await cap.stop()


async def test_a_failed_snap_does_not_stop_the_request(tmp_path: Path) -> None:
    svc = TriggerServices(tmp_path)
    svc.snap_error = InvokeError("CAMERA_UNAVAILABLE", "no camera")
    cap = await start_triggers(svc, {"porch": {**SNAP_RULE, "actions": [{"snap": {}}]}})
    try:
        await cap.fire("porch", time.time(), {})
        await until(lambda: len(svc.sent) == 1)
        payload = svc.sent[0][1]
        assert payload["message"].endswith("(photo unavailable: CAMERA_UNAVAILABLE)")
        assert "attachments" not in payload
    finally:
        await cap.stop()


def test_spool_is_bounded_aged_and_removes_photos_it_drops(tmp_path: Path) -> None:
    spool = Spool.open(tmp_path, max_entries=2, max_age=40)
    now = time.time()
    for n in range(4):
        spool.add(
            now - 150 + n * 50, "t", f"m{n}", "k", photos=[(JPEG + bytes([n]), f"p{n}.jpg", "image/jpeg")]
        )
    assert [e.message for e in spool.entries] == ["m2", "m3"]
    assert spool.counters.dropped_overflow == 2 and len(list(spool.media_dir.iterdir())) == 2
    assert spool.expire(now) == 1  # m2 is 50 s old
    assert [e.message for e in spool.entries] == ["m3"] and len(list(spool.media_dir.iterdir())) == 1
    assert spool.counters.unreported_drops == 3
    assert spool.path.stat().st_mode & 0o077 == 0


def test_spool_survives_a_crash_quarantines_bad_entries_and_drops_orphan_photos(tmp_path: Path) -> None:
    spool = Spool.open(tmp_path, 10, 3600)
    now = time.time()
    spool.add(now, "t", "first", "k", photos=[(JPEG, "a.jpg", "image/jpeg")])
    spool.add(now, "t", "second", "k")
    # a crash after a photo was written but before the index named it, and a hand-damaged entry
    (spool.media_dir / "00000099-0.bin").write_bytes(b"orphan")
    doc = json.loads(spool.path.read_text())
    doc["entries"].insert(
        1, {"id": 50, "ts": "yesterday", "trigger": "t", "message": "x", "session_key": "k"}
    )
    spool.path.write_text(json.dumps(doc))
    again = Spool.open(tmp_path, 10, 3600)
    assert [e.message for e in again.entries] == ["first", "second"]
    assert again.read_media(again.entries[0].attachments[0]) == JPEG
    assert sorted(p.name for p in again.media_dir.iterdir()) == [again.entries[0].attachments[0].file]
    assert again.counters.quarantined == 1
    kept = json.loads((tmp_path / "triggers-spool.json.quarantine").read_text())
    assert [e["message"] for e in kept] == ["x"]
    assert again.add(now, "t", "third", "k").id == 3  # ids continue


async def test_refused_request_is_dropped_counted_and_told_once(tmp_path: Path) -> None:
    svc = TriggerServices(tmp_path)
    svc.refuse.append(InvokeError("INVALID_REQUEST", "nope"))
    rules = {"a": {"source": {"schedule": {"every_s": 3600}}, "message": "a{count}"}}
    cap = await start_triggers(svc, rules)
    try:
        await cap.fire("a", time.time(), {"count": 1})
        await until(lambda: cap.spool.counters.dropped_rejected == 1)
        await cap.fire("a", time.time(), {"count": 2})
        await cap.fire("a", time.time(), {"count": 3})
        await until(lambda: cap.spool.counters.sent == 2)
        messages = [p["message"] for _, p in svc.sent]
        assert sum("1 earlier trigger event(s) were dropped" in m for m in messages) == 1
        assert cap.spool.counters.unreported_drops == 0
    finally:
        await cap.stop()


async def test_motion_source_runs_a_supervised_watcher_that_fires(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from edgeclaw.capabilities.camera import motion
    from edgeclaw.capabilities.triggers import capability

    class FakeWatcher:
        def __init__(self, settings: Any, camera: Any, on_motion: Any, *, simulated: bool, runtime_dir: str):
            self.settings, self.on_motion = settings, on_motion

        async def run(self) -> None:
            self.on_motion(motion.MotionEvent(ts=time.time(), area=0.25, frames=7))
            await __import__("asyncio").sleep(3600)

        def stats(self) -> dict[str, Any]:
            return {"frames": 7, "detections": 1}

    monkeypatch.setattr(motion, "MotionWatcher", FakeWatcher)
    monkeypatch.setattr(capability, "MOTION_STATUS_S", 0.05)
    svc = TriggerServices(tmp_path)
    watching: list[str] = []
    svc.bus.subscribe(lambda name, f: watching.append(name) if f.get("outcome") == "watching" else None)
    rules = {"yard": {"source": {"camera_motion": {"min_area": 0.1}}, "message": "motion {area}"}}
    cap = await start_triggers(svc, rules)
    try:
        await until(lambda: len(svc.sent) == 1)
        assert svc.sent[0][1]["message"] == "motion 0.25"
        assert cap.status_report()["motion"]["yard"] == {"frames": 7, "detections": 1}
        assert "test/triggers/motion-yard" in svc.supervisor.snapshot()
        # frames and worker RSS change without events: status.json is refreshed while a watcher runs
        await until(lambda: len(watching) >= 2)
    finally:
        await cap.stop()


async def test_reload_applies_new_rules_and_refuses_an_impossible_one(tmp_path: Path) -> None:
    from tests.unit.triggerharness import triggers_config

    svc = TriggerServices(tmp_path, camera=False)
    rules = {"a": {"source": {"schedule": {"every_s": 3600}}}}
    cap = await start_triggers(svc, rules)
    try:
        cap.admit("a", time.time())
        await cap.reload(triggers_config({**rules, "b": {"source": {"schedule": {"every_s": 7200}}}}))
        assert set(cap.states) == {"a", "b"} and cap.states["a"].fired == 1  # counters kept
        with pytest.raises(ValueError, match="camera"):
            await cap.reload(triggers_config({"c": {**SNAP_RULE}}))
        assert set(cap.rules) == {"a", "b"}
    finally:
        await cap.stop()


async def test_status_and_telemetry_show_each_trigger(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from edgeclaw.cli import _print_status
    from edgeclaw.platform.metrics import Metrics, Snapshot

    svc = TriggerServices(tmp_path, connected=False)
    rules = {"tick": {"source": {"schedule": {"every_s": 600}}, "cooldown_s": 60}}
    cap = await start_triggers(svc, rules)
    try:
        await until(lambda: cap.states["tick"].next_fire is not None)
        now = time.time()
        await cap.fire("tick", now, {"count": 1})
        assert cap.fire("tick", now + 1, {"count": 2}) is None  # cooldown
        report = cap.status_report()
        _print_status({"capabilities": {"triggers": report}})
        line = capsys.readouterr().out
        assert "tick: fired 1, suppressed 1, last " in line and ", next " in line
        assert "spool 1 pending" in line
        text = Metrics(node_id="n", version="v").render(Snapshot(triggers=report))
        assert 'edgeclaw_trigger_fires_total{trigger="tick"} 1' in text
        assert 'edgeclaw_trigger_suppressed_total{trigger="tick"} 1' in text
        assert "edgeclaw_trigger_next_fire_timestamp_seconds{trigger=" in text
        assert "edgeclaw_trigger_spool_pending 1" in text
    finally:
        await cap.stop()
