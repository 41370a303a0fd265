"""The exec approvals document (OpenClaw's format, version 1), kept in the node's state directory.

Why the node keeps it: the board is the last line of defence. Whatever the gateway or an agent asks, a
command runs only if this document allows it, or an operator approved that exact run. With no document
the node is deny-by-default: `security: allowlist`, `ask: on-miss`, `askFallback: deny`, empty allowlist.

The stored bytes are hashed for compare-and-swap (`system.execApprovals.set {file, baseHash}`).
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import re
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeclaw.capabilities.shell.command import Segment
from edgeclaw.capabilities.shell.matching import (
    Rule,
    allow_always_patterns,
    js_escape,
    match_segment,
    rule_key,
)
from edgeclaw.platform.atomicfile import write_atomic

FILE_NAME = "exec-approvals.json"
SEED_MARKER = "exec-approvals.seed"
SECURITY = ("deny", "allowlist", "full")
ASK = ("off", "on-miss", "always")
EDGECLAW_DEFAULTS: dict[str, Any] = {"security": "allowlist", "ask": "on-miss", "askFallback": "deny"}
_SECURITY_ORDER = {"deny": 0, "allowlist": 1, "full": 2}
_ASK_ORDER = {"off": 0, "on-miss": 1, "always": 2}
_ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


__all__ = ["Rule", "allow_always_patterns", "js_escape", "match_segment"]  # matching, re-exported


class ApprovalsInvalid(ValueError):
    """The document is malformed; the message names the key."""


def min_security(a: str, b: str) -> str:
    return a if _SECURITY_ORDER[a] <= _SECURITY_ORDER[b] else b


def max_ask(a: str, b: str) -> str:
    return a if _ASK_ORDER[a] >= _ASK_ORDER[b] else b


# --- document shape ---------------------------------------------------------------------------------
def _check_policy_fields(section: dict[str, Any], where: str) -> None:
    for key, allowed in (("security", SECURITY), ("ask", ASK), ("askFallback", SECURITY)):
        value = section.get(key)
        if value is not None and value not in allowed:
            raise ApprovalsInvalid(f"{where}.{key} must be one of {', '.join(allowed)} (got {value!r})")
    auto = section.get("autoAllowSkills")
    if auto is not None and not isinstance(auto, bool):
        raise ApprovalsInvalid(f"{where}.autoAllowSkills must be true or false")


def _normalize_entry(entry: Any, where: str) -> dict[str, Any]:
    if isinstance(entry, str):
        entry = {"pattern": entry}
    if not isinstance(entry, dict):
        raise ApprovalsInvalid(f"{where} must be an object with a pattern")
    out = dict(entry)
    pattern = out.get("pattern")
    if not isinstance(pattern, str) or not pattern.strip():
        raise ApprovalsInvalid(f"{where}.pattern must be a non-empty string")
    out["pattern"] = pattern.strip()
    arg_pattern = out.get("argPattern")
    if arg_pattern in (None, ""):
        out.pop("argPattern", None)
    elif not isinstance(arg_pattern, str):
        raise ApprovalsInvalid(f"{where}.argPattern must be a string (a regular expression)")
    else:
        try:
            re.compile(arg_pattern)
        except re.error as exc:
            raise ApprovalsInvalid(f"{where}.argPattern is not a valid regular expression: {exc}") from None
    env_keys = out.get("envKeys")
    if env_keys is not None:
        if not isinstance(env_keys, list) or not all(
            isinstance(k, str) and _ENV_KEY.match(k) for k in env_keys
        ):
            raise ApprovalsInvalid(f"{where}.envKeys must be a list of environment variable names")
        out["envKeys"] = sorted({k.upper() for k in env_keys})
    for key in ("source", "lastUsedCommand", "lastResolvedPath", "id"):
        if key in out and out[key] is not None and not isinstance(out[key], str):
            raise ApprovalsInvalid(f"{where}.{key} must be a string")
    if "lastUsedAt" in out and out["lastUsedAt"] is not None and not isinstance(out["lastUsedAt"], int):
        raise ApprovalsInvalid(f"{where}.lastUsedAt must be a number of milliseconds")
    if not out.get("id"):
        out["id"] = str(uuid.uuid4())
    return out


def normalize(doc: Any) -> dict[str, Any]:
    """Validate a document and give every allowlist entry an id; raises ApprovalsInvalid."""
    if not isinstance(doc, dict):
        raise ApprovalsInvalid("exec approvals file must be an object")
    version = doc.get("version", 1)
    if version != 1:
        raise ApprovalsInvalid(f"unsupported exec approvals version {version!r} (this node reads version 1)")
    out: dict[str, Any] = {k: copy.deepcopy(v) for k, v in doc.items() if k != "socket"}
    out["version"] = 1
    defaults = out.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise ApprovalsInvalid("defaults must be an object")
    if "allowlist" in defaults:
        raise ApprovalsInvalid('allowlists live under agents.<id> (use agents."*" for every agent)')
    _check_policy_fields(defaults, "defaults")
    out["defaults"] = defaults
    agents = out.get("agents") or {}
    if not isinstance(agents, dict):
        raise ApprovalsInvalid("agents must be an object keyed by agent id")
    for agent_id, agent in list(agents.items()):
        where = f"agents.{agent_id}"
        if agent is None:
            agents[agent_id] = agent = {}
        if not isinstance(agent, dict):
            raise ApprovalsInvalid(f"{where} must be an object")
        _check_policy_fields(agent, where)
        allowlist = agent.get("allowlist")
        if allowlist is not None:
            if not isinstance(allowlist, list):
                raise ApprovalsInvalid(f"{where}.allowlist must be a list")
            agent["allowlist"] = [
                _normalize_entry(e, f"{where}.allowlist[{i}]") for i, e in enumerate(allowlist)
            ]
    out["agents"] = agents
    return out


def encode(doc: dict[str, Any]) -> bytes:
    return (json.dumps(doc, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def digest(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


def default_document() -> dict[str, Any]:
    """What `get` shows when nothing is stored: EdgeClaw's safe defaults, spelled out."""
    return {"version": 1, "defaults": dict(EDGECLAW_DEFAULTS), "agents": {}}


# --- resolution -------------------------------------------------------------------------------------
@dataclass
class Policy:
    security: str
    ask: str
    ask_fallback: str
    auto_allow_skills: bool
    rules: list[Rule] = field(default_factory=list)
    agent_key: str = "default"

    def snapshot(self) -> dict[str, Any]:
        """The `policySnapshot` a prepared plan carries; an approval is honoured only while it is current."""
        rules: dict[str, dict[str, Any]] = {}
        for rule in self.rules:
            item: dict[str, Any] = {"pattern": rule.entry["pattern"]}
            if rule.entry.get("argPattern"):
                item["argPattern"] = rule.entry["argPattern"]
            if rule.entry.get("source") == "allow-always":
                item["source"] = "allow-always"
            rules[rule_key(item)] = item
        return {
            "security": self.security,
            "ask": self.ask,
            "askFallback": self.ask_fallback,
            "autoAllowSkills": self.auto_allow_skills,
            "allowlistRules": [rules[k] for k in sorted(rules)],
        }


def snapshot_is_current(expected: Any, current: dict[str, Any]) -> bool:
    if not isinstance(expected, dict):
        return False
    for key in ("security", "ask", "askFallback", "autoAllowSkills"):
        if expected.get(key) != current.get(key):
            return False
    have = {rule_key(r) for r in current["allowlistRules"]}
    rules = expected.get("allowlistRules") or []
    return isinstance(rules, list) and all(isinstance(r, dict) and rule_key(r) in have for r in rules)


def resolve(doc: dict[str, Any], agent_id: str | None) -> Policy:
    """Agent field, else the `*` agent's, else `defaults`, else EdgeClaw's defaults (as OpenClaw resolves)."""
    defaults = doc.get("defaults") or {}
    agents = doc.get("agents") or {}
    key = agent_id or "default"
    agent = agents.get(key) or {}
    wildcard = agents.get("*") or {}

    def pick(name: str, allowed: tuple[str, ...]) -> str:
        for source in (agent, wildcard, defaults):
            value = source.get(name)
            if value in allowed:
                return str(value)
        return str(EDGECLAW_DEFAULTS[name])

    auto = agent.get("autoAllowSkills", wildcard.get("autoAllowSkills", defaults.get("autoAllowSkills")))
    rules = [Rule("*", e) for e in wildcard.get("allowlist") or []]
    if key != "*":
        rules += [Rule(key, e) for e in agent.get("allowlist") or []]
    return Policy(
        security=pick("security", SECURITY),
        ask=pick("ask", ASK),
        ask_fallback=pick("askFallback", SECURITY),
        auto_allow_skills=bool(auto),
        rules=rules,
        agent_key=key,
    )


# --- storage ----------------------------------------------------------------------------------------
@dataclass
class Snapshot:
    path: str
    exists: bool
    file: dict[str, Any]
    hash: str

    def payload(self) -> dict[str, Any]:
        return {"path": self.path, "exists": self.exists, "file": self.file, "hash": self.hash}


class StaleHash(Exception):
    """The caller's baseHash no longer matches the stored document."""


class _Disk:
    """Marker: read the file now."""


DISK = _Disk()


class ApprovalsStore:
    """The node's approvals, authoritative in memory; the file is where they are kept, not where they
    are decided.

    A command the node runs is (without systemd's separate run user) the node's own user and can write
    the state directory. So the document is read from disk only when the node says so (start, SIGHUP
    reload, a config rollout) and changed only through `write` (system.execApprovals.set, allow-always,
    lastUsedAt). A file changed behind the node's back is not honoured: `drift()` reports it, the run
    path logs it, and `system.execApprovals.get` shows it, until an operator sets or reloads."""

    def __init__(self, state_dir: Path) -> None:
        self.path = Path(state_dir) / FILE_NAME
        self.seed_marker = Path(state_dir) / SEED_MARKER
        self._current: Snapshot | None = None
        self._invalid: str | None = None

    def read_raw(self) -> bytes | None:
        """The stored bytes (None: no file); cheap, so the capability can pin them at start."""
        try:
            return self.path.read_bytes()
        except FileNotFoundError:
            return None

    def _parse(self, raw: bytes | None) -> Snapshot:
        if raw is None:
            doc = default_document()
            return Snapshot(str(self.path), False, doc, digest(encode(doc)))
        try:
            doc = normalize(json.loads(raw.decode("utf-8")))
        except (ValueError, ApprovalsInvalid) as exc:
            # a damaged file must not silently widen or drop policy: refuse everything until it is fixed
            raise ApprovalsInvalid(f"{self.path} is unreadable ({exc}); fix or replace it") from None
        return Snapshot(str(self.path), True, doc, digest(raw))

    def load(self, raw: bytes | _Disk | None = DISK) -> Snapshot:
        """Trust what is on disk now, or the bytes read at start; raises ApprovalsInvalid when damaged."""
        try:
            self._current = self._parse(self.read_raw() if isinstance(raw, _Disk) else raw)
            self._invalid = None
        except ApprovalsInvalid as exc:
            self._current, self._invalid = None, str(exc)
            raise
        return self._current

    def snapshot(self) -> Snapshot:
        """The document in force (loaded from disk the first time)."""
        if self._current is None:
            if self._invalid is not None:
                raise ApprovalsInvalid(self._invalid)
            return self.load()
        return self._current

    def drift(self) -> str | None:
        """The hash of the file on disk when it is not the document in force (None: they agree)."""
        current = self.snapshot()
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return None if not current.exists else "missing"
        except OSError as exc:
            return f"unreadable ({exc.strerror})"
        disk = digest(raw)
        return None if disk == current.hash else disk

    def write(self, doc: dict[str, Any], base_hash: str | None) -> Snapshot:
        """Store `doc` if the hash in force still equals base_hash (None: no check)."""
        current = self._current
        if base_hash is not None and current is not None and base_hash != current.hash:
            raise StaleHash()
        normalized = normalize(doc)
        raw = encode(normalized)
        write_atomic(self.path, raw, 0o600)
        self._current, self._invalid = Snapshot(str(self.path), True, normalized, digest(raw)), None
        return self._current

    def apply_seed(self, seed: dict[str, Any] | None) -> bool:
        """Roll out the document from config.yaml when it changed since it was last applied.

        Allow-always entries that operators approved on this board are kept, so a fleet update does not
        undo them; everything else comes from the config."""
        if not seed:
            return False
        normalized = normalize(seed)
        seed_hash = digest(json.dumps(seed, sort_keys=True).encode("utf-8"))
        with contextlib.suppress(OSError):
            if self.seed_marker.read_text().strip() == seed_hash and self.path.exists():
                return False
        try:
            current = self.load()
        except ApprovalsInvalid:
            current = None
        if current is not None and current.exists:
            for agent_key, agent in (current.file.get("agents") or {}).items():
                kept = [e for e in agent.get("allowlist") or [] if e.get("source") == "allow-always"]
                if not kept:
                    continue
                target = normalized["agents"].setdefault(agent_key, {})
                have = {rule_key(e) for e in target.get("allowlist") or []}
                target["allowlist"] = list(target.get("allowlist") or []) + [
                    e for e in kept if rule_key(e) not in have
                ]
        self.write(normalized, None)
        write_atomic(self.seed_marker, seed_hash + "\n", 0o600)
        return True

    def record_use(
        self,
        used: list[tuple[Rule, Segment]],
        command_text: str,
        allow_always: tuple[str, list[dict[str, str]]] | None,
        min_interval_ms: int = 60_000,
    ) -> None:
        """Stamp lastUsedAt on matched rules (throttled: SD cards wear) and persist allow-always rules."""
        now = int(time.time() * 1000)
        current = self.snapshot()
        doc = copy.deepcopy(current.file) if current.exists else normalize(default_document())
        changed = False
        agents = doc.setdefault("agents", {})
        for rule, seg in used:
            for entry in (agents.get(rule.agent_key) or {}).get("allowlist") or []:
                if entry.get("id") != rule.entry.get("id"):
                    continue
                last = entry.get("lastUsedAt") or 0
                if now - int(last) >= min_interval_ms or entry.get("lastResolvedPath") != seg.real:
                    entry["lastUsedAt"] = now
                    entry["lastUsedCommand"] = command_text
                    if seg.real:
                        entry["lastResolvedPath"] = seg.real
                    changed = True
        if allow_always is not None:
            agent_key, patterns = allow_always
            target = agents.setdefault(agent_key, {})
            allowlist = target.setdefault("allowlist", [])
            have = {rule_key({**e, "source": "allow-always"}) for e in allowlist}
            for item in patterns:
                entry = {**item, "source": "allow-always"}
                if rule_key(entry) in have:
                    continue
                allowlist.append(
                    {"id": str(uuid.uuid4()), **entry, "lastUsedAt": now, "lastUsedCommand": command_text}
                )
                changed = True
        if changed:
            self.write(doc, current.hash)
