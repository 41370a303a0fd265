"""The playbooks pass ansible-lint's production profile (offline: no Galaxy) and Ansible's syntax check,
and the example inventory renders configs that EdgeClaw's own loader accepts."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.ansible.conftest import ROOT, install_ansible

ANSIBLE_DIR = ROOT / "ansible"


@pytest.fixture(scope="module")
def venv() -> Path:
    return install_ansible()


def run(venv: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(venv / "bin" / args[0]), *args[1:]],
        cwd=ANSIBLE_DIR,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        env={
            "PATH": f"{venv / 'bin'}:/usr/bin:/bin",
            "HOME": str(Path.home()),
            "ANSIBLE_NOCOLOR": "1",
            "NO_COLOR": "1",
            "ANSIBLE_CONFIG": str(ANSIBLE_DIR / "ansible.cfg"),
        },
    )


def test_ansible_lint_production_profile(venv: Path) -> None:
    proc = run(
        venv,
        "ansible-lint",
        "--offline",
        "--profile",
        "production",
        "deploy.yml",
        "approve.yml",
        "roles/edgeclaw",
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "Profile 'production' was required, and it passed" in proc.stdout + proc.stderr


def test_syntax_check(venv: Path) -> None:
    proc = run(venv, "ansible-playbook", "--syntax-check", "deploy.yml", "approve.yml")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_example_inventory_configs_load(venv: Path, tmp_path: Path) -> None:
    """Render config.yaml for every example host (no connection: the template module's lookup side)
    and load each with edgeclaw.config, so the example pins and camera settings stay valid."""
    # the role's defaults at the lowest precedence (group "all"), under the example's group and host vars
    defaults = tmp_path / "defaults-inventory"
    (defaults / "group_vars").mkdir(parents=True)
    (defaults / "hosts.yml").write_text("all: {}\n")
    (defaults / "group_vars" / "all.yml").write_text(
        (ANSIBLE_DIR / "roles/edgeclaw/defaults/main.yml").read_text()
    )
    out = tmp_path / "out"
    out.mkdir()
    playbook = tmp_path / "render.yml"
    playbook.write_text(
        "- hosts: edgeclaw\n  gather_facts: false\n  vars:\n"
        "    edgeclaw_state_dir: /var/lib/edgeclaw\n    edgeclaw_runtime_dir: /run/edgeclaw\n"
        "  tasks:\n    - name: Render\n      ansible.builtin.copy:\n"
        f"        content: \"{{{{ lookup('ansible.builtin.template', '{ANSIBLE_DIR}/roles/edgeclaw/templates/config.yaml.j2') }}}}\"\n"
        f"        dest: \"{out}/{{{{ inventory_hostname }}}}.yaml\"\n        mode: '0644'\n"
        "      delegate_to: localhost\n"
    )
    proc = run(
        venv,
        "ansible-playbook",
        "-i",
        "inventory/example/hosts.yml",
        "-i",
        str(defaults / "hosts.yml"),
        str(playbook),
        "-e",
        f"role_path={ANSIBLE_DIR}/roles/edgeclaw",
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    rendered = sorted(out.glob("*.yaml"))
    assert {p.stem for p in rendered} == {"garage-pi", "greenhouse-pi-1", "greenhouse-pi-2"}
    from edgeclaw.config import parse_config

    for path in rendered:
        config = parse_config(path.read_text(), file=str(path), env={"EDGECLAW_GATEWAY_TOKEN": "x"})
        assert config.node.display_name
        assert config.capabilities["gpio"].enabled and config.capabilities["gpio"].pins
    garage = parse_config((out / "garage-pi.yaml").read_text(), env={"EDGECLAW_GATEWAY_TOKEN": "x"})
    assert garage.node.display_name == "Garage door"
    assert set(garage.capabilities["gpio"].pins) == {"door_relay", "door_closed"}
    north = parse_config((out / "greenhouse-pi-2.yaml").read_text(), env={"EDGECLAW_GATEWAY_TOKEN": "x"})
    assert set(north.capabilities["gpio"].pins) == {"vent_fan", "sprinkler"}
