"""The OCI runtime spec's ``config.json`` (runtime-spec 1.0.0 to 1.3.x) as dataclasses.

One generic decoder/encoder pair turns JSON into these classes and back,
driven by each field's type annotation and ``metadata``; no class has a
hand-written converter.  The decoder is also the validator: it checks types,
runs each field's ``check`` and each class's ``_check`` (rules spanning
fields), and reports the first problem as a ``ConfigError`` whose ``path`` is
the JSON path a user can find in their config.json, e.g.
``linux.namespaces[2].type``.  ``validate`` reuses it by encoding first, so a
spec built in Python is checked by exactly the same rules as one read from
disk.

Keys this module does not know (the spec allows extensions, and it has
platform sections sandboxer ignores) are kept in each object's ``extra`` and
written back, so a config survives load → dump unchanged.

Annotations are evaluated at class creation (no ``from __future__ import
annotations``) because the decoder reads them as real types; ``typing`` is
kept out of the import path to keep ``import sandboxer.oci.spec`` cheap.
"""

import dataclasses
import json
import os
import re
import types
from collections.abc import Callable, Iterable, Mapping
from contextlib import suppress
from dataclasses import MISSING, dataclass, field

from sandboxer.errors import ConfigError, HostError
from sandboxer.runtime.capabilities import CAPABILITIES, DEFAULT_CAPS

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import IO, Any

    Source = str | bytes | os.PathLike[str] | IO[str] | IO[bytes] | Mapping[str, Any]
else:
    Any = object  # at run time "Any" only means "any JSON value"

__all__ = [
    "OCI_VERSION", "SUPPORTED_VERSIONS",
    "CAPABILITIES", "DEFAULT_CAPS", "RLIMITS", "NAMESPACE_TYPES",
    "PROPAGATIONS", "SECCOMP_ACTIONS", "SECCOMP_OPS",
    "Spec", "Process", "ConsoleSize", "User", "Capabilities", "Rlimit",
    "Root", "Mount", "Hooks", "Hook", "Linux", "IDMapping", "Namespace",
    "load", "loads", "dump", "dumps", "validate", "require_runnable",
    "from_json", "to_json",
]

#: the version sandboxer writes; every field it emits exists since 1.0.0
OCI_VERSION = "1.2.0"
SUPPORTED_VERSIONS = "1.0.0\u20131.3.x"  # en dash

# setrlimit(2) resources in asm-generic order (x86, arm, arm64, riscv, ppc, s390).
_RLIMIT_NAMES = (
    "CPU", "FSIZE", "DATA", "STACK", "CORE", "RSS", "NPROC", "NOFILE",
    "MEMLOCK", "AS", "LOCKS", "SIGPENDING", "MSGQUEUE", "NICE", "RTPRIO",
    "RTTIME",
)
#: rlimit name ("RLIMIT_NOFILE") -> resource number for setrlimit(2)
RLIMITS: dict[str, int] = {f"RLIMIT_{n}": i for i, n in enumerate(_RLIMIT_NAMES)}

NAMESPACE_TYPES = ("pid", "network", "mount", "ipc", "uts", "user", "cgroup", "time")
PROPAGATIONS = (
    "private", "rprivate", "slave", "rslave", "shared", "rshared",
    "unbindable", "runbindable",
)
#: exported so the seccomp module checks against the same lists
SECCOMP_ACTIONS = (
    "SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL_THREAD",
    "SCMP_ACT_TRAP", "SCMP_ACT_ERRNO", "SCMP_ACT_TRACE", "SCMP_ACT_ALLOW",
    "SCMP_ACT_LOG", "SCMP_ACT_NOTIFY",
)
SECCOMP_OPS = (
    "SCMP_CMP_NE", "SCMP_CMP_LT", "SCMP_CMP_LE", "SCMP_CMP_EQ",
    "SCMP_CMP_GE", "SCMP_CMP_GT", "SCMP_CMP_MASKED_EQ",
)

_U16, _U32, _U64 = 2**16 - 1, 2**32 - 1, 2**64 - 1

# --- field checks: (value, path) -> None, raising ConfigError ------------

_Check = Callable[[Any, str], None]


def _one_of(allowed: Iterable[str], what: str) -> _Check:
    """Refuse values outside ``allowed``; the hint names the likely fix."""
    choices = tuple(allowed)

    def check(value: str, path: str) -> None:
        if value in choices:
            return
        import difflib  # only on the error path

        close = difflib.get_close_matches(value, choices, n=1)
        if close:
            hint = f"did you mean {json.dumps(close[0])}?"
        elif len(choices) <= 10:
            hint = "expected one of: " + ", ".join(choices)
        else:
            hint = None
        raise ConfigError(path, f"unknown {what} {json.dumps(value)}", hint)

    return check


def _int_range(lo: int, hi: int | None = None) -> _Check:
    def check(value: int, path: str) -> None:
        if value < lo:
            text = {0: "must not be negative", 1: "must be greater than 0"}
            raise ConfigError(path, text.get(lo, f"must be at least {lo}"))
        if hi is not None and value > hi:
            raise ConfigError(path, f"must be at most {hi}")

    return check


def _absolute(value: str, path: str) -> None:
    if not value.startswith("/"):
        raise ConfigError(path, "must be an absolute path")


def _each(check: _Check) -> _Check:
    def check_all(values: list[Any], path: str) -> None:
        for i, value in enumerate(values):
            check(value, f"{path}[{i}]")

    return check_all


def _version(value: str, path: str) -> None:
    """Accept SemVer 1.0.0 to 1.3.x, including pre-releases such as 1.0.2-dev."""
    m = re.fullmatch(r"(\d+)\.(\d+)\.(\d+)(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?", value)
    if m is not None:
        major, minor, patch = (int(g) for g in m.group(1, 2, 3))
        before_1_0_0 = (minor, patch) == (0, 0) and m.group(4)  # e.g. 1.0.0-rc5
        if major == 1 and minor <= 3 and not before_1_0_0:
            return
    raise ConfigError(path, f"unsupported version {json.dumps(value)} (supported {SUPPORTED_VERSIONS})",
                      hint=None if m else f'ociVersion is SemVer, e.g. "{OCI_VERSION}"')


def _annotation_keys(value: dict[str, str], path: str) -> None:
    if "" in value:
        raise ConfigError(f'{path}[""]', "annotation keys must not be empty")


def _seccomp(value: dict[str, Any], path: str) -> None:
    """Check the names a seccomp profile picks from fixed lists, nothing deeper.

    The seccomp module compiles and validates profiles in full; this catches
    typos at load time, with the path, before anything is set up.
    """
    p = f"{path}.defaultAction"
    if "defaultAction" not in value:
        raise ConfigError(p, "is required")
    _SECCOMP_ACTION(_decode(str, value["defaultAction"], p), p)
    p = f"{path}.syscalls"
    for i, rule in enumerate(_decode(list[dict[str, Any]], value.get("syscalls", []), p)):
        if "action" in rule:
            _SECCOMP_ACTION(_decode(str, rule["action"], f"{p}[{i}].action"), f"{p}[{i}].action")
        pa = f"{p}[{i}].args"
        for j, arg in enumerate(_decode(list[dict[str, Any]], rule.get("args", []), pa)):
            if "op" in arg:
                _SECCOMP_OP(_decode(str, arg["op"], f"{pa}[{j}].op"), f"{pa}[{j}].op")


_SECCOMP_ACTION = _one_of(SECCOMP_ACTIONS, "seccomp action")
_SECCOMP_OP = _one_of(SECCOMP_OPS, "seccomp operator")
_CAP_LIST = _each(_one_of(CAPABILITIES, "capability"))
_ID = _int_range(0, _U32)  # user and group IDs (and umasks) are 32-bit
_PATHS = _each(_absolute)


def _check_unique(items: list[Any], attr: str, path: str, what: str) -> None:
    seen: set[str] = set()
    for i, item in enumerate(items):
        value = getattr(item, attr)
        if value in seen:
            raise ConfigError(f"{path}[{i}].{attr}", f"duplicate {what} {json.dumps(value)}")
        seen.add(value)


def _check_id_mappings(mappings: "list[IDMapping]", path: str) -> None:
    """The kernel refuses a uid_map/gid_map whose ranges overlap on either side."""
    for j, b in enumerate(mappings):
        for i, a in enumerate(mappings[:j]):
            for side, start_a, start_b in (("container", a.container_id, b.container_id),
                                           ("host", a.host_id, b.host_id)):
                if start_a < start_b + b.size and start_b < start_a + a.size:
                    raise ConfigError(f"{path}[{j}]", f"{side} IDs overlap those of {path}[{i}]")


# --- field declarations --------------------------------------------------


def _meta(*, key: str | None = None, check: _Check | None = None,
          always: bool = False, required: bool = False) -> dict[str, Any]:
    """Field metadata: ``key`` overrides the derived camelCase JSON name,
    ``always`` emits the field even at its default (the spec marks it
    REQUIRED), ``required`` also refuses a config that lacks it."""
    return {"key": key, "check": check, "always": always or required, "required": required}


@dataclass
class _Object:
    """Base of every spec object: ``extra`` keeps the JSON keys this module
    does not model, so they are written back unchanged."""

    extra: dict[str, Any] = field(default_factory=dict, kw_only=True, repr=False,
                                  metadata={"extra": True})

    def _check(self, path: str) -> None:
        """Rules spanning several fields; ``path`` is this object's JSON path."""


@dataclass
class IDMapping(_Object):
    """IDs ``container_id`` .. ``container_id + size - 1`` in the container are ``host_id`` .. on the host."""

    container_id: int = field(metadata=_meta(key="containerID", check=_ID))
    host_id: int = field(metadata=_meta(key="hostID", check=_ID))
    size: int = field(metadata=_meta(check=_int_range(1, _U32)))

    def _check(self, path: str) -> None:
        if max(self.container_id, self.host_id) + self.size - 1 > _U32:
            raise ConfigError(f"{path}.size", "the range runs past the last 32-bit ID")


@dataclass
class ConsoleSize(_Object):
    """The terminal's size in characters; ignored unless ``Process.terminal``."""

    height: int = field(metadata=_meta(check=_int_range(0, _U16)))
    width: int = field(metadata=_meta(check=_int_range(0, _U16)))


@dataclass
class User(_Object):
    """Who the process runs as, in the container's IDs."""

    uid: int = field(default=0, metadata=_meta(always=True, check=_ID))
    gid: int = field(default=0, metadata=_meta(always=True, check=_ID))
    umask: int | None = field(default=None, metadata=_meta(check=_ID))
    additional_gids: list[int] = field(default_factory=list, metadata=_meta(check=_each(_ID)))
    username: str | None = None


@dataclass
class Capabilities(_Object):
    """The five capability sets, as names such as "CAP_CHOWN"."""

    bounding: list[str] = field(default_factory=list, metadata=_meta(check=_CAP_LIST))
    effective: list[str] = field(default_factory=list, metadata=_meta(check=_CAP_LIST))
    inheritable: list[str] = field(default_factory=list, metadata=_meta(check=_CAP_LIST))
    permitted: list[str] = field(default_factory=list, metadata=_meta(check=_CAP_LIST))
    ambient: list[str] = field(default_factory=list, metadata=_meta(check=_CAP_LIST))


@dataclass
class Rlimit(_Object):
    """A setrlimit(2) limit; ``type`` is a key of ``RLIMITS``."""

    type: str = field(metadata=_meta(check=_one_of(RLIMITS, "rlimit")))
    hard: int = field(metadata=_meta(check=_int_range(0, _U64)))
    soft: int = field(metadata=_meta(check=_int_range(0, _U64)))

    def _check(self, path: str) -> None:
        if self.soft > self.hard:  # setrlimit(2) would fail with EINVAL
            raise ConfigError(f"{path}.soft", f"must not exceed hard ({self.hard})")


@dataclass
class Process(_Object):
    """What runs in the container; ``scheduler`` and ``io_priority`` are kept as raw JSON."""

    terminal: bool = False
    console_size: ConsoleSize | None = None
    user: User = field(default_factory=User, metadata=_meta(always=True))
    args: list[str] = field(default_factory=list)
    command_line: str | None = None
    env: list[str] = field(default_factory=list)
    cwd: str = field(default="/", metadata=_meta(always=True, check=_absolute))
    capabilities: Capabilities | None = None
    rlimits: list[Rlimit] = field(default_factory=list)
    no_new_privileges: bool = False
    apparmor_profile: str | None = None
    oom_score_adj: int | None = field(default=None, metadata=_meta(check=_int_range(-1000, 1000)))
    scheduler: dict[str, Any] | None = None
    selinux_label: str | None = None
    io_priority: dict[str, Any] | None = None

    def _check(self, path: str) -> None:
        _check_unique(self.rlimits, "type", f"{path}.rlimits", "rlimit")


@dataclass
class Root(_Object):
    """The root filesystem; a relative ``path`` is relative to the bundle."""

    path: str
    readonly: bool = False


@dataclass
class Mount(_Object):
    """One mount, applied in list order; ``uid_mappings``/``gid_mappings`` make it ID-mapped."""

    destination: str = field(metadata=_meta(check=_absolute))
    source: str | None = None
    type: str | None = None
    options: list[str] = field(default_factory=list)
    uid_mappings: list[IDMapping] = field(default_factory=list)
    gid_mappings: list[IDMapping] = field(default_factory=list)

    def _check(self, path: str) -> None:
        if bool(self.uid_mappings) != bool(self.gid_mappings):
            given, missing = (("uid", "gid") if self.uid_mappings else ("gid", "uid"))
            raise ConfigError(f"{path}.{missing}Mappings", f"is required when {given}Mappings is set")
        _check_id_mappings(self.uid_mappings, f"{path}.uidMappings")
        _check_id_mappings(self.gid_mappings, f"{path}.gidMappings")


@dataclass
class Hook(_Object):
    """A program run at a lifecycle point, given the container state on stdin."""

    path: str = field(metadata=_meta(check=_absolute))
    args: list[str] = field(default_factory=list)
    env: list[str] = field(default_factory=list)
    timeout: int | None = field(default=None, metadata=_meta(check=_int_range(1)))


@dataclass
class Hooks(_Object):
    """Hooks by lifecycle point (``prestart`` is deprecated for the create*/start* ones)."""

    prestart: list[Hook] = field(default_factory=list)
    create_runtime: list[Hook] = field(default_factory=list)
    create_container: list[Hook] = field(default_factory=list)
    start_container: list[Hook] = field(default_factory=list)
    poststart: list[Hook] = field(default_factory=list)
    poststop: list[Hook] = field(default_factory=list)


@dataclass
class Namespace(_Object):
    """A namespace to create, or to join when ``path`` names one."""

    type: str = field(metadata=_meta(check=_one_of(NAMESPACE_TYPES, "namespace")))
    path: str | None = field(default=None, metadata=_meta(check=_absolute))


@dataclass
class Linux(_Object):
    """Linux-only settings.  ``resources``, ``devices``, ``seccomp``, ``personality``
    and ``time_offsets`` are kept as raw JSON for the modules that apply them."""

    uid_mappings: list[IDMapping] = field(default_factory=list)
    gid_mappings: list[IDMapping] = field(default_factory=list)
    sysctl: dict[str, str] = field(default_factory=dict)
    resources: dict[str, Any] | None = None
    cgroups_path: str | None = None
    namespaces: list[Namespace] = field(default_factory=list)
    devices: list[dict[str, Any]] = field(default_factory=list)
    seccomp: dict[str, Any] | None = field(default=None, metadata=_meta(check=_seccomp))
    rootfs_propagation: str | None = field(
        default=None, metadata=_meta(check=_one_of(PROPAGATIONS, "rootfs propagation")))
    masked_paths: list[str] = field(default_factory=list, metadata=_meta(check=_PATHS))
    readonly_paths: list[str] = field(default_factory=list, metadata=_meta(check=_PATHS))
    mount_label: str | None = None
    personality: dict[str, Any] | None = None
    time_offsets: dict[str, Any] | None = None

    def namespace(self, type: str) -> Namespace | None:
        """The entry for namespace ``type``, or None when the host's is shared."""
        return next((ns for ns in self.namespaces if ns.type == type), None)

    def _check(self, path: str) -> None:
        _check_unique(self.namespaces, "type", f"{path}.namespaces", "namespace")
        for key, needs, present in (("uidMappings", "user", self.uid_mappings),
                                    ("gidMappings", "user", self.gid_mappings),
                                    ("timeOffsets", "time", self.time_offsets)):
            if present and self.namespace(needs) is None:
                raise ConfigError(f"{path}.{key}", f'requires a "{needs}" namespace',
                                  hint=f'add {{"type": "{needs}"}} to {path}.namespaces')
        _check_id_mappings(self.uid_mappings, f"{path}.uidMappings")
        _check_id_mappings(self.gid_mappings, f"{path}.gidMappings")


@dataclass
class Spec(_Object):
    """A whole config.json."""

    oci_version: str = field(default=OCI_VERSION, metadata=_meta(required=True, check=_version))
    process: Process | None = None
    root: Root | None = None
    hostname: str | None = None
    domainname: str | None = None
    mounts: list[Mount] = field(default_factory=list)
    hooks: Hooks | None = None
    annotations: dict[str, str] = field(default_factory=dict, metadata=_meta(check=_annotation_keys))
    linux: Linux | None = None

    def _check(self, path: str) -> None:
        for key, value in (("hostname", self.hostname), ("domainname", self.domainname)):
            if value and (self.linux is None or self.linux.namespace("uts") is None):
                raise ConfigError(_join(path, key), 'can only be set with a "uts" namespace',
                                  hint='add {"type": "uts"} to linux.namespaces')


# --- the generic converter -----------------------------------------------

_NoValue = object()  # default of a field that has none
_FieldInfo = tuple[dataclasses.Field[Any], str, Any]
_FIELDS: dict[type, tuple[_FieldInfo, ...]] = {}


def _fields(cls: type) -> tuple[_FieldInfo, ...]:
    """(field, JSON key, default) for each modelled field of ``cls``, cached."""
    if cls in _FIELDS:
        return _FIELDS[cls]
    out = []
    for f in dataclasses.fields(cls):
        if f.metadata.get("extra"):
            continue
        head, *rest = f.name.split("_")
        key = f.metadata.get("key") or head + "".join(w[:1].upper() + w[1:] for w in rest)
        if f.default is not MISSING:
            default = f.default
        elif f.default_factory is not MISSING:
            default = f.default_factory()
        else:
            default = _NoValue
        out.append((f, key, default))
    info = _FIELDS[cls] = tuple(out)
    return info


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


_NAMES = {str: ("a string", "strings"), int: ("an integer", "integers"),
          bool: ("a boolean", "booleans")}


def _describe(tp: Any, plural: bool = False) -> str:
    """English for a type, as in 'must be a list of strings'."""
    if isinstance(tp, types.UnionType):
        tp = next(a for a in tp.__args__ if a is not types.NoneType)
    if getattr(tp, "__origin__", None) is list:
        return "lists" if plural else f"a list of {_describe(tp.__args__[0], True)}"
    if tp in _NAMES:
        return _NAMES[tp][plural]
    return "objects" if plural else "an object"


def _decode(tp: Any, value: Any, path: str) -> Any:
    """Convert JSON ``value`` to ``tp``, refusing wrong types with ``path``."""
    if isinstance(tp, types.UnionType):  # only ever "X | None"
        if value is None:
            return None
        tp = next(a for a in tp.__args__ if a is not types.NoneType)
    origin = getattr(tp, "__origin__", None)
    if origin is list and isinstance(value, list):
        elem = tp.__args__[0]
        return [_decode(elem, v, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is dict and isinstance(value, dict) and all(isinstance(k, str) for k in value):
        elem = tp.__args__[1]
        return {k: _decode(elem, v, f"{path}[{json.dumps(k)}]") for k, v in value.items()}
    if dataclasses.is_dataclass(tp) and isinstance(value, dict):
        return _decode_object(tp, value, path)
    if tp is object or (tp is dict and isinstance(value, dict)):
        return value  # object is what "Any" is at run time: any JSON value
    if tp in _NAMES and isinstance(value, tp) and (tp is bool or not isinstance(value, bool)):
        return value  # bool is an int to Python but not to JSON
    raise ConfigError(path, f"must be {_describe(tp)}")


def _decode_object(cls: Any, value: dict[str, Any], path: str) -> Any:
    kwargs: dict[str, Any] = {}
    known = set()
    for f, key, default in _fields(cls):
        known.add(key)
        sub = _join(path, key)
        if key not in value:
            if default is _NoValue or f.metadata.get("required"):
                raise ConfigError(sub, "is required")
            continue
        v = kwargs[f.name] = _decode(f.type, value[key], sub)
        check = f.metadata.get("check")
        if check is not None and v is not None:
            check(v, sub)
    obj = cls(**kwargs, extra={k: v for k, v in value.items() if k not in known})
    obj._check(path)
    return obj


def from_json(cls: type, data: Any, path: str = "") -> Any:
    """Build a ``cls`` instance from parsed JSON, checking everything."""
    return _decode(cls, data, path)


def to_json(value: Any) -> Any:
    """Plain JSON data for a spec object, leaving out fields at their defaults.

    No checks here: values are passed through as they are, so that
    ``validate`` (decode after encode) names any wrong type by its path.
    """
    if isinstance(value, _Object):
        out: dict[str, Any] = {}
        for f, key, default in _fields(type(value)):
            v = getattr(value, f.name)
            is_default = type(v) is type(default) and v == default
            if f.metadata.get("always") or not is_default:
                out[key] = to_json(v)
        for k, v in value.extra.items():
            out.setdefault(k, to_json(v))
        return out
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    if isinstance(value, dict):
        return {k: to_json(v) for k, v in value.items()}
    return value


# --- public API ----------------------------------------------------------


def _parse(data: Any) -> Spec:
    if not isinstance(data, dict):
        raise ConfigError("", "config.json must hold a JSON object")
    spec: Spec = _decode(Spec, data, "")
    return spec


def validate(spec: Spec) -> None:
    """Raise ``ConfigError`` for the first problem in ``spec``, with its JSON path."""
    _parse(to_json(spec))


def require_runnable(spec: Spec) -> None:
    """``validate``, plus what only running needs: a process to run and a root."""
    validate(spec)
    if spec.process is None:
        raise ConfigError("process", "is required to run a container",
                          hint='add one naming the program, e.g. "process": {"args": ["sh"], "cwd": "/"}')
    if not spec.process.args:
        raise ConfigError("process.args", "must be a non-empty list of strings",
                          hint='name the program to run, e.g. "args": ["sh"]')
    if spec.root is None or not spec.root.path:
        raise ConfigError("root.path", "is required to run a container",
                          hint='point it at the root filesystem, e.g. "rootfs"')


def loads(text: str | bytes, source: str = "config.json") -> Spec:
    """Parse and check config.json text; ``source`` names it in syntax errors."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError("", f"{source}: invalid JSON at line {e.lineno}, "
                          f"column {e.colno}: {e.msg}") from None
    except UnicodeDecodeError as e:
        raise ConfigError("", f"{source}: not UTF-8 text ({e.reason})") from None
    return _parse(data)


def _config_path(path: "str | os.PathLike[str]") -> str:
    """A bundle directory stands for the config.json inside it."""
    path = os.fspath(path)
    return os.path.join(path, "config.json") if os.path.isdir(path) else path


def load(source: "Source") -> Spec:
    """Load a spec from a config.json path, a bundle directory, an open file,
    JSON text (a string starting with ``{``) or already-parsed JSON."""
    if isinstance(source, Mapping):
        return _parse(dict(source))
    if isinstance(source, bytes) or (isinstance(source, str) and source.lstrip()[:1] == "{"):
        return loads(source, "<string>")
    if not isinstance(source, (str, os.PathLike)):
        return loads(source.read(), getattr(source, "name", "<file>"))
    path = _config_path(source)
    try:
        with open(path, "rb") as f:
            text = f.read()
    except FileNotFoundError:
        raise ConfigError("", f"{path}: no such file",
                          hint="create a template with `sandboxer spec` in the bundle "
                               "directory") from None
    except OSError as e:
        raise ConfigError("", f"cannot read {path}: {e.strerror or e}") from None
    return loads(text, path)


def dumps(spec: Spec, indent: int | None = 2) -> str:
    """The spec as JSON text; refuses a spec that ``load`` would refuse."""
    data = to_json(spec)
    _parse(data)
    return json.dumps(data, indent=indent, ensure_ascii=False)


def dump(spec: Spec, path: "str | os.PathLike[str]") -> str:
    """Write ``spec`` to ``path`` (or ``path``/config.json for a bundle
    directory) atomically: readers see the old file or the new, never half.
    Returns the path written."""
    text = dumps(spec) + "\n"
    path = _config_path(path)
    head, tail = os.path.split(path)
    tmp = os.path.join(head, f".{tail}.{os.getpid()}.tmp")  # same fs: rename is atomic
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o666)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        with suppress(OSError):
            os.unlink(tmp)
        raise HostError(f"cannot write {path}: {e.strerror or e}") from None
    return path
