"""`edgeclaw gpio-safe`: put every output marked `safe_on_shutdown` in its safe state, without the daemon.

Meant for systemd's `ExecStopPost=` so that a crash (or a kill -9) also leaves the board safe:
    ExecStopPost=/usr/bin/edgeclaw gpio-safe
The daemon is gone by then, so the lines are free. On a real board each line is requested through the
kernel's GPIO character device at its safe level *with a pull towards that level* (safeline.py), so it
stays there after this process exits whether the kernel keeps released outputs driven (Raspberry Pi
kernels) or turns them back into inputs (mainline pinctrl-bcm2835, Debian's kernels). A simulated
board goes through gpiozero's MockFactory as before.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

EX_CONFIG = 78


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("gpio-safe", help="drive outputs marked safe_on_shutdown to their safe state")
    p.add_argument("--config", dest="config_sub", help=argparse.SUPPRESS)
    p.add_argument("--dry-run", action="store_true", help="only show what would be set")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run_gpio_safe)


def safe_plan(config: Any) -> list[tuple[str, Any]]:
    """(name, PinConfig) of every output that has a safe state applied on shutdown."""
    if not config.enabled:
        return []
    return [
        (name, pin)
        for name, pin in config.pins.items()
        if pin.is_output and pin.safe_state is not None and pin.safe_on_shutdown
    ]


def run_gpio_safe(args: argparse.Namespace) -> int:
    from edgeclaw.config import load_config
    from edgeclaw.typedconfig import ConfigError

    try:
        config = load_config(args.config_path)
    except ConfigError as exc:
        print(f"edgeclaw gpio-safe: {exc}")
        return EX_CONFIG
    gpio = config.capabilities.get("gpio")
    plan = safe_plan(gpio) if gpio is not None else []
    simulated = config.node.hardware == "simulated"
    results: list[dict[str, Any]] = []
    failed = 0
    if plan and not args.dry_run:
        results, failed = _apply(plan, simulated)
    else:
        results = [{"name": n, "pin": p.pin, "value": p.safe_state, "ok": None} for n, p in plan]
    if args.json:
        print(json.dumps({"simulated": simulated, "dry_run": args.dry_run, "pins": results}))
    elif not plan:
        print("gpio-safe: no output has a safe state applied on shutdown; nothing to do")
    else:
        board = " (simulated board)" if simulated else ""
        for r in results:
            verdict = "would set" if r["ok"] is None else "set" if r["ok"] else "FAILED to set"
            extra = f": {r['error']}" if r.get("error") else ""
            print(f"gpio-safe{board}: {verdict} {r['name']} ({r['pin']}) to {r['value']:g}{extra}")
    return 1 if failed else 0


def _apply(plan: list[tuple[str, Any]], simulated: bool) -> tuple[list[dict[str, Any]], int]:
    return _apply_simulated(plan) if simulated else _apply_kernel(plan)


def _apply_kernel(plan: list[tuple[str, Any]]) -> tuple[list[dict[str, Any]], int]:
    """Each line at its safe level with the matching pull, through /dev/gpiochipN (see safeline.py)."""
    from edgeclaw.capabilities.gpio import safeline

    results: list[dict[str, Any]] = []
    failed = 0
    try:
        chip = safeline.find_header_chip()
    except OSError as exc:
        return [
            {"name": n, "pin": p.pin, "value": p.safe_state, "ok": False, "error": str(exc)} for n, p in plan
        ], len(plan)
    for name, pin in plan:
        row: dict[str, Any] = {"name": name, "pin": pin.pin, "value": pin.safe_state, "ok": True}
        try:
            level = safeline.physical_level(pin.safe_state, pin.active_high)
            req = safeline.SafeRequest(safeline.bcm_offset(pin.pin), level)
            safeline.hold(chip, req)  # the fd stays open until exit; the kernel releases the line then
            row["level"] = level
            row["pull"] = "up" if level else "down"
            row["chip"] = str(chip)
        except (OSError, ValueError) as exc:
            row["ok"] = False
            row["error"] = f"{type(exc).__name__}: {exc}"
            failed += 1
        results.append(row)
    return results, failed


def _apply_simulated(plan: list[tuple[str, Any]]) -> tuple[list[dict[str, Any]], int]:
    from edgeclaw.capabilities.gpio.backend import make_factory
    from edgeclaw.capabilities.gpio.config import gpiozero_pin

    results: list[dict[str, Any]] = []
    failed = 0
    try:
        factory = make_factory(True)
    except Exception as exc:
        return [
            {"name": n, "pin": p.pin, "value": p.safe_state, "ok": False, "error": str(exc)} for n, p in plan
        ], len(plan)
    import gpiozero

    kept: list[Any] = []  # referenced until exit so nothing closes the devices
    for name, pin in plan:
        row: dict[str, Any] = {"name": name, "pin": pin.pin, "value": pin.safe_state, "ok": True}
        try:
            if pin.kind == "pwm":
                dev = gpiozero.PWMOutputDevice(
                    gpiozero_pin(pin.pin),
                    active_high=pin.active_high,
                    initial_value=pin.safe_state,
                    pin_factory=factory,
                )
            else:
                dev = gpiozero.DigitalOutputDevice(
                    gpiozero_pin(pin.pin),
                    active_high=pin.active_high,
                    initial_value=bool(pin.safe_state),
                    pin_factory=factory,
                )
            kept.append(dev)
        except Exception as exc:
            row["ok"] = False
            row["error"] = f"{type(exc).__name__}: {exc}"
            failed += 1
        results.append(row)
    return results, failed
