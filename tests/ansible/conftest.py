"""Fixtures for the Ansible tier: deploy.yml run for real (chroot into a copy of the cached bookworm rootfs,
then against the booted container through nsenter) and approve.yml against the real gateway.

Everything that needs the network (building the wheel, `pip download` of the wheelhouse) happens before this
process enters a loopback-only network namespace (tests.support.nspawn.loopback_netns); the gateway, the
container and every ansible-playbook run live in that namespace afterwards.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import nspawn
from tests.support.gateway import Gateway, install_gateway

ROOT = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("EDGECLAW_CACHE") or Path.home() / ".cache" / "edgeclaw")
GATEWAY_START_S = 240.0
BROKEN_MARKER = "deliberately broken release (tests/ansible)"


def install_ansible() -> Path:
    out = subprocess.run(
        [str(ROOT / "scripts" / "install-ansible.sh")],
        check=True,
        capture_output=True,
        text=True,
        timeout=900,
    )
    return Path(out.stdout.strip().splitlines()[-1])


def snapshot(dest: Path, *, broken: bool = False) -> Path:
    """A copy of what the playbook builds from (the work tree can change under a running test)."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".ansible")
    for name in ("edgeclaw", "systemd", "ansible"):
        shutil.copytree(ROOT / name, dest / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        if (ROOT / name).exists():
            shutil.copy2(ROOT / name, dest / name)
    if not (dest / "README.md").exists():
        (dest / "README.md").write_text("EdgeClaw\n")
    if broken:  # `edgeclaw run` dies at once: the unit never gets READY, the node never connects
        cli = dest / "edgeclaw" / "cli.py"
        text = cli.read_text()
        new = text.replace(
            "    from edgeclaw.node.daemon import run_daemon\n",
            f"    raise SystemExit({BROKEN_MARKER!r})\n    from edgeclaw.node.daemon import run_daemon\n",
            1,
        )
        assert new != text, "could not break edgeclaw/cli.py"
        cli.write_text(new)
    return dest


@dataclass
class Play:
    rc: int
    output: str

    def recap(self, host: str) -> dict[str, int]:
        m = re.search(rf"^{re.escape(host)}\s*:\s*(.*)$", self.output.split("PLAY RECAP")[-1], re.M)
        assert m, self.output[-3000:]
        return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", m.group(1))}


@dataclass
class Ansible:
    venv: Path
    workdir: Path
    vault_password: Path = field(init=False)

    def __post_init__(self) -> None:
        self.vault_password = self.workdir / "vault-pass"
        self.vault_password.write_text("edgeclaw-test-vault\n")
        self.vault_password.chmod(0o600)

    def env(self, ansible_dir: Path) -> dict[str, str]:
        return {
            **os.environ,
            "PATH": f"{self.venv / 'bin'}:{os.environ.get('PATH', '/usr/bin:/bin')}",
            "ANSIBLE_CONFIG": str(ansible_dir / "ansible.cfg"),
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_LOCAL_TEMP": str(self.workdir / "ansible-tmp"),
            "ANSIBLE_HOME": str(self.workdir / "ansible-home"),
            "ANSIBLE_VAULT_PASSWORD_FILE": str(self.vault_password),
            "ANSIBLE_CALLBACKS_ENABLED": "ansible.posix.profile_tasks",
            "PYTHONDONTWRITEBYTECODE": "1",
        }

    def run(self, ansible_dir: Path, *args: str, timeout: float = 400) -> Play:
        proc = subprocess.run(
            [str(self.venv / "bin" / args[0]), *args[1:]],
            cwd=ansible_dir,
            env=self.env(ansible_dir),
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        return Play(proc.returncode, proc.stdout + proc.stderr)

    def encrypt(self, ansible_dir: Path, name: str, secret: str) -> Any:
        """An `ansible-vault encrypt_string` value, as a user keeps the gateway token."""
        play = self.run(ansible_dir, "ansible-vault", "encrypt_string", "--name", name, secret, timeout=60)
        assert play.rc == 0, play.output
        return play.output[play.output.index(f"{name}:") :]


def board_platform(rootfs: Path) -> str:
    """The key the role computes on the board (arch-glibcX.Y:PY), read from the rootfs itself."""
    out = subprocess.run(
        [
            "chroot",
            str(rootfs),
            "/usr/bin/python3",
            "-c",
            "import platform, sys; print('%s-glibc%s:%d.%d' % (platform.machine(), platform.libc_ver()[1],"
            " *sys.version_info[:2]))",
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return out.stdout.strip()


def prebuild(ansible: Ansible, src: Path, target: str) -> dict[str, Any]:
    """Build the release into the controller cache now, while PyPI is reachable; the playbook finds it."""
    proc = subprocess.run(
        [
            str(ansible.venv / "bin" / "python"),
            str(src / "ansible/roles/edgeclaw/files/build_release.py"),
            "--source",
            str(src),
            "--out",
            str(CACHE / "releases"),
            "--target",
            target,
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return dict(json.loads(proc.stdout))


class World:
    """The gateway (started in the background in the loopback namespace) and the built releases."""

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self._start, name="gateway-start", daemon=True)
        self.thread.start()

    def _start(self) -> None:
        try:
            took = self.gw.start(GATEWAY_START_S)
            print(f"\n[ansible] gateway ready in {took:.1f} s")
        except BaseException as exc:
            self.errors.append(exc)

    def ready(self) -> Gateway:
        self.thread.join(GATEWAY_START_S + 10)
        if self.errors or self.thread.is_alive():
            raise RuntimeError(f"gateway did not start: {self.errors or 'timeout'}\n{self.gw.tail()}")
        return self.gw


@dataclass
class Setup:
    ansible: Ansible
    rootfs: Path
    src: Path
    broken_src: Path
    good: dict[str, Any]
    broken: dict[str, Any]
    world: World
    tmp: Path


@pytest.fixture(scope="session")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    reason = nspawn.available()
    if reason:
        pytest.fail(f"the ansible tier cannot run here: {reason}")
    tmp = tmp_path_factory.mktemp("ansible")
    ansible = Ansible(install_ansible(), tmp)
    rootfs = nspawn.rootfs()
    target = board_platform(rootfs)
    src = snapshot(tmp / "src")
    broken_src = snapshot(tmp / "src-broken", broken=True)
    good = prebuild(ansible, src, target)
    broken = prebuild(ansible, broken_src, target)
    assert good["release"] != broken["release"]
    gw_install = install_gateway()
    with nspawn.loopback_netns():
        world = World(Gateway(gw_install, tmp / "gateway"))
        try:
            yield Setup(ansible, rootfs, src, broken_src, good, broken, world, tmp)
        finally:
            world.thread.join(GATEWAY_START_S + 10)
            world.gw.stop()


def write_inventory(path: Path, hosts: dict[str, dict[str, Any]], vaulted: str = "") -> Path:
    """An inventory with the `edgeclaw` group; `vaulted` is YAML text (ansible-vault values) for group_vars."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "hosts.yml").write_text(yaml.safe_dump({"edgeclaw": {"hosts": hosts}}, sort_keys=False))
    if vaulted:
        (path / "group_vars").mkdir(exist_ok=True)
        (path / "group_vars" / "edgeclaw.yml").write_text("---\n" + vaulted)
    return path
