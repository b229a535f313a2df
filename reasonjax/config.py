"""Dataclass configs: build from dicts / YAML, apply ``key=value`` overrides, validate.

Every config in reasonjax is a (possibly nested) dataclass. This module turns plain
data into those dataclasses with errors that name the offending field path, e.g.::

    cfg = from_dict(TrainConfig, yaml.safe_load(open("run.yaml")))
    cfg = override(cfg, ["optim.lr=3e-4", "mesh.data=8"])

Unknown keys, wrong types and unparsable values raise :class:`ConfigError` before any
compilation happens.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from pathlib import Path
from typing import Any, Sequence, TypeVar

import yaml

from reasonjax.errors import ConfigError  # noqa: F401  (re-exported)

T = TypeVar("T")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _member_named(errors: dict, value: Any) -> Any:
    """The error of the union member whose ``name`` field (a Literal) is ``value['name']``
    (e.g. an algorithm config), else None."""
    if not isinstance(value, dict) or "name" not in value:
        return None
    for member, error in errors.items():
        if dataclasses.is_dataclass(member):
            hint = typing.get_type_hints(member).get("name")
            if typing.get_origin(hint) is typing.Literal and value["name"] in typing.get_args(hint):
                return error
    return None


def _coerce(value: Any, tp: Any, path: str) -> Any:
    """Converts ``value`` to type ``tp`` (a dataclass, builtin, Optional, tuple, dict...)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = {}
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, path)
            except ConfigError as e:
                errors[arg] = str(e)
        named = _member_named(errors, value)
        if named is not None:  # a mapping whose ``name`` picks a member: that member's error
            raise ConfigError(f"{named} (to switch to {value['name']}, give the whole "
                              f"section: {path}={{name: {value['name']}}})")
        raise ConfigError(f"{path}: {value!r} matches none of {_type_name(tp)}")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{path}: {value!r} is not one of {list(args)}")
        return value
    if dataclasses.is_dataclass(tp):
        if dataclasses.is_dataclass(value) and isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping for {tp.__name__}, got {value!r}")
        return from_dict(tp, value, _path=path)
    if origin in (tuple, list, Sequence, typing.Sequence) or tp in (tuple, list):
        if isinstance(value, str) or not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}: expected a list, got {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"{path}: expected {len(args)} items, got {len(value)}")
            return tuple(_coerce(v, a, f"{path}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        item_tp = args[0] if args else Any
        out = [_coerce(v, item_tp, f"{path}[{i}]") for i, v in enumerate(value)]
        return tuple(out) if (origin is tuple or tp is tuple) else out
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {value!r}")
        vt = args[1] if len(args) == 2 else Any
        return {k: _coerce(v, vt, f"{path}.{k}") for k, v in value.items()}
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{path}: expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected true/false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, (str, Path)):
            raise ConfigError(f"{path}: expected a string, got {value!r}")
        return str(value)
    if isinstance(tp, type) and not isinstance(value, tp):
        raise ConfigError(f"{path}: expected {tp.__name__}, got {value!r}")
    return value


def from_dict(cls: type[T], data: dict, *, _path: str = "") -> T:
    """Builds dataclass ``cls`` from a mapping; unknown keys and bad types raise ConfigError."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        where = _path or cls.__name__
        raise ConfigError(
            f"{where}: unknown key(s) {unknown}; valid keys are {sorted(fields)}")
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _coerce(value, hints[name], f"{_path}.{name}" if _path else name)
    try:
        obj = cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(_prefixed(_path or cls.__name__, str(e), fields,
                                    bare=not _path)) from None
    return obj


def _prefixed(path: str, message: str, fields, bare: bool = False) -> str:
    """A ``__post_init__`` message with the field path the user typed: its checks name
    the field inside the class ("steps: must be >= 0"), so inside ``warmup`` it reads
    "warmup.steps: must be >= 0"; parts naming no field get "path: " once."""
    parts = message.split("; ")
    named = [p.split(":", 1)[0].split(".", 1)[0].split("[", 1)[0] in fields for p in parts]
    if all(named):
        return "; ".join(p if bare else f"{path}.{p}" for p in parts)
    return f"{path}: {message}"


_RULE = re.compile(r"^(>=|>|<=|<)\s*(-?[\d.e+-]+)$|^in ([\[(])\s*(-?[\d.e+-]+),\s*"
                   r"(-?[\d.e+-]+|inf)\s*([\])])$")


def check_fields(obj: Any, **rules: str) -> None:
    """Validates numeric fields of a config in its ``__post_init__``: each rule is
    ``">= 0"``, ``"> 0"``, ``"<= x"``, ``"< x"`` or an interval ``"in [0, 1]"`` /
    ``"in (0, 1]"``; None passes (optional fields). Raises ConfigError listing every
    failing field as ``field: must be ..., got value``."""
    problems = []
    for name, rule in rules.items():
        value = getattr(obj, name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            problems.append(f"{name}: must be a number, got {value!r}")
            continue
        m = _RULE.match(rule)
        if m is None:
            raise ValueError(f"check_fields: cannot read rule {rule!r}")
        if m.group(1):
            op, bound = m.group(1), float(m.group(2))
            ok = {">=": value >= bound, ">": value > bound, "<=": value <= bound,
                  "<": value < bound}[op]
        else:
            lo, hi = float(m.group(4)), float(m.group(5))
            ok = ((value >= lo if m.group(3) == "[" else value > lo)
                  and (value <= hi if m.group(6) == "]" else value < hi))
        if not ok or (isinstance(value, float) and value != value):
            problems.append(f"{name}: must be {rule}, got {value!r}")
    if problems:
        raise ConfigError("; ".join(problems))


def to_dict(cfg: Any) -> Any:
    """Plain-data (YAML/JSON-serialisable) form of a config dataclass."""
    if dataclasses.is_dataclass(cfg):
        return {f.name: to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, (list, tuple)):
        return [to_dict(v) for v in cfg]
    if isinstance(cfg, dict):
        return {k: to_dict(v) for k, v in cfg.items()}
    return cfg


def parse_override(item: str) -> tuple[list[str], Any]:
    """Parses ``a.b.c=value`` into (["a","b","c"], value); the value is read as YAML."""
    if "=" not in item:
        raise ConfigError(f"override {item!r}: expected key=value (e.g. optim.lr=3e-4)")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override {item!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        raise ConfigError(f"override {item!r}: cannot parse value: {e}") from None
    # YAML reads 3e-4 as a string (it needs a dot); accept the usual float spellings.
    if isinstance(value, str):
        try:
            value = float(value) if any(c in value.lower() for c in "e.") else value
        except ValueError:
            pass
    return key.split("."), value


def _unset_section(parent: Any, name: str) -> Any:
    """The defaults of field ``name`` of dataclass ``parent`` when it is an unset
    ``Optional[SomeConfig]`` (so ``fit.lora.rank=8`` turns LoRA on with its other defaults);
    None otherwise."""
    if not dataclasses.is_dataclass(parent):
        return None
    tp = typing.get_type_hints(type(parent)).get(name)
    for arg in typing.get_args(tp) if typing.get_origin(tp) in (typing.Union,
                                                                 types.UnionType) else ():
        if dataclasses.is_dataclass(arg):
            try:
                return arg()
            except TypeError:
                return None
    return None


def _refuse_member_switch(obj: Any, key: str, value: Any, path: str) -> None:
    """A ``name`` that picks a union member (``algorithm.name=dapo``) cannot be changed
    alone: the other fields would keep the old member's values, not the new one's
    defaults. Raises ConfigError saying to give the whole section."""
    if key != "name" or not dataclasses.is_dataclass(obj) or getattr(obj, "name", value) == value:
        return
    hint = typing.get_type_hints(type(obj)).get("name")
    if typing.get_origin(hint) is typing.Literal:
        raise ConfigError(f"override {path}.name={value}: the name picks the config's class "
                          f"and its defaults; give the whole section instead: "
                          f"{path}={{name: {value}}}")


def override(cfg: T, items: Sequence[str]) -> T:
    """Returns ``cfg`` with ``key=value`` overrides applied (nested keys with dots). Keys
    of free-form dict fields (``model.overrides.remat=full``, ``task.knobs.x=1``) may be
    new; every other key must exist. A key inside an unset optional section
    (``fit.lora.rank=8`` while ``fit.lora`` is null) sets it up from its defaults."""
    data = to_dict(cfg)
    for item in items:
        keys, value = parse_override(item)
        node, obj = data, cfg
        for i, k in enumerate(keys):
            free = isinstance(obj, dict)  # a dict-valued field: any key goes
            if not isinstance(node, dict) or (k not in node and not free):
                valid = sorted(node) if isinstance(node, dict) else []
                raise ConfigError(f"override {item!r}: unknown key {'.'.join(keys[:i + 1])!r}"
                                  + (f"; valid keys here: {valid}" if i == len(keys) - 1
                                     else ""))
            if i == len(keys) - 1:
                _refuse_member_switch(obj, k, value, ".".join(keys[:-1]))
                node[k] = value
                break
            if node.get(k) is None:
                node[k] = {}
            node = node[k]
            parent = obj
            obj = obj.get(k) if isinstance(obj, dict) else getattr(obj, k, None)
            if obj is None:
                obj = {} if free else _unset_section(parent, k)
                if dataclasses.is_dataclass(obj) and not node:
                    node.update(to_dict(obj))
    return from_dict(type(cfg), data)


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a key given twice in one mapping (PyYAML keeps the
    last silently, so a second ``warmup:`` block would drop the first's fields)."""

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first on line {seen[key] + 1})",
                    key_node.start_mark)
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep)


def read_yaml(path: str | Path) -> dict:
    """A YAML file's top-level mapping; bad YAML and duplicate keys raise ConfigError
    naming the file and line."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = yaml.load(path.read_text(), Loader=_UniqueKeyLoader) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(e, "problem", None) or str(e)
        raise ConfigError(f"{where}: not valid YAML: {problem}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not a text file ({e})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got "
                          f"{type(data).__name__}")
    return data


def load_yaml(cls: type[T], path: str | Path, overrides: Sequence[str] = ()) -> T:
    """Reads a YAML file into dataclass ``cls`` and applies overrides."""
    path = Path(path)
    data = read_yaml(path)
    try:
        cfg = from_dict(cls, data)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    return override(cfg, overrides)


def save_yaml(cfg: Any, path: str | Path) -> None:
    """Writes ``cfg`` as YAML atomically (see :mod:`reasonjax.fileio`)."""
    from reasonjax.fileio import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))
