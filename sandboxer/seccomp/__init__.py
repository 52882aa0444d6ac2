"""Seccomp for sandboxer: OCI profiles compiled to classic BPF in pure Python.

What every ``sandboxer run`` needs, the default profile for a capability set::

    bpf, flags = default_bpf(caps)                # before pivot_root: the cache is on the host
    ...
    syscalls.set_no_new_privs()                   # or hold CAP_SYS_ADMIN
    syscalls.seccomp_set_filter(bpf, flags)       # last step before exec

Any other profile::

    profile = resolve(load_profile(path), caps)   # plain OCI object, goes into config.json
    bpf = cached_bpf(profile)
    syscalls.seccomp_set_filter(bpf, filter_flags(profile))

:func:`load` is ``cached_bpf`` + ``seccomp_set_filter`` in one call, for when
the cache directory is still reachable.  Compiled programs are cached on disk
because a hit is far cheaper than compiling (~1 ms for the default profile)
and, for :func:`default_bpf`, than even importing the JSON parser and the
compiler.  So this package imports nothing at import time: each name below is
loaded from its submodule on first use, and a warm ``default_bpf`` call loads
only :mod:`sandboxer.seccomp.cache` (``os`` and ``zlib``).
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:  # not `typing.TYPE_CHECKING`: importing typing costs ~9 ms
    from sandboxer.seccomp.cache import cached_bpf, default_bpf, filter_flags, load
    from sandboxer.seccomp.compiler import compile_bpf
    from sandboxer.seccomp.profile import default_profile, load_profile, resolve

__all__ = [
    "cached_bpf", "compile_bpf", "default_bpf", "default_profile", "filter_flags", "load",
    "load_profile", "resolve",
]

#: public name -> the submodule defining it
_LAZY = {
    "cached_bpf": "cache", "default_bpf": "cache", "filter_flags": "cache", "load": "cache",
    "compile_bpf": "compiler",
    "default_profile": "profile", "load_profile": "profile", "resolve": "profile",
}


def __getattr__(name: str) -> object:
    submodule = _LAZY.get(name)
    if submodule is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    # the import statement, not importlib: that module is not loaded at start-up
    if submodule == "cache":
        from sandboxer.seccomp import cache as module
    elif submodule == "compiler":
        from sandboxer.seccomp import compiler as module  # type: ignore[no-redef]
    else:
        from sandboxer.seccomp import profile as module  # type: ignore[no-redef]
    value = getattr(module, name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
