"""Spool entries → agent.request payloads. The gateway runs accepted agent.requests asynchronously
(three presses 0.7 s apart reached the agent as [2,1,3]), so a backlog for one session goes out as ONE
request: numbered lines with their original times, photos in order up to the media cap."""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass, field
from typing import Any

from edgeclaw.capabilities.triggers.spool import Spool, SpoolEntry

LATE_S = 5.0  # a request delivered later than this names its original time if the template didn't
MAX_MESSAGE_CHARS = 18_000  # the gateway drops an agent.request whose message exceeds 20000 chars
MAX_BATCH = 100


def clock(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


@dataclass
class Batch:
    entries: list[SpoolEntry]
    payload: dict[str, Any]
    photos_left_out: int = 0
    drops_told: int = 0
    photos_lost: list[str] = field(default_factory=list)


def pick(spool: Spool) -> list[SpoolEntry]:
    """The head and every later entry for the same session (in order), bounded in count and text."""
    head = spool.head()
    if head is None:
        return []
    picked = [head]
    size = len(head.message)
    for entry in spool.entries[1:]:
        if len(picked) >= MAX_BATCH:
            break
        if entry.session_key != head.session_key or (entry.deliver, entry.channel, entry.to) != (
            head.deliver,
            head.channel,
            head.to,
        ):
            continue
        size += len(entry.message) + 40
        if size > MAX_MESSAGE_CHARS:
            break
        picked.append(entry)
    return picked


def build(spool: Spool, entries: list[SpoolEntry], media_max_bytes: int, now: float) -> Batch:
    """One payload for `entries`; photos are read from disk here, one request's worth at a time."""
    head = entries[0]
    if len(entries) == 1:
        message = head.message
        if not head.time_in_message and now - head.ts > LATE_S:
            message += f" (at {clock(head.ts)})"
    else:
        lines = [
            f"{len(entries)} events, oldest first (held while the gateway was unreachable or in a burst):"
        ]
        for n, entry in enumerate(entries, 1):
            lines.append(f"{n}. [{clock(entry.ts)}] {entry.message}")
        message = "\n".join(lines)
    attachments: list[dict[str, Any]] = []
    used = 0
    left_out = 0
    lost: list[str] = []
    for entry in entries:
        for att in entry.attachments:
            if used + att.size > media_max_bytes:
                left_out += 1
                continue
            data = spool.read_media(att)
            if data is None:
                lost.append(att.file_name)
                continue
            used += len(data)
            attachments.append(
                {
                    "type": "image",
                    "mimeType": att.mime_type,
                    "fileName": att.file_name,
                    "content": base64.b64encode(data).decode("ascii"),
                }
            )
    if left_out:
        message += f"\n({left_out} photo(s) left out to stay under the {media_max_bytes} byte media cap)"
    if lost:
        message += f"\n({len(lost)} spooled photo(s) were lost on disk: {', '.join(lost)})"
    drops = spool.counters.unreported_drops
    if drops:
        message += (
            f"\n[note: {drops} earlier trigger event(s) were dropped before delivery "
            "(too old, spool full, refused or malformed); see `edgeclaw status`]"
        )
    payload: dict[str, Any] = {"message": message, "sessionKey": head.session_key}
    if head.deliver:
        payload["deliver"] = True
    if head.channel:
        payload["channel"] = head.channel
    if head.to:
        payload["to"] = head.to
    if attachments:
        payload["attachments"] = attachments
    return Batch(entries, payload, left_out, drops, lost)
