"""The daemon's footprint: modules it does not need are not loaded until used, and using them still works.

Each check that depends on what a fresh interpreter has imported runs in a subprocess (pytest itself
imports most of the standard library)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

from edgeclaw.node.wsclient import proxy_setting
from tests.support.fakegateway import FakeGateway
from tests.unit.nodeharness import running_node

REPO = Path(__file__).resolve().parents[2]


def fresh_python(code: str) -> dict[str, object]:
    """Run code in a new interpreter (no site customisation of ours) and return the JSON it prints."""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_daemon_import_leaves_unused_stdlib_shell_runner_and_gpio_unloaded() -> None:
    got = fresh_python(
        "import json, sys\n"
        "from edgeclaw.cli import main\n"
        "try:\n"
        "    main(['--version'])\n"  # the CLI entry: what `edgeclaw run` goes through first
        "except SystemExit:\n"
        "    pass\n"
        "import edgeclaw.node.daemon\n"
        "from edgeclaw.capabilities.registry import load_capability_modules\n"
        "from edgeclaw.platform.deferimport import is_loaded\n"
        "assert set(load_capability_modules()) == {'system', 'shell', 'camera', 'gpio', 'device', 'diagnostics', 'triggers'}\n"
        "names = ['importlib.metadata', 'urllib.request', 'email.message', 'http.client', 'zipfile', 'bz2', 'lzma',\n"
        "         'edgeclaw.capabilities.shell.run', 'edgeclaw.capabilities.gpio.capability',\n"
        "         'nacl.bindings', 'nacl.signing', 'edgeclaw.protocol.identity', 'websockets.asyncio.client']\n"
        "print(json.dumps({n: is_loaded(n) for n in names}))\n"
    )
    assert got == {
        "importlib.metadata": False,
        "urllib.request": False,
        "email.message": False,
        "http.client": False,
        "zipfile": False,
        "bz2": False,
        "lzma": False,
        "edgeclaw.capabilities.shell.run": False,
        "edgeclaw.capabilities.gpio.capability": False,  # GPIO is off unless configured
        "nacl.bindings": False,  # Ed25519 goes straight to libsodium (edgeclaw/protocol/ed25519.py)
        "nacl.signing": False,
        "edgeclaw.protocol.identity": True,
        "websockets.asyncio.client": True,
    }


def test_a_deferred_module_loads_on_first_use_and_replaces_its_placeholder() -> None:
    got = fresh_python(
        "import json, sys\n"
        "from edgeclaw.platform.deferimport import defer, is_loaded, DeferredModule\n"
        "first = defer('wave', 'json', 'no_such_module_xyz')\n"
        "import wave\n"
        "before = is_loaded('wave')\n"
        "placeholder = wave\n"
        "from wave import Error\n"  # from-import reads an attribute: loads it
        "after = is_loaded('wave')\n"
        "import importlib.metadata\n"  # what websockets does: a plain import must not load it either
        "print(json.dumps({'deferred': first, 'before': before, 'after': after,\n"
        "  'real_in_sys_modules': not isinstance(sys.modules['wave'], DeferredModule),\n"
        "  'placeholder_delegates': placeholder.Error is Error, 'error_is_exception': issubclass(Error, Exception),\n"
        "  'version_via_metadata': importlib.metadata.version('websockets') != ''}))\n"
    )
    assert got == {
        "deferred": ["wave"],  # json was already imported; an unknown module is left to fail normally
        "before": False,
        "after": True,
        "real_in_sys_modules": True,
        "placeholder_delegates": True,
        "error_is_exception": True,
        "version_via_metadata": True,
    }


def test_a_deferred_submodule_is_bound_on_its_parent_package_once_loaded() -> None:
    got = fresh_python(
        "import json, sys\n"
        "from edgeclaw.platform.deferimport import defer, is_loaded\n"
        "defer('xml.dom.minidom')\n"
        "import xml.dom.minidom\n"
        "doc = xml.dom.minidom.parseString('<a b=\"1\"/>')\n"
        "print(json.dumps({'attr': doc.documentElement.getAttribute('b'), 'loaded': is_loaded('xml.dom.minidom'),\n"
        "  'parent_bound': sys.modules['xml.dom'].minidom is sys.modules['xml.dom.minidom']}))\n"
    )
    assert got == {"attr": "1", "loaded": True, "parent_bound": True}


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, None),
        ({"PATH": "/usr/bin", "no_proxy": "localhost"}, None),
        ({"HTTPS_PROXY": "http://proxy:3128"}, True),
        ({"http_proxy": "http://proxy:3128"}, True),
        ({"all_proxy": "socks5h://proxy:1080"}, True),
        ({"https_proxy": ""}, None),
    ],
)
def test_proxy_setting_follows_the_environment(env: dict[str, str], expected: bool | None) -> None:
    assert proxy_setting(env) is expected


class ConnectProxy:
    """A minimal HTTP CONNECT proxy on loopback that records the targets it tunnelled to."""

    def __init__(self) -> None:
        self.targets: list[str] = []
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        target = head.split(b"\r\n", 1)[0].split()[1].decode()
        self.targets.append(target)
        host, port = target.rsplit(":", 1)
        up_reader, up_writer = await asyncio.open_connection(host, int(port))
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, asyncio.CancelledError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()


async def test_a_proxy_in_the_environment_is_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    gw = FakeGateway()
    await gw.start()
    proxy = ConnectProxy()
    port = await proxy.start()
    monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{port}")
    try:
        async with running_node(tmp_path, gw):
            await gw.wait_hello(1, timeout=10)
        assert proxy.targets == [gw.url.removeprefix("ws://").rstrip("/")]
    finally:
        await proxy.stop()
        await gw.stop()


def test_the_shell_runner_loads_on_the_first_shell_command(tmp_path: Path) -> None:
    got = fresh_python(
        "import asyncio, json, sys\n"
        "from pathlib import Path\n"
        "from edgeclaw.capabilities.base import InvokeContext\n"
        "from edgeclaw.capabilities.shell import Config, create\n"
        "from tests.unit.test_shell_run import Services\n"
        "async def main():\n"
        f"    cap = create(Config(), Services(Path({str(tmp_path)!r})))\n"
        "    await cap.start()\n"
        "    handlers = cap.handlers()\n"
        "    idle = 'edgeclaw.capabilities.shell.run' in sys.modules\n"
        "    loop = asyncio.get_running_loop()\n"
        "    ctx = InvokeContext('i1', 'system.execApprovals.get', {}, loop.time() + 5, 5000)\n"
        "    doc = await handlers['system.execApprovals.get'](ctx)\n"
        "    used = 'edgeclaw.capabilities.shell.run' in sys.modules\n"
        "    print(json.dumps({'idle': idle, 'used': used, 'has_file': 'file' in doc}))\n"
        "asyncio.run(main())\n"
    )
    assert got == {"idle": False, "used": True, "has_file": True}
