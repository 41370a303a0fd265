"""A real systemd for tests: a cached Debian rootfs, EdgeClaw installed into it the way a user installs it,
and throw-away `systemd-nspawn --boot` containers on overlayfs copies of it.

Why it looks the way it does (each point was hit; see shared/systemd/nspawn-notes.md):
- every container runs in its own cgroup (unified and name=systemd), so parallel runs don't share nspawn's
  `payload/`, and a hard cleanup can kill everything in it with `cgroup.kill`;
- one SIGTERM halts a container in order; a second one (or SIGKILL) would orphan or hard-kill it;
- the cached rootfs is only ever a lower layer; each container writes to its own upper directory;
- commands run inside through `nsenter` into the container's PID 1 namespaces, each with a timeout.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
import uuid
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("EDGECLAW_CACHE") or Path.home() / ".cache" / "edgeclaw")
CGROUP_V2 = Path("/sys/fs/cgroup/unified")
CGROUP_NAMED = Path("/sys/fs/cgroup/systemd")
CONTAINER_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
CLONE_NEWNET = 0x40000000


class NspawnError(RuntimeError):
    pass


def _run(cmd: list[str], *, timeout: float, what: str, **kw: object) -> subprocess.CompletedProcess[str]:
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, **kw
        )  # type: ignore[call-overload]
    except subprocess.TimeoutExpired as exc:
        raise NspawnError(f"{what}: timed out after {timeout} s") from exc
    if proc.returncode != 0:
        raise NspawnError(f"{what} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def available() -> str | None:
    """Why the systemd tier cannot run here, or None when it can."""
    if os.geteuid() != 0:
        return "needs root (systemd-nspawn, overlayfs, cgroups)"
    for tool in ("systemd-nspawn", "debootstrap", "systemd-analyze", "nsenter", "unshare"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (scripts/install-test-deps.sh installs it)"
    return None


# rootfs and install layer -----------------------------------------------------------------------------
def rootfs() -> Path:
    """The cached bookworm rootfs (scripts/rootfs.sh builds it once, ~55 s)."""
    out = _run([str(ROOT / "scripts" / "rootfs.sh")], timeout=900, what="scripts/rootfs.sh")
    return Path(out.stdout.strip().splitlines()[-1])


def _requirements() -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    deps = list(project["dependencies"]) + list(project.get("optional-dependencies", {}).get("gpio", []))
    return deps


def wheelhouse() -> Path:
    """Wheels of EdgeClaw's dependencies (and the build backend), built on the host from PyPI once per
    dependency list; the container installs from it offline. Host and rootfs are both CPython 3.11."""
    reqs = [*_requirements(), "setuptools>=68", "wheel"]
    key = hashlib.sha256(("\n".join(reqs) + sys.version).encode()).hexdigest()[:12]
    path = CACHE / f"wheelhouse-{key}"
    if (path / ".complete").exists():
        return path
    tmp = Path(f"{path}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    _run(
        [sys.executable, "-m", "pip", "wheel", "-q", "-w", str(tmp), *reqs],
        timeout=600,
        what="pip wheel (deps)",
    )
    (tmp / ".complete").touch()
    shutil.rmtree(path, ignore_errors=True)
    tmp.rename(path)
    return path


def build_wheel(dest: Path, wheels: Path) -> Path:
    """`pip wheel --no-deps` of the checkout, built from a copy so the work tree gets no build/ or egg-info."""
    src = dest / "src"
    shutil.copytree(
        ROOT / "edgeclaw", src / "edgeclaw", ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
    )
    shutil.copy2(ROOT / "pyproject.toml", src / "pyproject.toml")
    readme = ROOT / "README.md"
    if readme.exists():
        shutil.copy2(readme, src / "README.md")
    else:  # pyproject names it; the checkout may not have one yet
        (src / "README.md").write_text("EdgeClaw\n")
    out = dest / "dist"
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-index",
            "--find-links",
            str(wheels),
            "-w",
            str(out),
            str(src),
        ],
        timeout=300,
        what="pip wheel edgeclaw",
    )
    (wheel,) = out.glob("edgeclaw-*.whl")
    return wheel


INSTALL_SCRIPT = r"""
set -eu
python3 -m venv /opt/edgeclaw/venv
/opt/edgeclaw/venv/bin/pip install -q --no-index --no-cache-dir --find-links /mnt/wheels \
  "$(ls /mnt/dist/edgeclaw-*.whl)[gpio]"
ln -sf /opt/edgeclaw/venv/bin/edgeclaw /usr/local/bin/edgeclaw
install -D -m 0644 /mnt/systemd/edgeclaw.service /etc/systemd/system/edgeclaw.service
install -D -m 0644 /mnt/systemd/edgeclaw-run.socket /etc/systemd/system/edgeclaw-run.socket
install -D -m 0644 /mnt/systemd/edgeclaw-run@.service /etc/systemd/system/edgeclaw-run@.service
install -D -m 0644 /mnt/systemd/sysusers.d/edgeclaw.conf /usr/lib/sysusers.d/edgeclaw.conf
install -D -m 0644 /mnt/systemd/tmpfiles.d/edgeclaw.conf /usr/lib/tmpfiles.d/edgeclaw.conf
install -D -m 0644 /mnt/systemd/udev/60-edgeclaw-gpio.rules /etc/udev/rules.d/60-edgeclaw-gpio.rules
systemd-sysusers
systemd-tmpfiles --create /usr/lib/tmpfiles.d/edgeclaw.conf
systemctl enable edgeclaw-run.socket
# tests: a watchdog kill dumps core; don't write one
mkdir -p /etc/systemd/system.conf.d
printf '[Manager]\nDefaultLimitCORE=0\n' > /etc/systemd/system.conf.d/no-core.conf
/opt/edgeclaw/venv/bin/edgeclaw --version
"""


def install_layer(base: Path, dest: Path) -> Path:
    """An overlay layer holding EdgeClaw installed as a user would (wheel into a venv, unit files,
    sysusers, tmpfiles, udev rule); returns its directory, to be stacked on `base`."""
    dest.mkdir(parents=True, exist_ok=True)
    wheels = wheelhouse()
    build_wheel(dest, wheels)
    upper = dest / "layer"
    with overlay([base], dest / "install-ovl") as (merged, _):
        proc = _nspawn_command(
            merged,
            [
                "--bind-ro",
                f"{wheels}:/mnt/wheels",
                "--bind-ro",
                f"{dest / 'dist'}:/mnt/dist",
                "--bind-ro",
                f"{ROOT / 'systemd'}:/mnt/systemd",
            ],
            ["/bin/sh", "-c", INSTALL_SCRIPT],
            timeout=300,
        )
        if proc.returncode != 0:
            raise NspawnError(f"installing EdgeClaw in the rootfs failed:\n{proc.stdout[-4000:]}")
    (dest / "install-ovl" / "upper").rename(upper)
    return upper


def _nspawn_command(
    root: Path, extra: list[str], argv: list[str], *, timeout: float
) -> subprocess.CompletedProcess[str]:
    """A one-off command in the rootfs (no boot), in its own cgroup so a timeout can kill all of it."""
    with Cgroup() as cg:
        proc = subprocess.Popen(
            [
                "systemd-nspawn",
                "-q",
                "-D",
                str(root),
                "--register=no",
                "--keep-unit",
                "--console=pipe",
                "--private-network",
                *extra,
                *argv,
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            preexec_fn=cg.enter,
        )
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            cg.kill()
            out, _ = proc.communicate(timeout=10)
            raise NspawnError(f"nspawn {argv[:2]} timed out after {timeout} s:\n{out[-3000:]}") from None
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, "")


# overlay and cgroups ------------------------------------------------------------------------------------
@contextlib.contextmanager
def overlay(lowers: list[Path], work: Path) -> Iterator[tuple[Path, Path]]:
    """Mount lowers (first = topmost) read-only under a fresh upper dir; yields (merged, upper)."""
    for sub in ("upper", "work", "merged"):
        (work / sub).mkdir(parents=True, exist_ok=True)
    merged = work / "merged"
    opts = f"lowerdir={':'.join(str(p) for p in lowers)},upperdir={work / 'upper'},workdir={work / 'work'}"
    _run(["mount", "-t", "overlay", "overlay", "-o", opts, str(merged)], timeout=30, what="mount overlay")
    try:
        yield merged, work / "upper"
    finally:
        for _ in range(50):
            if subprocess.run(["umount", str(merged)], capture_output=True, timeout=30).returncode == 0:
                break
            time.sleep(0.1)
        else:
            subprocess.run(["umount", "-l", str(merged)], capture_output=True, timeout=30)
        shutil.rmtree(work / "work", ignore_errors=True)


class Cgroup:
    """A cgroup of our own in the unified and the name=systemd hierarchies (nspawn needs both)."""

    def __init__(self) -> None:
        name = f"edgeclaw-test-{uuid.uuid4().hex[:10]}"
        self.paths = [base / name for base in (CGROUP_V2, CGROUP_NAMED) if base.is_dir()]

    def __enter__(self) -> Cgroup:
        for p in self.paths:
            p.mkdir()
        return self

    def enter(self) -> None:
        """preexec_fn: move the child into this cgroup before it execs nspawn."""
        for p in self.paths:
            (p / "cgroup.procs").write_text("0")

    def pids(self) -> list[int]:
        found: list[int] = []
        if not self.paths:
            return found
        for dirpath, _, _ in os.walk(self.paths[0]):
            with contextlib.suppress(OSError):
                found += [int(x) for x in Path(dirpath, "cgroup.procs").read_text().split()]
        return found

    def kill(self) -> None:
        kill_file = self.paths[0] / "cgroup.kill" if self.paths else None
        if kill_file is not None and kill_file.exists():
            kill_file.write_text("1")
        else:
            for pid in self.pids():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)

    def __exit__(self, *exc: object) -> None:
        deadline = time.monotonic() + 10
        while self.pids() and time.monotonic() < deadline:
            self.kill()
            time.sleep(0.1)
        for top in self.paths:
            for dirpath, _, _ in sorted(os.walk(top), key=lambda w: -len(w[0])):
                with contextlib.suppress(OSError):
                    os.rmdir(dirpath)


# the network namespace -----------------------------------------------------------------------------------
@contextlib.contextmanager
def loopback_netns() -> Iterator[None]:
    """Move this test process (its main thread, and every child it starts from now on) into a new network
    namespace that has only loopback, and back at the end. The gateway, the container (which shares it:
    no --private-network) and the operator client then talk over that loopback and nothing else."""
    libc = ctypes.CDLL(None, use_errno=True)
    original = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    holder = subprocess.Popen(
        ["unshare", "--net", "sh", "-c", "ip link set lo up && echo up && exec sleep 3600"],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert holder.stdout is not None
        if holder.stdout.readline().strip() != "up":
            raise NspawnError("could not create a loopback-only network namespace")
        fd = os.open(f"/proc/{holder.pid}/ns/net", os.O_RDONLY)
        try:
            if libc.setns(fd, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns(net)")
        finally:
            os.close(fd)
        holder.kill()
        holder.wait(5)
        yield
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(5)
        libc.setns(original, CLONE_NEWNET)
        os.close(original)


# a booted container ------------------------------------------------------------------------------------
class Container:
    """`systemd-nspawn --boot` on an overlay of `lowers`, sharing the caller's network namespace."""

    def __init__(self, lowers: list[Path], workdir: Path | None = None) -> None:
        self.lowers = lowers
        self.work = workdir or Path(tempfile.mkdtemp(prefix="edgeclaw-nspawn-"))
        self.console_log = self.work / "console.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._stack = contextlib.ExitStack()
        self.root = Path()
        self.cgroup = Cgroup()
        self._init_pid: int | None = None

    def boot(self, timeout: float = 60.0) -> float:
        """Boot to multi-user; returns the seconds it took."""
        started = time.monotonic()
        self.root, _ = self._stack.enter_context(overlay(self.lowers, self.work / "ovl"))
        self._stack.enter_context(self.cgroup)
        console = open(self.console_log, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                "systemd-nspawn",
                "-D",
                str(self.root),
                "--boot",
                "--register=no",
                "--keep-unit",
                "--console=read-only",
                "--machine",
                f"ec-{uuid.uuid4().hex[:8]}",
            ],
            stdin=subprocess.DEVNULL,
            stdout=console,
            stderr=subprocess.STDOUT,
            preexec_fn=self.cgroup.enter,
        )
        console.close()
        deadline = started + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise NspawnError(f"container exited with {self.proc.returncode}:\n{self.console()}")
            if self._find_init() is not None:
                state = self.sh(
                    "systemctl is-system-running --wait",
                    timeout=max(1.0, deadline - time.monotonic()),
                    check=False,
                ).stdout.strip()
                if state in ("running", "degraded"):
                    return time.monotonic() - started
                if state not in ("offline", "initializing", "starting", ""):
                    raise NspawnError(f"system state {state!r} after boot:\n{self.console()}")
            time.sleep(0.05)
        raise NspawnError(f"container not booted within {timeout} s:\n{self.console()}")

    def console(self) -> str:
        try:
            return self.console_log.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def _find_init(self) -> int | None:
        if self._init_pid is not None:
            return self._init_pid
        for pid in self.cgroup.pids():
            try:
                status = Path(f"/proc/{pid}/status").read_text()
                exe = os.readlink(f"/proc/{pid}/exe")
            except OSError:
                continue
            nspid = next((line.split()[1:] for line in status.splitlines() if line.startswith("NSpid:")), [])
            if len(nspid) >= 2 and nspid[-1] == "1" and "systemd" in exe:
                self._init_pid = pid
                return pid
        return None

    def exec(
        self, argv: list[str], *, timeout: float = 30.0, check: bool = True, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run argv inside the container (its namespaces and root, a clean environment)."""
        pid = self._find_init()
        if pid is None:
            raise NspawnError("container is not running")
        cmd = [
            "nsenter",
            "-t",
            str(pid),
            "-m",
            "-u",
            "-i",
            "-n",
            "-p",
            "-C",
            "-r",
            "-w",
            "env",
            "-i",
            f"PATH={CONTAINER_PATH}",
            "LANG=C.UTF-8",
            "SYSTEMD_PAGER=",
            "SYSTEMD_COLORS=0",
            *argv,
        ]
        try:
            proc = subprocess.run(
                cmd,
                capture_output=True,
                text=True,
                timeout=timeout,
                input=input,
                stdin=None if input is not None else subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired as exc:
            raise NspawnError(f"{argv!r} timed out after {timeout} s in the container") from exc
        if check and proc.returncode != 0:
            raise NspawnError(
                f"{argv!r} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
            )
        return proc

    def sh(self, script: str, **kw: object) -> subprocess.CompletedProcess[str]:
        return self.exec(["/bin/sh", "-c", script], **kw)  # type: ignore[arg-type]

    def write(self, path: str, text: str, *, mode: int = 0o644, owner: str = "root:root") -> None:
        self.exec(
            [
                "/bin/sh",
                "-c",
                f'umask 077 && mkdir -p "$(dirname "$0")" && cat > "$0" && chmod {mode:o} "$0" && chown {owner} "$0"',
                path,
            ],
            input=text,
        )

    def show(self, unit: str, *props: str) -> dict[str, str]:
        out = self.exec(["systemctl", "show", unit, "-p", ",".join(props)]).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def journal(self, unit: str | None = None, since_cursor: str | None = None) -> str:
        argv = ["journalctl", "-b", "--no-pager", "-o", "short-precise"]
        if unit:
            argv += ["-u", unit]
        return self.exec(argv, timeout=30, check=False).stdout

    def stop(self, timeout: float = 20.0) -> None:
        """One SIGTERM (orderly halt), a bounded wait, then cgroup.kill; unmount and clean up."""
        try:
            if self.proc is not None and self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    self.cgroup.kill()
                    self.proc.wait(10)
        finally:
            self._stack.close()
            shutil.rmtree(self.work, ignore_errors=True)

    def __enter__(self) -> Container:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
