"""Turn parsed YAML into typed dataclasses, reporting file, line and key path for every mistake.

Capabilities describe their config as plain dataclasses; this module is the one validator for all of them.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

import yaml

T = TypeVar("T")


class ConfigError(Exception):
    """A config mistake; `str()` says where (file:line) and which key, so the user can fix it at once."""

    def __init__(self, message: str, *, key: str = "", file: str = "", line: int | None = None) -> None:
        self.message = message
        self.key = key
        self.file = file
        self.line = line
        super().__init__(str(self))

    def __str__(self) -> str:
        where = self.file or "config"
        if self.line is not None:
            where += f":{self.line}"
        return f"{where}: {self.key + ': ' if self.key else ''}{self.message}"


LineLookup = Callable[[str], int | None]


def _no_lines(_path: str) -> int | None:
    return None


def load_yaml_with_lines(text: str, file: str) -> tuple[Any, LineLookup]:
    """Parse YAML once into data and a map from dotted key path to 1-based line number."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise ConfigError(
            f"not valid YAML: {getattr(exc, 'problem', exc)}",
            file=file,
            line=(mark.line + 1) if mark is not None else None,
        ) from None
    lines: dict[str, int] = {}

    def walk(n: yaml.Node | None, path: str) -> None:
        if n is None:
            return
        lines.setdefault(path, n.start_mark.line + 1)
        if isinstance(n, yaml.MappingNode):
            for key_node, value_node in n.value:
                child = f"{path}.{key_node.value}" if path else str(key_node.value)
                lines[child] = key_node.start_mark.line + 1
                walk(value_node, child)
        elif isinstance(n, yaml.SequenceNode):
            for index, item in enumerate(n.value):
                walk(item, f"{path}[{index}]")

    walk(node, "")
    return data, lines.get


class _Ctx:
    def __init__(self, file: str, lines: LineLookup) -> None:
        self.file = file
        self.lines = lines

    def error(self, message: str, path: str) -> ConfigError:
        probe = path
        line = self.lines(probe)
        while line is None and probe:
            probe = probe.rsplit(".", 1)[0] if "." in probe else ""
            line = self.lines(probe)
        return ConfigError(message, key=path, file=self.file, line=line)


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in get_args(tp))
    if origin is list:
        return f"list of {_type_name(get_args(tp)[0])}"
    if origin is dict:
        return f"mapping of {_type_name(get_args(tp)[1])}"
    if tp is type(None):
        return "null"
    if dataclasses.is_dataclass(tp):
        return "mapping"
    return getattr(tp, "__name__", str(tp))


def _convert(value: Any, tp: Any, path: str, ctx: _Ctx) -> Any:
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        options = get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _convert(value, option, path, ctx)
            except ConfigError as exc:
                errors.append(exc)
        if len(errors) == 1:
            raise errors[0]
        raise ctx.error(f"expected {_type_name(tp)}, got {value!r}", path)
    if origin is Literal:
        if value in get_args(tp):
            return value
        raise ctx.error(f"expected one of {_type_name(tp)}, got {value!r}", path)
    if origin is list:
        if not isinstance(value, list):
            raise ctx.error(f"expected a list, got {type(value).__name__}", path)
        (item_tp,) = get_args(tp)
        return [_convert(item, item_tp, f"{path}[{i}]", ctx) for i, item in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ctx.error(f"expected a mapping, got {type(value).__name__}", path)
        _, value_tp = get_args(tp)
        return {str(k): _convert(v, value_tp, f"{path}.{k}", ctx) for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        return _build_dataclass(tp, value, path, ctx)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ctx.error(f"expected true or false, got {value!r}", path)
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ctx.error(f"expected an integer, got {value!r}", path)
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ctx.error(f"expected a number, got {value!r}", path)
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise ctx.error(f"expected a string, got {type(value).__name__}", path)
    raise ctx.error(f"unsupported config type {tp!r}", path)


def _build_dataclass(cls: Any, value: Any, path: str, ctx: _Ctx) -> Any:
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise ctx.error(f"expected a mapping, got {type(value).__name__}", path or "(top level)")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in value:
        if str(key) not in fields:
            known = ", ".join(sorted(fields))
            raise ctx.error(f"unknown key (known keys: {known})", f"{path}.{key}" if path else str(key))
    kwargs: dict[str, Any] = {}
    for name, f in fields.items():
        child = f"{path}.{name}" if path else name
        if name in value:
            kwargs[name] = _convert(value[name], hints[name], child, ctx)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ctx.error("required key is missing", child)
    obj = cls(**kwargs)
    validate = getattr(obj, "validate", None)
    if callable(validate):
        try:
            validate()
        except ValueError as exc:
            raise ctx.error(str(exc), path or "(top level)") from None
        except ConfigError as exc:
            raise ctx.error(exc.message, exc.key or path) from None
    return obj


def build(cls: type[T], data: Any, *, path: str = "", file: str = "", lines: LineLookup = _no_lines) -> T:
    """Validate `data` into an instance of dataclass `cls`; a `validate()` method adds cross-field checks."""
    return typing.cast(T, _build_dataclass(cls, data, path, _Ctx(file, lines)))
