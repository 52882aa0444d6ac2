"""The OCI runtime spec: config.json as typed dataclasses, and its template.

``load``/``dump`` read and write config.json, checking it on the way with
errors that name the JSON path at fault; ``spec_template`` is what
``sandboxer spec`` writes.
"""

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
