"""`device.identify`: blink the board's activity LED (or a configured GPIO output) for N seconds, then
put it back exactly as it was, so an owner can tell which board in a rack the agent means.

The LED is driven through /sys/class/leds/<led>/{trigger,brightness}: its trigger (mmc0, heartbeat,
…) and brightness are saved — in memory and in `<state_dir>/identify-restore.json`, so a node killed
mid-blink restores it at its next start — the trigger set to `none`, the brightness toggled, and on every
way out (done, cancelled, the invoke deadline, node stop, a write failing) the trigger and brightness are
written back. A GPIO pin is driven through the GPIO capability's own `gpio.read`/`gpio.write` commands
(in-process), never its internals, so its allowlist of pins and safe states still apply.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("edgeclaw.diagnostics")

MIN_S = 1
BLINK_PERIOD_S = 0.25  # on/off every quarter second: unmistakable next to a steady or mmc-flicker LED
AUTO_LEDS = ("ACT", "led0")
RESTORE_FILE = "identify-restore.json"

LocalInvoke = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]


class IdentifyError(Exception):
    """Nothing to blink, or the blinking failed (the message says why and what to configure)."""


def find_led(setting: str, leds_dir: Path) -> Path | None:
    """`auto`: ACT, else led0 (the activity LED on Raspberry Pi OS kernels); a name under leds_dir; or
    an absolute path; "" = no LED."""
    if not setting:
        return None
    if setting == "auto":
        for name in AUTO_LEDS:
            if (leds_dir / name / "brightness").exists():
                return leds_dir / name
        return None
    path = Path(setting) if setting.startswith("/") else leds_dir / setting
    return path if (path / "brightness").exists() else None


def current_trigger(text: str) -> str:
    """`none rc-feedback [mmc0] timer` → mmc0 (the kernel brackets the active one)."""
    words = text.split()
    for word in words:
        if word.startswith("[") and word.endswith("]"):
            return word[1:-1]
    return words[0] if len(words) == 1 else "none"


@dataclass(frozen=True)
class LedState:
    trigger: str
    brightness: int


class Led:
    def __init__(self, path: Path) -> None:
        self.path = path

    def _read(self, name: str) -> str:
        return (self.path / name).read_text(encoding="ascii", errors="replace").strip()

    def _write(self, name: str, value: str) -> None:
        with open(self.path / name, "w", encoding="ascii") as fh:
            fh.write(value)

    def state(self) -> LedState:
        trigger = current_trigger(self._read("trigger")) if (self.path / "trigger").exists() else "none"
        return LedState(trigger, int(self._read("brightness") or 0))

    def max_brightness(self) -> int:
        try:
            return max(1, int(self._read("max_brightness")))
        except (OSError, ValueError):
            return 1

    def set(self, on: bool, top: int) -> None:
        self._write("brightness", str(top if on else 0))

    def take(self) -> None:
        if (self.path / "trigger").exists():
            self._write("trigger", "none")

    def restore(self, saved: LedState) -> None:
        """Trigger first; the brightness only for `none` (writing it under a trigger would end the trigger)."""
        if (self.path / "trigger").exists():
            self._write("trigger", saved.trigger)
        if saved.trigger == "none":
            self._write("brightness", str(saved.brightness))


class Identifier:
    """One blink at a time; `blink()` returns when it is over and the LED/pin is back as it was."""

    def __init__(
        self,
        *,
        led_setting: str,
        leds_dir: Path,
        pin: str | None,
        local_invoke: LocalInvoke | None,
        state_dir: Path,
    ) -> None:
        self.led_setting = led_setting
        self.leds_dir = leds_dir
        self.pin = pin
        self.local_invoke = local_invoke
        self.restore_file = state_dir / RESTORE_FILE
        self.busy = False
        self.stop_now = asyncio.Event()  # node stopping: end the blink early (restored)

    def target(self) -> str:
        if self.pin:
            return f"gpio pin {self.pin}"
        led = find_led(self.led_setting, self.leds_dir)
        if led is None:
            raise IdentifyError(
                f"no LED to blink ({self.led_setting or 'none configured'} under {self.leds_dir}); set "
                "diagnostics.identify_led to an LED in /sys/class/leds or diagnostics.identify_pin to a gpio output"
            )
        return f"led {led}"

    async def blink(self, seconds: float) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        started = loop.time()
        if self.pin:
            toggles = await self._blink_pin(seconds)
        else:
            toggles = await self._blink_led(seconds)
        return {"blinked_s": round(loop.time() - started, 2), "toggles": toggles}

    async def _wait(self, seconds: float) -> bool:
        """Sleep one period; True when the node is stopping."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop_now.wait(), seconds)
            return True
        return False

    async def _blink_led(self, seconds: float) -> int:
        path = find_led(self.led_setting, self.leds_dir)
        if path is None:
            raise IdentifyError(self.target())
        led = Led(path)
        saved = led.state()
        top = led.max_brightness()
        self._save(path, saved)
        loop = asyncio.get_running_loop()
        end = loop.time() + seconds
        toggles = 0
        try:
            led.take()
            on = saved.brightness == 0  # first toggle visibly changes it
            while loop.time() < end:
                led.set(on, top)
                toggles += 1
                on = not on
                if await self._wait(min(BLINK_PERIOD_S, max(0.0, end - loop.time()))):
                    break
        except OSError as exc:
            raise IdentifyError(f"cannot drive {path}: {exc.strerror or exc}") from None
        finally:
            try:
                led.restore(saved)
                self.restore_file.unlink(missing_ok=True)
                log.info(
                    "identify: %s back to trigger %s, brightness %d",
                    path.name,
                    saved.trigger,
                    saved.brightness,
                )
            except OSError as exc:  # the file stays: the next start tries again
                log.error("identify: restoring %s failed: %s", path, exc)
        return toggles

    async def _blink_pin(self, seconds: float) -> int:
        if self.local_invoke is None:
            raise IdentifyError("the gpio capability is not running")
        assert self.pin is not None
        call = self.local_invoke
        try:
            before = await call("gpio.read", {"name": self.pin})
        except Exception as exc:
            raise IdentifyError(f"cannot read gpio pin {self.pin}: {exc}") from None
        value = 1 if before.get("value") else 0
        loop = asyncio.get_running_loop()
        end = loop.time() + seconds
        toggles = 0
        try:
            on = value == 0
            while loop.time() < end:
                await call("gpio.write", {"name": self.pin, "value": 1 if on else 0})
                toggles += 1
                on = not on
                if await self._wait(min(BLINK_PERIOD_S, max(0.0, end - loop.time()))):
                    break
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            raise IdentifyError(f"cannot drive gpio pin {self.pin}: {exc}") from None
        finally:
            # shielded: a cancel must not stop the restore half-way
            with contextlib.suppress(Exception):
                await asyncio.shield(call("gpio.write", {"name": self.pin, "value": value}))
        return toggles

    # a node killed mid-blink ---------------------------------------------------------------------------
    def _save(self, path: Path, saved: LedState) -> None:
        doc = {"led": str(path), "trigger": saved.trigger, "brightness": saved.brightness}
        tmp = self.restore_file.with_suffix(".tmp")
        with contextlib.suppress(OSError):
            tmp.write_text(json.dumps(doc))
            os.replace(tmp, self.restore_file)

    def recover(self) -> str | None:
        """At start: an LED left blinking by a node that died mid-blink is put back; what was done."""
        try:
            doc = json.loads(self.restore_file.read_text())
            path = Path(str(doc["led"]))
            saved = LedState(str(doc["trigger"]), int(doc["brightness"]))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("identify: ignoring an unreadable %s: %s", self.restore_file, exc)
            self.restore_file.unlink(missing_ok=True)
            return None
        try:
            Led(path).restore(saved)
        except OSError as exc:
            log.error("identify: restoring %s after a restart failed: %s", path, exc)
            return None
        self.restore_file.unlink(missing_ok=True)
        return f"{path.name} restored to trigger {saved.trigger} after an interrupted identify"
