"""10,000 fuzzed frames at the protocol layer and fuzzed invokes through a fake gateway: zero crashes,
every malformed invoke answered with a coded error, the connection never dropped."""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgeclaw.protocol import frames
from tests.support.fakegateway import FakeGateway
from tests.unit.nodeharness import running_node

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
frame_like = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(["req", "res", "event", "other", ""]) | json_values,
        "id": st.text(max_size=10) | json_values,
        "ok": st.booleans() | json_values,
        "event": st.sampled_from(["tick", "node.invoke.request", "shutdown", ""]) | json_values,
        "method": st.text(max_size=10) | json_values,
        "payload": json_values,
        "error": json_values,
        "seq": json_values,
    },
)


@settings(max_examples=4500, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.one_of(frame_like.map(json.dumps), st.text(max_size=200), st.binary(max_size=200)))
def test_decode_never_raises_anything_but_frame_error(data: Any) -> None:
    with contextlib.suppress(frames.FrameError):
        frames.decode(data)


@settings(max_examples=4500, deadline=None, suppress_health_check=list(HealthCheck))
@given(frame_like)
def test_decoded_frames_are_well_typed(obj: dict[str, Any]) -> None:
    try:
        frame = frames.decode(json.dumps(obj))
    except frames.FrameError:
        return
    if isinstance(frame, frames.Response):
        assert isinstance(frame.id, str) and frame.id and isinstance(frame.ok, bool)
        assert frame.ok or isinstance(frame.error, frames.GatewayError)
    elif isinstance(frame, frames.Event):
        assert isinstance(frame.event, str) and frame.event


invoke_params = st.one_of(
    json_values.map(json.dumps),
    st.text(max_size=50),
    st.none(),
    st.integers(),
    st.dictionaries(st.sampled_from(["bins", "title", "body", "priority", "x"]), json_values, max_size=4).map(
        json.dumps
    ),
)
commands = st.sampled_from(["system.which", "system.notify", "system.nope", "", "x" * 300])


@pytest.mark.timeout(600)
async def test_fuzzed_invokes_through_a_fake_gateway(tmp_path: Path) -> None:
    """Each malformed invoke gets a coded error (or a valid result); the node never drops the connection."""
    gw = FakeGateway()
    await gw.start()
    examples: list[tuple[str, Any]] = []

    @settings(max_examples=1000, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(commands, invoke_params)
    def collect(command: str, params: Any) -> None:
        examples.append((command, params))

    collect()
    try:
        async with running_node(tmp_path, gw, node={"max_concurrent_invokes": 64, "invoke_queue": 512}):
            await gw.wait_hello(1)
            ids = []
            for command, params in examples:
                ids.append(await gw.invoke(command, raw_params_json=params))
            results = await asyncio.gather(*(gw.result_for(i, timeout=60) for i in ids))
            codes: dict[str, int] = {}
            for result in results:
                if result["ok"]:
                    json.loads(result["payloadJSON"])
                    codes["ok"] = codes.get("ok", 0) + 1
                else:
                    code = result["error"]["code"]
                    assert code and code.isupper() and result["error"]["message"], result
                    assert code != "INTERNAL_ERROR", result
                    codes[code] = codes.get(code, 0) + 1
            assert gw.hello_count == 1
            print(f"\n[figure] {len(results)} fuzzed invokes → {codes}")
    finally:
        await gw.stop()
