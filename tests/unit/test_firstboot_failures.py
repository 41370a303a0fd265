"""First boot when something goes wrong: a damaged identity, a write that fails part-way or a bad file
each end with a report beside the file, nothing changed on the root, and no secret left on the FAT
partition. Also: `edgeclaw.yaml.txt` (Windows hides the extension) is recognised."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest

from edgeclaw.cli import main
from edgeclaw.firstboot_txn import scrub_text
from edgeclaw.platform.state import StateDir

TOKEN = "gw-secret-token-4b1d"
PASSPHRASE = "correct horse battery"
GOOD = (
    f"gateway:\n  url: ws://10.0.0.2:18789\n  token: {TOKEN}\nnode:\n  display_name: Barn\n"
    f"wifi:\n  ssid: farm\n  psk: {PASSPHRASE}\n  country: DE\n"
)


def run(source: Path, root: Path, *extra: str) -> tuple[int, str]:
    """The command line through edgeclaw.cli.main in-process; an exception here is the traceback
    a user would see."""
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        code = main(["firstboot", "--root", str(root), *extra, str(source)])
    return code, err.getvalue()


@pytest.fixture
def card(tmp_path: Path) -> tuple[Path, Path]:
    fat, root = tmp_path / "firmware", tmp_path / "root"
    fat.mkdir()
    (root / "etc").mkdir(parents=True)
    (root / "etc/hosts").write_text("127.0.0.1\tlocalhost\n127.0.1.1\tedgeclaw\n")
    (root / "etc/hostname").write_text("edgeclaw\n")
    return fat, root


def snapshot(root: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(root)): p.read_bytes() if p.is_file() else None for p in root.rglob("*")}


def no_secret_on(fat: Path) -> None:
    for path in fat.iterdir():
        text = path.read_bytes().decode("utf-8", errors="replace")
        assert TOKEN not in text and PASSPHRASE not in text, path.name


def test_corrupt_identity_changes_nothing_reports_and_scrubs_the_token(card: tuple[Path, Path]) -> None:
    fat, root = card
    state = root / "var/lib/edgeclaw"
    state.mkdir(parents=True, mode=0o700)
    (state / "identity.json").write_text('{"privateKeySeed": "not base64 !!"')  # truncated JSON
    (state / "identity.json").chmod(0o600)
    source = fat / "edgeclaw.yaml"
    source.write_text(GOOD)
    before = snapshot(root)
    code, err = run(source, root)  # must not raise
    assert code != 0
    assert snapshot(root) == before  # no gateway.token, no config, identity untouched
    assert not (root / "etc/edgeclaw/gateway.token").exists()
    report = (fat / "edgeclaw-firstboot.txt").read_text()
    assert "identity" in report and "corrupt" in report and "Nothing was changed" in report
    assert "Traceback" not in err
    no_secret_on(fat)
    left = source.read_text()  # the rest is still there to fix
    assert "url: ws://10.0.0.2:18789" in left and "ssid: farm" in left and "display_name: Barn" in left


def test_a_write_failing_part_way_puts_everything_back(card: tuple[Path, Path]) -> None:
    fat, root = card
    (root / "etc/wpa_supplicant").mkdir()
    (root / "etc/wpa_supplicant/wpa_supplicant-wlan0.conf").mkdir()  # the Wi-Fi write will fail
    source = fat / "edgeclaw.yaml"
    source.write_text(GOOD)
    before = snapshot(root)
    code, err = run(source, root)
    assert code != 0 and "Traceback" not in err
    assert snapshot(root) == before  # token, identity, config, hostname, hosts all put back
    report = (fat / "edgeclaw-firstboot.txt").read_text()
    assert "ERROR applying" in report and "put back" in report
    no_secret_on(fat)


@pytest.mark.parametrize(
    "body",
    [
        f"gateway:\n  url: http://gw:18789\n  token: {TOKEN}\n",  # invalid value
        f"gateway: {{url: 'ws://10.0.0.2:1', token: '{TOKEN}'}}\nhostname: -bad-\n",  # flow style
        f"gateway:\n  url: ws://10.0.0.2:1\n  token: {TOKEN}\n  oops: [\n",  # not YAML at all
        f"gateway:\n  url: ws://10.0.0.2:1\n  token: {TOKEN}\nwifi:\n  ssid: x\n  psk: {PASSPHRASE}\n",
    ],
)
def test_a_bad_file_loses_its_secrets_but_keeps_the_rest(card: tuple[Path, Path], body: str) -> None:
    fat, root = card
    source = fat / "edgeclaw.yaml"
    source.write_text(body)
    before = snapshot(root)
    code, _ = run(source, root)
    assert code == 78
    assert snapshot(root) == before
    no_secret_on(fat)
    left = source.read_text()
    assert "removed its secrets" in left
    assert "10.0.0.2" in left or "gw:18789" in left  # the rest is left to fix
    assert "put them in again" in (fat / "edgeclaw-firstboot.txt").read_text()


def test_check_never_edits_the_file(card: tuple[Path, Path]) -> None:
    fat, root = card
    source = fat / "edgeclaw.yaml"
    body = f"gateway:\n  url: http://gw:18789\n  token: {TOKEN}\n"
    source.write_text(body)
    code, _ = run(source, root, "--check")
    assert code == 78 and source.read_text() == body


def test_windows_txt_extension_is_recognised(card: tuple[Path, Path]) -> None:
    fat, root = card
    (fat / "edgeclaw.yaml.txt").write_text(GOOD)
    code, err = run(fat / "edgeclaw.yaml", root)
    assert code == 0, err
    assert (root / "etc/edgeclaw/gateway.token").read_text().strip() == TOKEN
    assert StateDir(root / "var/lib/edgeclaw").has_identity()
    assert not (fat / "edgeclaw.yaml.txt").exists()
    assert "Applied" in (fat / "edgeclaw-firstboot.txt").read_text()
    no_secret_on(fat)


def test_scrub_blanks_every_secret_key_form() -> None:
    text = (
        "gateway:\n  url: ws://h:1\n  token: abc123def\n  setup_code: 'oc-pair://xyz'\n"
        'wifi: {ssid: s, psk: "pass word 9", country: DE}\n'
    )
    out = scrub_text(text, [])
    assert "abc123def" not in out and "oc-pair://xyz" not in out and "pass word 9" not in out
    assert "url: ws://h:1" in out and "ssid: s" in out and "country: DE" in out
