"""Services for the triggers capability in unit tests: the real GPIO capability (MockFactory) on the
same bus, and invoke_local answering camera.snap with a real JPEG header and gpio.read from the pins."""

from __future__ import annotations

import base64
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from edgeclaw.capabilities.base import InvokeContext, InvokeError
from edgeclaw.capabilities.camera import Config as CameraConfig
from edgeclaw.capabilities.gpio.config import Config as GpioConfig
from edgeclaw.capabilities.triggers import create
from edgeclaw.capabilities.triggers.config import Config
from edgeclaw.typedconfig import build
from tests.unit.test_gpio_capability import FakeServices

# a tiny but real JPEG (SOI, APP0, EOI): the triggers only move the bytes
JPEG = bytes.fromhex("ffd8ffe000104a46494600010100000100010000ffd9")


class TriggerServices(FakeServices):
    def __init__(
        self, tmp: Path, *, connected: bool = True, gpio: dict[str, Any] | None = None, camera: bool = True
    ) -> None:
        super().__init__(tmp, connected=connected)
        caps: dict[str, Any] = {
            "gpio": build(GpioConfig, gpio or {"enabled": False}, path="gpio"),
            "camera": build(CameraConfig, {"enabled": camera}, path="camera"),
        }
        self.config = SimpleNamespace(runtime_dir=tmp / "run", capabilities=caps)
        self.local: list[tuple[str, dict[str, Any]]] = []
        self.snap_sizes: list[int] = [len(JPEG)]  # bytes of successive snaps (the last repeats)
        self.snap_error: InvokeError | None = None
        self.gpio_cap: Any = None

    async def invoke_local(self, command: str, params: dict[str, Any], *, timeout: float = 10.0) -> Any:
        self.local.append((command, params))
        if command == "camera.snap":
            if self.snap_error is not None:
                raise self.snap_error
            size = self.snap_sizes.pop(0) if len(self.snap_sizes) > 1 else self.snap_sizes[0]
            data = JPEG[:-2] + b"\0" * max(0, size - len(JPEG)) + JPEG[-2:]
            return {"format": "jpg", "base64": base64.b64encode(data).decode(), "width": 4, "height": 3}
        if command == "gpio.read" and self.gpio_cap is not None:
            ctx = InvokeContext("l", command, params, deadline=1e18, timeout_ms=int(timeout * 1000))
            return await self.gpio_cap.handlers()[command](ctx)
        if command == "device.status":
            return {"cpu_temperature_c": 47.5, "memory": {"used_percent": 12.0}}
        raise InvokeError("UNKNOWN_COMMAND", f"this node does not implement {command!r}")


def triggers_config(rules: dict[str, Any] | None = None, **extra: Any) -> Config:
    return build(Config, {"rules": rules or {}, **extra}, path="triggers")


async def start_triggers(svc: TriggerServices, rules: dict[str, Any] | None = None, **extra: Any) -> Any:
    cap = create(triggers_config(rules, **extra), svc)
    await cap.start()
    return cap
