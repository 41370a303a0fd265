"""A trigger's actions, run through the node's own commands (services.invoke_local): a photo from
camera.snap sized to the gateway's media cap, pin states from gpio.read, fields from device.status.
A failed action never stops the request: the message says what failed."""

from __future__ import annotations

import base64
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from edgeclaw.capabilities.base import InvokeError, NodeServices
from edgeclaw.capabilities.triggers.config import Rule, SnapAction

log = logging.getLogger("edgeclaw.triggers.actions")

SNAP_TIMEOUT_S = 20.0
READ_TIMEOUT_S = 5.0
MAX_SNAP_TRIES = 4


@dataclass
class ActionResult:
    pins: dict[str, Any] = field(default_factory=dict)
    device: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # what failed, in words for the agent
    photos: list[tuple[bytes, str, str]] = field(default_factory=list)  # (jpeg, file name, mime)


class _Missing(dict[str, Any]):
    """pins[...] / device[...] for a read that failed: the template still renders."""

    def __missing__(self, key: str) -> str:
        return "unknown"


async def snap(services: NodeServices, action: SnapAction, media_max_bytes: int) -> bytes:
    """camera.snap at the configured width/quality, smaller until the JPEG fits media_max_bytes."""
    width, quality = action.max_width, action.quality / 100
    last = 0
    for _ in range(MAX_SNAP_TRIES):
        params: dict[str, Any] = {"format": "jpg", "maxWidth": width, "quality": max(0.05, quality)}
        if action.device:
            params["deviceId"] = action.device
        result = await services.invoke_local("camera.snap", params, timeout=SNAP_TIMEOUT_S)
        data = base64.b64decode(result.get("base64") or "")
        if not data:
            raise InvokeError("CAMERA_UNAVAILABLE", "camera.snap returned no image")
        if len(data) <= media_max_bytes:
            return data
        last = len(data)
        width, quality = max(64, int(width * 0.7)), quality * 0.7
    raise InvokeError(
        "MEDIA_TOO_LARGE", f"the photo is {last} bytes even small; the cap is {media_max_bytes}"
    )


def _pick(doc: dict[str, Any], path: str) -> Any:
    """device.status field by name; `cpu_temp_c` is the short name of cpu_temperature_c, dots go deeper."""
    path = {"cpu_temp_c": "cpu_temperature_c"}.get(path, path)
    value: Any = doc
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return "unknown"
        value = value[part]
    return value


async def run_actions(
    services: NodeServices, trigger: str, rule: Rule, media_max_bytes: int, ts: float
) -> ActionResult:
    out = ActionResult(pins=_Missing(), device=_Missing())
    for action in rule.actions:
        if action.snap is not None:
            try:
                data = await snap(services, action.snap, media_max_bytes)
                stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(ts))
                out.photos.append((data, f"{trigger}-{stamp}.jpg", "image/jpeg"))
            except InvokeError as exc:
                out.notes.append(f"(photo unavailable: {exc.code})")
                log.warning("trigger %s: snap failed: %s", trigger, exc)
        for pin in action.read_pins or []:
            try:
                result = await services.invoke_local("gpio.read", {"name": pin}, timeout=READ_TIMEOUT_S)
                out.pins[pin] = result.get("state", result.get("value"))
            except InvokeError as exc:
                out.notes.append(f"({pin} unreadable: {exc.code})")
        if action.read_device:
            try:
                status = await services.invoke_local("device.status", {}, timeout=READ_TIMEOUT_S)
            except InvokeError as exc:
                out.notes.append(f"(device status unavailable: {exc.code})")
                continue
            for name in action.read_device:
                out.device[name] = _pick(status, name)
    return out
