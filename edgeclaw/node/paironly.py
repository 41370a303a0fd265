"""`edgeclaw pair` declares the node's command surface but serves none of it.

`pair` is usually run with sudo, and the gateway (or anyone holding an operator token) may invoke the
node as soon as it is connected — while `pair` is still waiting for the surface approval, or the moment
it is approved. A capability served then would run as root: `system.run` with root's rights, a notify
hook as root, GPIO lines claimed by root. So the capabilities are built only to say what they declare
(commands, caps, plugin tools), never started, and every invoke is refused with a coded error."""

from __future__ import annotations

from typing import Any

from edgeclaw.capabilities.base import Capability, Handler, InvokeContext, InvokeError

REFUSAL_CODE = "UNAVAILABLE"


async def refuse(ctx: InvokeContext) -> dict[str, Any]:
    """The answer to every invoke during `edgeclaw pair`."""
    raise InvokeError(
        REFUSAL_CODE,
        f"{ctx.command} is not served while `edgeclaw pair` runs (it only pairs); "
        "start the node with `systemctl start edgeclaw` or `edgeclaw run`",
    )


class DeclareOnly(Capability):
    """The surface of `inner` (so the operator approves what the service will serve) without its
    handlers, start, stop or session hooks."""

    def __init__(self, inner: Capability) -> None:
        super().__init__(inner.config, inner.services)
        self.inner = inner
        self.manifest = inner.manifest

    def handlers(self) -> dict[str, Handler]:
        return dict.fromkeys(self.inner.handlers(), refuse)

    def caps(self) -> list[str]:
        return self.inner.caps()

    def plugin_tools(self) -> list[dict[str, Any]]:
        return self.inner.plugin_tools()

    def skills(self) -> list[dict[str, Any]]:
        return self.inner.skills()

    async def reload(self, new_config: Any) -> None:
        self.inner.config = new_config
        self.config = new_config
