"""The OCI runtime spec: config.json as typed dataclasses, and its template.

``load``/``dump`` read and write config.json, checking it on the way with
errors that name the JSON path at fault; ``spec_template`` is what
``sandboxer spec`` writes.

The names below load on first use (PEP 562): ``exec`` and ``kill`` import
:mod:`sandboxer.oci.container` to ask whether an ID is an OCI container,
and the spec's dataclasses (dataclasses, inspect, typing: ~25 ms) are not
worth loading for a detached sandbox's ``exec``.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from sandboxer.oci.spec import (
        CAPABILITIES,
        DEFAULT_CAPS,
        NAMESPACE_TYPES,
        OCI_VERSION,
        PROPAGATIONS,
        RLIMITS,
        SECCOMP_ACTIONS,
        SECCOMP_OPS,
        SUPPORTED_VERSIONS,
        Capabilities,
        ConsoleSize,
        Hook,
        Hooks,
        IDMapping,
        Linux,
        Mount,
        Namespace,
        Process,
        Rlimit,
        Root,
        Spec,
        User,
        dump,
        dumps,
        from_json,
        load,
        loads,
        require_runnable,
        to_json,
        validate,
    )
    from sandboxer.oci.template import (
        MASKED_PATHS,
        READONLY_PATHS,
        spec_template,
        write_template,
    )

__all__ = [
    "OCI_VERSION", "SUPPORTED_VERSIONS",
    "CAPABILITIES", "DEFAULT_CAPS", "RLIMITS", "NAMESPACE_TYPES",
    "PROPAGATIONS", "SECCOMP_ACTIONS", "SECCOMP_OPS",
    "MASKED_PATHS", "READONLY_PATHS",
    "Spec", "Process", "ConsoleSize", "User", "Capabilities", "Rlimit",
    "Root", "Mount", "Hooks", "Hook", "Linux", "IDMapping", "Namespace",
    "load", "loads", "dump", "dumps", "validate", "require_runnable",
    "from_json", "to_json",
    "spec_template", "write_template",
]

_FROM_TEMPLATE = frozenset({"MASKED_PATHS", "READONLY_PATHS", "spec_template", "write_template"})


def __getattr__(name: str) -> object:
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f"{__name__}.{'template' if name in _FROM_TEMPLATE else 'spec'}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
