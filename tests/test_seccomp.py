"""Tests of sandboxer.seccomp: the compiler against a tiny classic-BPF interpreter,
profile validation and resolution, the on-disk cache, and the real kernel.

The interpreter below runs a program on a packed ``seccomp_data`` the way the
kernel does, so compiler tests check behaviour (which action a syscall gets),
not instruction sequences.
"""

from __future__ import annotations

import ctypes
import errno
import importlib.util
import json
import mmap
import os
import resource
import signal
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import sandboxer.seccomp as seccomp
from sandboxer import syscalls
from sandboxer.errors import ConfigError, HostError
from sandboxer.oci.spec import SECCOMP_ACTIONS, SECCOMP_OPS
from sandboxer.seccomp import cache, compiler, profile, syscall_tables

ROOT = Path(__file__).resolve().parent.parent

# --- a classic-BPF interpreter (the subset seccomp allows) ---------------------

AUDIT_X86_64 = 0xC000003E
AUDIT_I386 = 0x40000003
AUDIT_AARCH64 = 0xC00000B7
AUDIT_ARM = 0x40000028
X32_BIT = 0x40000000

ALLOW = 0x7FFF0000
ERRNO = 0x00050000
KILL_THREAD = 0x00000000  # SCMP_ACT_KILL: libseccomp's bad-arch action, which runc keeps
EPERM_RET = ERRNO | errno.EPERM
ENOSYS_RET = ERRNO | errno.ENOSYS
ONES64 = (1 << 64) - 1

_JUMPS: dict[int, Callable[[int, int], bool]] = {
    0x15: lambda a, k: a == k,        # JEQ
    0x25: lambda a, k: a > k,         # JGT
    0x35: lambda a, k: a >= k,        # JGE
    0x45: lambda a, k: bool(a & k),   # JSET
}


def decode(prog: bytes) -> list[tuple[int, int, int, int]]:
    """Split a program and check what the kernel's loader checks."""
    assert prog and len(prog) % 8 == 0 and len(prog) // 8 <= compiler.MAX_INSNS
    insns = [struct.unpack_from("HBBI", prog, off) for off in range(0, len(prog), 8)]
    for pc, (code, jt, jf, k) in enumerate(insns):
        if code in _JUMPS:
            assert pc + 1 + max(jt, jf) < len(insns), f"jump out of program at {pc}"
        elif code == 0x05:
            assert pc + 1 + k < len(insns), f"JA out of program at {pc}"
        elif code == 0x20:
            assert k % 4 == 0 and k < 64, f"bad seccomp_data load at {pc}"
        else:
            assert code in (0x54, 0x06), f"unexpected opcode {code:#x} at {pc}"
    assert insns[-1][0] == 0x06, "program must end with RET"
    return insns


def run(prog: bytes, nr: int, arch: int = AUDIT_X86_64, args: tuple[int, ...] = ()) -> int:
    """The SECCOMP_RET_* value ``prog`` returns for one syscall."""
    full_args = tuple(args) + (0,) * (6 - len(args))
    data = struct.pack("<IIQ6Q", nr & 0xFFFFFFFF, arch, 0, *full_args)
    insns = decode(prog)
    acc, pc = 0, 0
    while True:
        code, jt, jf, k = insns[pc]
        pc += 1
        if code == 0x20:
            acc = struct.unpack_from("<I", data, k)[0]
        elif code == 0x54:
            acc &= k
        elif code == 0x05:
            pc += k
        elif code in _JUMPS:
            pc += jt if _JUMPS[code](acc, k) else jf
        else:
            return k


NR = syscall_tables.X86_64


def nr(name: str) -> int:
    return NR[name]


def compile_(syscalls_: list[dict[str, Any]], default: str = "SCMP_ACT_ERRNO", arch: str = "x86_64",
             **extra: Any) -> bytes:
    return seccomp.compile_bpf({"defaultAction": default, "syscalls": syscalls_, **extra}, arch)


def allow(*names: str, **extra: Any) -> dict[str, Any]:
    return {"names": list(names), "action": "SCMP_ACT_ALLOW", **extra}


def arg(index: int, op: str, value: int, value_two: int | None = None) -> dict[str, Any]:
    out = {"index": index, "op": f"SCMP_CMP_{op}", "value": value}
    if value_two is not None:
        out["valueTwo"] = value_two
    return out


# --- tables and constants ------------------------------------------------------

def test_tables_have_known_numbers() -> None:
    assert (NR["read"], NR["clone3"], NR["keyctl"]) == (0, 435, 250)
    assert (syscall_tables.AARCH64["openat"], syscall_tables.AARCH64["clone3"]) == (56, 435)
    assert "open" not in syscall_tables.AARCH64  # arm64 has only the *at calls
    assert syscall_tables.I386["socketcall"] == 102
    assert syscall_tables.X32["read"] == X32_BIT
    assert syscall_tables.X32["rt_sigaction"] == X32_BIT | 512


@pytest.mark.skipif(not Path("/usr/include/asm-generic/unistd.h").exists(), reason="no kernel headers")
def test_committed_tables_match_the_generator() -> None:
    spec = importlib.util.spec_from_file_location("gen", ROOT / "tools" / "gen_syscall_tables.py")
    assert spec and spec.loader
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    tables, source = gen.generate(Path("/usr/include"))
    committed = Path(syscall_tables.__file__).read_text()
    if f"Source: {source}." not in committed:
        pytest.skip(f"the committed tables come from other headers than {source}")
    assert gen.render(tables, source) == committed


def test_names_agree_with_oci_spec_module() -> None:
    assert set(profile.ACTIONS) | {"SCMP_ACT_NOTIFY"} == set(SECCOMP_ACTIONS)
    assert set(SECCOMP_OPS) == profile.OPERATORS


# --- compiler --------------------------------------------------------------------

@pytest.mark.parametrize(("action", "extra", "ret"), [
    ("SCMP_ACT_ALLOW", {}, ALLOW),
    ("SCMP_ACT_ERRNO", {}, EPERM_RET),
    ("SCMP_ACT_ERRNO", {"errnoRet": 13}, ERRNO | 13),
    ("SCMP_ACT_KILL", {}, 0),
    ("SCMP_ACT_KILL_THREAD", {}, 0),
    ("SCMP_ACT_KILL_PROCESS", {}, 0x80000000),
    ("SCMP_ACT_TRAP", {}, 0x00030000),
    ("SCMP_ACT_TRACE", {"errnoRet": 7}, 0x7FF00007),
    ("SCMP_ACT_LOG", {}, 0x7FFC0000),
])
def test_actions(action: str, extra: dict[str, Any], ret: int) -> None:
    prog = compile_([{"names": ["getpid"], "action": action, **extra}], default="SCMP_ACT_ALLOW")
    assert run(prog, nr("getpid")) == ret
    assert run(prog, nr("getppid")) == ALLOW


def test_default_action_and_errno() -> None:
    prog = compile_([allow("read", "write")], defaultErrnoRet=22)
    assert run(prog, nr("read")) == ALLOW
    assert run(prog, nr("write")) == ALLOW
    assert run(prog, nr("open")) == ERRNO | 22
    assert run(prog, 0) == ALLOW  # read is nr 0: the lowest interval
    assert run(prog, nr("close")) == ERRNO | 22


def test_unknown_names_are_skipped() -> None:
    prog = compile_([allow("no_such_syscall", "getpid")])
    assert run(prog, nr("getpid")) == ALLOW


def test_unlisted_abis_get_the_bad_arch_action() -> None:
    assert compiler.BAD_ARCH == KILL_THREAD
    prog = compile_([allow("getpid")], default="SCMP_ACT_KILL_PROCESS")
    assert run(prog, nr("getpid"), arch=AUDIT_ARM) == KILL_THREAD
    assert run(prog, nr("getpid"), arch=AUDIT_I386) == KILL_THREAD  # i386 not listed


I386, X32 = syscall_tables.I386, syscall_tables.X32
DENY_LIST = [{"names": ["keyctl", "unshare"], "action": "SCMP_ACT_ERRNO"}]


@pytest.mark.parametrize("extra", [{}, {"architectures": ["SCMP_ARCH_X86_64"]}], ids=["no-list", "native"])
def test_a_deny_list_cannot_be_bypassed_through_unlisted_abis(extra: dict[str, Any]) -> None:
    """i386 (``int 0x80``) and x32 calls of an ABI the profile does not list are killed, not allowed."""
    prog = seccomp.compile_bpf({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": DENY_LIST, **extra}, "x86_64")
    assert run(prog, nr("keyctl")) == run(prog, nr("unshare")) == EPERM_RET
    assert run(prog, nr("getpid")) == ALLOW
    for name in ("keyctl", "unshare", "getpid"):
        assert run(prog, I386[name], arch=AUDIT_I386) == KILL_THREAD, name
        assert run(prog, X32[name]) == KILL_THREAD, name


def test_a_deny_list_filters_the_abis_it_lists() -> None:
    prog = compile_(DENY_LIST, default="SCMP_ACT_ALLOW", architectures=["SCMP_ARCH_X86"])
    assert run(prog, I386["keyctl"], arch=AUDIT_I386) == EPERM_RET
    assert run(prog, I386["getpid"], arch=AUDIT_I386) == ALLOW
    assert run(prog, X32["keyctl"]) == KILL_THREAD  # x32 still unlisted
    prog = compile_(DENY_LIST, default="SCMP_ACT_ALLOW", architectures=["SCMP_ARCH_X32"])
    assert run(prog, X32["keyctl"]) == EPERM_RET
    assert run(prog, X32["getpid"]) == ALLOW
    assert run(prog, I386["keyctl"], arch=AUDIT_I386) == KILL_THREAD


def test_listed_i386_is_filtered_with_its_own_numbers() -> None:
    prog = compile_([allow("getpid", "socketcall")], architectures=["SCMP_ARCH_X86"])
    i386 = syscall_tables.I386
    assert run(prog, i386["getpid"], arch=AUDIT_I386) == ALLOW
    assert run(prog, i386["socketcall"], arch=AUDIT_I386) == ALLOW
    assert run(prog, i386["read"], arch=AUDIT_I386) == EPERM_RET
    assert run(prog, nr("getpid")) == ALLOW


def test_x32_syscalls_get_the_bad_arch_action_unless_listed() -> None:
    rules = [allow("read", "getpid")]
    native_only = compile_(rules, default="SCMP_ACT_KILL_PROCESS")
    assert run(native_only, nr("read")) == ALLOW
    assert run(native_only, X32_BIT | nr("read")) == KILL_THREAD
    assert run(native_only, 0xFFFFFFFF) == KILL_THREAD
    with_x32 = compile_(rules, default="SCMP_ACT_KILL_PROCESS", architectures=["SCMP_ARCH_X32"])
    assert run(with_x32, syscall_tables.X32["read"]) == ALLOW
    assert run(with_x32, syscall_tables.X32["getpid"]) == ALLOW
    assert run(with_x32, syscall_tables.X32["write"]) == 0x80000000
    assert run(with_x32, max(syscall_tables.X32.values()) + 1) == ENOSYS_RET


def test_numbers_above_the_table_return_enosys() -> None:
    prog = compile_([allow("getpid")], default="SCMP_ACT_KILL_PROCESS")
    top = max(NR.values())
    assert run(prog, top) == 0x80000000  # known, not allowed
    assert run(prog, top + 1) == ENOSYS_RET
    assert run(prog, 1000) == ENOSYS_RET
    assert run(prog, X32_BIT - 1) == ENOSYS_RET
    assert run(prog, 400) == 0x80000000  # a hole below the top is merely unknown


def test_allow_by_default_lets_newer_syscalls_through() -> None:
    prog = compile_([{"names": ["keyctl"], "action": "SCMP_ACT_ERRNO"}], default="SCMP_ACT_ALLOW")
    assert run(prog, nr("keyctl")) == EPERM_RET
    assert run(prog, max(NR.values()) + 1) == ALLOW


_VALUES = [0, 1, 40, 0x7FFFFFFF, 0xFFFFFFFF, 1 << 32, (1 << 32) | 40, 0xFFFFFFFF00000000, ONES64]
_PREDICATES: dict[str, Callable[[int, int], bool]] = {
    "EQ": lambda a, v: a == v, "NE": lambda a, v: a != v,
    "LT": lambda a, v: a < v, "LE": lambda a, v: a <= v,
    "GT": lambda a, v: a > v, "GE": lambda a, v: a >= v,
}


@pytest.mark.parametrize("op", sorted(_PREDICATES))
@pytest.mark.parametrize("value", _VALUES)
def test_64bit_comparisons(op: str, value: int) -> None:
    prog = compile_([allow("ioctl", args=[arg(1, op, value)])])
    for actual in _VALUES:
        expected = ALLOW if _PREDICATES[op](actual, value) else EPERM_RET
        got = run(prog, nr("ioctl"), args=(0, actual))
        assert got == expected, f"arg {actual:#x} {op} {value:#x}"


@pytest.mark.parametrize(("mask", "want"), [
    (0x7E020000, 0), (0xFFFFFFFF, 40), (0xFF000000000000FF, 0x0100000000000001), (0, 0), (0, 1),
    (0x0F, 0xF0),
])
def test_masked_eq(mask: int, want: int) -> None:
    prog = compile_([allow("clone", args=[arg(0, "MASKED_EQ", mask, want)])])
    for actual in [*_VALUES, 0x10000000, 0x0100000000000001, 0x0200000000000001]:
        expected = ALLOW if actual & mask == want else EPERM_RET
        assert run(prog, nr("clone"), args=(actual,)) == expected, f"{actual:#x}"


def test_i386_compares_only_the_low_word() -> None:
    prog = compile_([allow("personality", args=[arg(0, "EQ", 0xFFFFFFFF)])],
                    architectures=["SCMP_ARCH_X86"])
    personality = syscall_tables.I386["personality"]
    assert run(prog, personality, arch=AUDIT_I386, args=(0xFFFFFFFF,)) == ALLOW
    assert run(prog, personality, arch=AUDIT_I386, args=(0x1FFFFFFFF,)) == ALLOW
    assert run(prog, nr("personality"), args=(0x1FFFFFFFF,)) == EPERM_RET


def test_conditions_and_rules() -> None:
    prog = compile_([
        allow("mmap", args=[arg(0, "EQ", 1), arg(2, "GT", 5)]),  # ANDed
        {"names": ["mmap"], "action": "SCMP_ACT_ERRNO", "errnoRet": 9, "args": [arg(0, "EQ", 1)]},
        allow("mmap", args=[arg(5, "LE", 3)]),
    ])
    mmap = nr("mmap")
    assert run(prog, mmap, args=(1, 0, 6)) == ALLOW                      # rule 1
    assert run(prog, mmap, args=(1, 0, 5)) == ERRNO | 9                   # rule 2: first match wins
    assert run(prog, mmap, args=(2, 0, 6, 0, 0, 3)) == ALLOW              # rule 3
    assert run(prog, mmap, args=(2, 0, 6, 0, 0, 4)) == EPERM_RET          # none: default


def test_unconditional_rule_ends_the_chain() -> None:
    prog = compile_([{"names": ["kill"], "action": "SCMP_ACT_TRAP"}, allow("kill")])
    assert run(prog, nr("kill")) == 0x00030000


def test_aarch64() -> None:
    prog = compile_([allow("openat", "getpid")], arch="arm64", architectures=["SCMP_ARCH_ARM"])
    a64 = syscall_tables.AARCH64
    assert run(prog, a64["openat"], arch=AUDIT_AARCH64) == ALLOW
    assert run(prog, a64["keyctl"], arch=AUDIT_AARCH64) == EPERM_RET
    assert run(prog, max(a64.values()) + 1, arch=AUDIT_AARCH64) == ENOSYS_RET
    assert run(prog, a64["openat"], arch=AUDIT_X86_64) == KILL_THREAD  # not listed
    assert run(prog, 20, arch=AUDIT_ARM) == EPERM_RET  # listed, no arm32 table: default action
    deny_list = compile_(DENY_LIST, default="SCMP_ACT_ALLOW", arch="arm64", architectures=["SCMP_ARCH_ARM"])
    assert run(deny_list, a64["keyctl"], arch=AUDIT_AARCH64) == EPERM_RET
    assert run(deny_list, 20, arch=AUDIT_ARM) == KILL_THREAD  # ALLOW would skip the denials
    assert run(compile_(DENY_LIST, default="SCMP_ACT_ALLOW", arch="arm64"), 20, arch=AUDIT_ARM) == KILL_THREAD


def test_far_jumps_in_a_big_profile() -> None:
    """One conditional rule per syscall: every jump over hundreds of instructions must land."""
    names = sorted(NR, key=NR.__getitem__)
    rules = [allow(name, args=[arg(0, "EQ", NR[name])]) for name in names]
    prog = compile_(rules, architectures=["SCMP_ARCH_X86"])
    assert len(prog) // 8 > 2000
    for name in names:
        assert run(prog, NR[name], args=(NR[name],)) == ALLOW, name
        assert run(prog, NR[name], args=(NR[name] + 1,)) == EPERM_RET, name
    i386 = syscall_tables.I386
    for name in i386.keys() & NR.keys():
        assert run(prog, i386[name], arch=AUDIT_I386, args=(NR[name],)) == ALLOW, name


def test_every_other_syscall_allowed() -> None:
    """The most intervals a table can give: a deep search tree."""
    odd = [name for name, n in NR.items() if n % 2]
    prog = compile_([allow(*odd)])
    for name, number in NR.items():
        assert run(prog, number) == (ALLOW if number % 2 else EPERM_RET), name


def test_too_long_program_is_a_config_error() -> None:
    rules = [allow(name, args=[arg(i, "GT", (1 << 33) + n) for i in range(6)]) for name, n in NR.items()]
    with pytest.raises(ConfigError, match="more than the kernel's limit of 4096"):
        compile_(rules)


def test_compile_refuses_unresolved_docker_profile() -> None:
    with pytest.raises(ConfigError, match=r"^linux.seccomp.archMap: Docker-style") as info:
        seccomp.compile_bpf(seccomp.default_profile())
    assert info.value.hint and "resolve" in info.value.hint
    with pytest.raises(ConfigError, match=r"^linux.seccomp.syscalls\[0\].excludes: Docker-style"):
        seccomp.compile_bpf({"defaultAction": "SCMP_ACT_ALLOW",
                             "syscalls": [allow("read", excludes={"caps": ["CAP_KILL"]})]})


def test_compile_is_deterministic() -> None:
    resolved = seccomp.resolve(seccomp.default_profile(), DOCKER_CAPS, "x86_64")
    assert seccomp.compile_bpf(resolved, "x86_64") == seccomp.compile_bpf(resolved, "amd64")


# --- the default profile -------------------------------------------------------------

DOCKER_CAPS = [
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
]
CLONE_NEWUSER = 0x10000000
SIGCHLD = 17


@pytest.fixture(scope="module")
def docker_bpf() -> bytes:
    return seccomp.compile_bpf(seccomp.resolve(seccomp.default_profile(), DOCKER_CAPS, "x86_64",
                                               kernel="6.1.0"), "x86_64")


@pytest.mark.parametrize(("name", "args", "ret"), [
    ("read", (), ALLOW), ("getpid", (), ALLOW), ("execve", (), ALLOW), ("chroot", (), ALLOW),
    ("ptrace", (), ALLOW), ("arch_prctl", (), ALLOW),
    ("clone", (SIGCHLD,), ALLOW), ("clone", (CLONE_NEWUSER | SIGCHLD,), EPERM_RET),
    ("clone3", (), ENOSYS_RET),
    ("socket", (2,), ALLOW), ("socket", (40,), EPERM_RET), ("socket", ((1 << 32) | 40,), EPERM_RET),
    ("personality", (0,), ALLOW), ("personality", (0x20008,), ALLOW),
    ("personality", (0xFFFFFFFF,), ALLOW), ("personality", (0x0400000,), EPERM_RET),
    *((name, (), EPERM_RET) for name in (
        "keyctl", "add_key", "request_key", "bpf", "unshare", "setns", "mount", "umount2",
        "pivot_root", "reboot", "kexec_load", "kexec_file_load", "init_module", "finit_module",
        "delete_module", "open_by_handle_at", "perf_event_open", "userfaultfd", "swapon",
        "swapoff", "acct", "settimeofday", "clock_settime", "adjtimex", "syslog", "quotactl",
        "lookup_dcookie", "name_to_handle_at", "iopl", "ioperm", "fanotify_init", "vhangup",
        "io_uring_setup", "sethostname")),
])
def test_default_profile_x86_64(docker_bpf: bytes, name: str, args: tuple[int, ...], ret: int) -> None:
    assert run(docker_bpf, nr(name), args=args) == ret


def test_default_profile_compat_abis(docker_bpf: bytes) -> None:
    i386, x32 = syscall_tables.I386, syscall_tables.X32
    assert run(docker_bpf, i386["socketcall"], arch=AUDIT_I386) == ALLOW
    assert run(docker_bpf, i386["keyctl"], arch=AUDIT_I386) == EPERM_RET
    assert run(docker_bpf, i386["clone"], arch=AUDIT_I386, args=(CLONE_NEWUSER,)) == EPERM_RET
    assert run(docker_bpf, x32["rt_sigaction"]) == ALLOW
    assert run(docker_bpf, x32["mount"]) == EPERM_RET
    assert run(docker_bpf, 5, arch=AUDIT_ARM) == KILL_THREAD  # not listed for x86_64 (nor run by its kernels)


def test_default_profile_arm32_on_aarch64() -> None:
    resolved = seccomp.resolve(seccomp.default_profile(), DOCKER_CAPS, "aarch64")
    assert "SCMP_ARCH_ARM" in resolved["architectures"]
    prog = seccomp.compile_bpf(resolved, "aarch64")
    assert run(prog, 5, arch=AUDIT_ARM) == EPERM_RET  # listed, no table: denied, as before
    assert run(prog, syscall_tables.AARCH64["getpid"], arch=AUDIT_AARCH64) == ALLOW


def test_default_profile_with_sys_admin() -> None:
    resolved = seccomp.resolve(seccomp.default_profile(), [*DOCKER_CAPS, "CAP_SYS_ADMIN"], "x86_64")
    prog = seccomp.compile_bpf(resolved, "x86_64")
    for name in ("mount", "umount2", "unshare", "setns", "pivot_root", "clone3", "sethostname"):
        assert run(prog, nr(name)) == ALLOW, name
    assert run(prog, nr("clone"), args=(CLONE_NEWUSER,)) == ALLOW
    assert run(prog, nr("bpf")) == EPERM_RET
    assert run(prog, nr("keyctl")) == EPERM_RET


def test_default_profile_is_small() -> None:
    resolved = seccomp.resolve(seccomp.default_profile(), DOCKER_CAPS, "x86_64")
    assert len(seccomp.compile_bpf(resolved, "x86_64")) // 8 < 600
    assert len(seccomp.compile_bpf(seccomp.resolve(seccomp.default_profile(), DOCKER_CAPS, "aarch64"),
                                   "aarch64")) // 8 < 300


# --- validation --------------------------------------------------------------------

def _bad(mutate: Callable[[dict[str, Any]], object]) -> dict[str, Any]:
    prof: dict[str, Any] = {
        "defaultAction": "SCMP_ACT_ERRNO",
        "syscalls": [allow("read"), allow("write"), allow("close"),
                     {"names": ["ioctl"], "action": "SCMP_ACT_ALLOW", "args": [arg(0, "EQ", 1)]}],
    }
    mutate(prof)
    return prof


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda p: p["syscalls"][3].update(action="SCMP_ACT_FOO"),
     'linux.seccomp.syscalls[3].action: unknown action "SCMP_ACT_FOO"'),
    (lambda p: p["syscalls"][3].update(action="SCMP_ACT_NOTIFY"),
     'linux.seccomp.syscalls[3].action: action "SCMP_ACT_NOTIFY" is unsupported'),
    (lambda p: p.pop("defaultAction"), "linux.seccomp.defaultAction: is required"),
    (lambda p: p.update(defaultAction=3), "linux.seccomp.defaultAction: must be a non-empty string, not 3"),
    (lambda p: p.update(defaultErrnoRet=5000),
     "linux.seccomp.defaultErrnoRet: must be an integer from 0 to 4095"),
    (lambda p: p.update(defaultAction="SCMP_ACT_KILL", defaultErrnoRet=1),
     "linux.seccomp.defaultErrnoRet: is only valid with SCMP_ACT_ERRNO or SCMP_ACT_TRACE"),
    (lambda p: p["syscalls"][0].update(errnoRet=1),
     "linux.seccomp.syscalls[0].errnoRet: is only valid with"),
    (lambda p: p["syscalls"][3]["args"][0].update(index=6),
     "linux.seccomp.syscalls[3].args[0].index: must be an integer from 0 to 5, not 6"),
    (lambda p: p["syscalls"][3]["args"][0].update(value=-1),
     "linux.seccomp.syscalls[3].args[0].value: must be an integer from 0 to 18446744073709551615"),
    (lambda p: p["syscalls"][3]["args"][0].update(value=True),
     "linux.seccomp.syscalls[3].args[0].value: must be an integer"),
    (lambda p: p["syscalls"][3]["args"][0].update(op="SCMP_CMP_LIKE"),
     'linux.seccomp.syscalls[3].args[0].op: unknown operator "SCMP_CMP_LIKE"'),
    (lambda p: p["syscalls"][3]["args"][0].pop("op"), "linux.seccomp.syscalls[3].args[0].op: must be a"),
    (lambda p: p["syscalls"][1].update(names=[]),
     "linux.seccomp.syscalls[1].names: must contain at least one"),
    (lambda p: p["syscalls"][1].update(names=["read", ""]), "linux.seccomp.syscalls[1].names[1]: must be a"),
    (lambda p: p["syscalls"][2].pop("names"), "linux.seccomp.syscalls[2].names: is required"),
    (lambda p: p["syscalls"].append("read"), "linux.seccomp.syscalls[4]: must be an object, not \"read\""),
    (lambda p: p.update(syscalls={}), "linux.seccomp.syscalls: must be an array, not dict"),
    (lambda p: p.update(architectures=["SCMP_ARCH_Z80"]),
     'linux.seccomp.architectures[0]: unknown architecture "SCMP_ARCH_Z80"'),
    (lambda p: p.update(flags=["SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"]),
     "linux.seccomp.flags[0]: flag \"SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV\" is unsupported"),
    (lambda p: p.update(listenerMetadata="x"), "linux.seccomp.listenerMetadata: must not be set"),
    (lambda p: p.update(architectures=[], archMap=[]), "linux.seccomp.archMap: cannot be combined"),
    (lambda p: p["syscalls"][0].update(includes={"minKernel": "four"}),
     "linux.seccomp.syscalls[0].includes.minKernel: must be a version"),
    (lambda p: p["syscalls"][0].update(excludes={"caps": "CAP_SYS_ADMIN"}),
     "linux.seccomp.syscalls[0].excludes.caps: must be an array"),
])
def test_validation_errors_name_the_json_path(mutate: Callable[[dict[str, Any]], object],
                                              message: str) -> None:
    with pytest.raises(ConfigError) as info:
        seccomp.load_profile(_bad(mutate))
    assert str(info.value).startswith(message)
    assert info.value.path == message.split(":")[0]


def test_path_prefix_and_hint() -> None:
    bad = _bad(lambda p: p["syscalls"][0].update(action="SCMP_ACT_FOO"))
    with pytest.raises(ConfigError) as info:
        seccomp.load_profile(bad, path_prefix="profile.json")
    assert info.value.path == "profile.json.syscalls[0].action"
    assert info.value.hint and "SCMP_ACT_ALLOW" in info.value.hint


def test_unknown_keys_are_ignored() -> None:
    prof = _bad(lambda p: p.update(future={"x": 1}))
    prof["syscalls"][0]["comment"] = "fine"
    assert seccomp.load_profile(prof) is prof


def test_load_profile_from_files(tmp_path: Path) -> None:
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"defaultAction": "SCMP_ACT_ALLOW"}))
    assert seccomp.load_profile(good) == {"defaultAction": "SCMP_ACT_ALLOW"}
    assert seccomp.load_profile(str(good)) == {"defaultAction": "SCMP_ACT_ALLOW"}
    broken = tmp_path / "broken.json"
    broken.write_text('{"defaultAction": ')
    with pytest.raises(ConfigError, match="is not valid JSON: Expecting value: line 1 column 19") as info:
        seccomp.load_profile(broken)
    assert info.value.hint and '{"defaultAction": "SCMP_ACT_ERRNO"' in info.value.hint
    with pytest.raises(ConfigError, match="cannot read seccomp profile"):
        seccomp.load_profile(tmp_path / "missing.json")
    not_object = tmp_path / "list.json"
    not_object.write_text("[]")
    with pytest.raises(ConfigError, match=r"^linux\.seccomp: must be an object, not list"):
        seccomp.load_profile(not_object)


# --- resolve -------------------------------------------------------------------------

def _names(resolved: dict[str, Any]) -> set[str]:
    return {name for entry in resolved["syscalls"] for name in entry["names"]}


def test_resolve_without_sys_admin() -> None:
    resolved = seccomp.resolve(seccomp.default_profile(), DOCKER_CAPS, "x86_64", kernel="5.10.0-8-amd64")
    assert resolved["architectures"] == ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
    assert "archMap" not in resolved
    assert not any(k in entry for entry in resolved["syscalls"] for k in ("includes", "excludes"))
    names = _names(resolved)
    assert {"read", "clone", "clone3", "ptrace", "arch_prctl", "chroot"} <= names
    assert not {"mount", "unshare", "setns", "bpf", "reboot", "syslog", "keyctl"} & names
    clone3 = next(e for e in resolved["syscalls"] if e["names"] == ["clone3"])
    assert (clone3["action"], clone3["errnoRet"]) == ("SCMP_ACT_ERRNO", errno.ENOSYS)
    seccomp.compile_bpf(resolved)  # a plain OCI profile


def test_resolve_with_sys_admin_and_lowercase_names() -> None:
    resolved = seccomp.resolve(seccomp.default_profile(), ["sys_admin", "cap_sys_time"], "amd64")
    names = _names(resolved)
    assert {"mount", "umount2", "unshare", "setns", "pivot_root", "settimeofday"} <= names
    assert "bpf" not in names
    assert not any(e.get("args") and e["names"] == ["clone"] for e in resolved["syscalls"])


def test_resolve_arch_and_kernel_filters() -> None:
    arm = seccomp.resolve(seccomp.default_profile(), [], "aarch64", kernel="4.4.0")
    assert arm["architectures"] == ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"]
    assert "arch_prctl" not in _names(arm)
    assert "ptrace" not in _names(arm)  # needs 4.8
    assert "ptrace" in _names(seccomp.resolve(seccomp.default_profile(), [], "aarch64", kernel="4.8"))


def test_resolve_excludes_min_kernel_and_arches() -> None:
    prof = {"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [
        allow("a", excludes={"minKernel": "5.0"}), allow("b", excludes={"arches": ["arm64"]})]}
    assert _names(seccomp.resolve(prof, [], "x86_64", kernel="4.19")) == {"a", "b"}
    assert _names(seccomp.resolve(prof, [], "aarch64", kernel="5.0")) == set()


def test_resolve_shares_nothing_with_its_input() -> None:
    prof = seccomp.default_profile()
    resolved = seccomp.resolve(prof, [], "x86_64")
    resolved["syscalls"][0]["names"].clear()
    assert prof["syscalls"][0]["names"]
    assert seccomp.default_profile()["syscalls"][0]["names"]


def test_resolve_validates() -> None:
    with pytest.raises(ConfigError, match=r"^linux.seccomp.syscalls\[0\].action"):
        seccomp.resolve({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["a"]}]}, [])


# --- the cache ------------------------------------------------------------------------

@pytest.fixture
def cache_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    return tmp_path / "sandboxer" / "seccomp"


SMALL = {"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [allow("read")]}


def _entries(directory: Path) -> list[Path]:
    return sorted(directory.iterdir())


def _forbid_compiling(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*_: object, **__: object) -> bytes:
        raise AssertionError("compiled instead of using the cache")
    monkeypatch.setattr(compiler, "compile_bpf", fail)


def test_cache_write_then_hit(cache_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bpf = seccomp.cached_bpf(SMALL, "x86_64")
    assert bpf == seccomp.compile_bpf(SMALL, "x86_64")
    [entry] = _entries(cache_home)
    assert entry.suffix == ".bpf" and bpf in entry.read_bytes()
    _forbid_compiling(monkeypatch)
    assert seccomp.cached_bpf(json.loads(json.dumps(SMALL)), "amd64") == bpf  # same key


def test_unknown_names_are_said_once(cache_home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Ignored names (a typo, another ABI's) get one notice when the profile is compiled; a hit is quiet."""
    typo = {"defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["keyctl", "keyctrl", "socketcall"], "action": "SCMP_ACT_ERRNO"}]}
    seccomp.cached_bpf(typo, "x86_64")
    assert capsys.readouterr().err == (
        "sandboxer: notice: seccomp profile: ignoring syscall names unknown on x86_64: keyctrl, socketcall\n")
    seccomp.cached_bpf(typo, "x86_64")
    assert capsys.readouterr().err == ""
    seccomp.cached_bpf({**typo, "architectures": ["SCMP_ARCH_X86"]}, "x86_64")  # i386 has socketcall
    assert capsys.readouterr().err.endswith(": keyctrl\n")
    many = {"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [allow(*(f"nope{i}" for i in range(10)), "read")]}
    seccomp.cached_bpf(many, "x86_64")
    assert capsys.readouterr().err.endswith(": nope0, nope1, nope2, nope3, nope4, nope5, nope6, nope7 and 2 more\n")
    seccomp.cached_bpf(SMALL, "x86_64")
    seccomp.default_bpf(DOCKER_CAPS, "x86_64")  # names other arches' syscalls: never said
    assert capsys.readouterr().err == ""


def test_cache_key_covers_arch_and_content(cache_home: Path) -> None:
    seccomp.cached_bpf(SMALL, "x86_64")
    seccomp.cached_bpf(SMALL, "aarch64")
    seccomp.cached_bpf({**SMALL, "defaultErrnoRet": 2}, "x86_64")
    assert len(_entries(cache_home)) == 3


@pytest.mark.parametrize("damage", [
    lambda data: data[:-3],                                  # torn write
    lambda data: data[:-1] + bytes([data[-1] ^ 1]),          # flipped bit
    lambda data: b"",                                        # empty
    lambda data: b"garbage" * 10,                            # not ours
])
def test_corrupt_cache_entry_is_recompiled(cache_home: Path, damage: Callable[[bytes], bytes]) -> None:
    good = seccomp.cached_bpf(SMALL, "x86_64")
    [entry] = _entries(cache_home)
    intact = entry.read_bytes()
    entry.write_bytes(damage(intact))
    assert seccomp.cached_bpf(SMALL, "x86_64") == good
    assert entry.read_bytes() == intact  # rewritten


def test_unusable_cache_is_not_fatal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    assert seccomp.cached_bpf(SMALL, "x86_64") == seccomp.compile_bpf(SMALL, "x86_64")
    entry_dir = tmp_path / "cache" / "sandboxer" / "seccomp"
    entry_dir.mkdir(parents=True)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    seccomp.cached_bpf(SMALL, "x86_64")
    [entry] = _entries(entry_dir)
    entry.unlink()
    entry.mkdir()  # unreadable as a file, and cannot be replaced by a file
    assert seccomp.cached_bpf(SMALL, "x86_64") == seccomp.compile_bpf(SMALL, "x86_64")


def test_relative_xdg_cache_home_falls_back_to_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/dir")
    monkeypatch.setenv("HOME", str(tmp_path))
    seccomp.cached_bpf(SMALL, "x86_64")
    assert len(_entries(tmp_path / ".cache" / "sandboxer" / "seccomp")) == 1


def test_bad_profile_through_the_cache_is_a_config_error(cache_home: Path) -> None:
    with pytest.raises(ConfigError, match="defaultAction"):
        seccomp.cached_bpf({"syscalls": []}, "x86_64")
    with pytest.raises(ConfigError, match="names: must be an array"):
        seccomp.cached_bpf({"defaultAction": "SCMP_ACT_ALLOW",
                            "syscalls": [{"names": {"read"}, "action": "SCMP_ACT_ALLOW"}]}, "x86_64")


def test_filter_flags() -> None:
    assert seccomp.filter_flags({"defaultAction": "SCMP_ACT_ALLOW"}) == 0
    flags = ["SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_LOG"]
    assert seccomp.filter_flags({"flags": flags}) == (
        syscalls.SECCOMP_FILTER_FLAG_LOG | syscalls.SECCOMP_FILTER_FLAG_TSYNC)


# --- the default-profile fast path -------------------------------------------------------

CAP_SETS = [[], DOCKER_CAPS, [*DOCKER_CAPS, "CAP_SYS_ADMIN"], ["sys_admin", "cap_sys_time", "SYS_ADMIN"]]


@pytest.mark.parametrize("arch", [None, "x86_64", "aarch64"])
@pytest.mark.parametrize("caps", CAP_SETS)
def test_default_bpf_is_the_resolved_default_profile(cache_home: Path, caps: list[str], arch: str | None) -> None:
    resolved = seccomp.resolve(seccomp.default_profile(), caps, arch)
    expected = (seccomp.compile_bpf(resolved, arch), seccomp.filter_flags(resolved))
    assert seccomp.default_bpf(caps, arch) == expected  # cold: compiled and written
    assert len(_entries(cache_home)) == 1
    assert seccomp.default_bpf(iter(reversed(caps)), arch) == expected  # warm: read back


def test_default_bpf_warm_hit_does_not_compile(cache_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cold = seccomp.default_bpf(DOCKER_CAPS, "x86_64")
    _forbid_compiling(monkeypatch)
    monkeypatch.setattr(profile, "default_profile", lambda: pytest.fail("parsed the profile on a hit"))
    assert seccomp.default_bpf(["kill", *DOCKER_CAPS], "x86_64") == cold  # same set, other spelling
    assert len(_entries(cache_home)) == 1


_SLOW_MODULES = {"json", "re", "pathlib", "typing", "hashlib", "contextlib", "functools", "itertools",
                 "dataclasses", "inspect", "enum", "ctypes", "collections",
                 "sandboxer.seccomp.compiler", "sandboxer.seccomp.profile"}
_PROBE = """
import sys
before = set(sys.modules)
from sandboxer.seccomp import default_bpf
bpf, flags = default_bpf(["CAP_CHOWN", "CAP_KILL"])
print(len(bpf), *sorted((set(sys.modules) - before) & set(sys.argv[1:])))
"""


def _probe(tmp_path: Path) -> tuple[list[str], int]:
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path), "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", _PROBE, *sorted(_SLOW_MODULES)], env=env, cwd=ROOT,
                         check=True, capture_output=True, text=True).stdout
    size, *loaded = out.split()
    return loaded, int(size)


@pytest.mark.skipif(os.uname().machine not in profile.MACHINES, reason="no syscall table for this machine")
def test_warm_default_bpf_imports_nothing_slow(tmp_path: Path) -> None:
    cold_loaded, cold_size = _probe(tmp_path)
    assert {"json", "sandboxer.seccomp.compiler"} <= set(cold_loaded)  # the probe can see imports
    assert _probe(tmp_path) == ([], cold_size)


def test_importing_the_package_loads_no_submodule() -> None:
    code = "import sys, sandboxer.seccomp; print(sorted(m for m in sys.modules if m.startswith('sandboxer.')))"
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(ROOT)},
                         cwd=ROOT, check=True, capture_output=True, text=True).stdout
    assert out.split() == ["['sandboxer.seccomp']"]


def test_lazy_public_names() -> None:
    for name in seccomp.__all__:
        assert callable(getattr(seccomp, name)), name
        assert name in dir(seccomp)
    assert seccomp.compile_bpf is compiler.compile_bpf
    assert seccomp.default_bpf is cache.default_bpf
    assert seccomp.resolve is profile.resolve
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        seccomp.nope  # noqa: B018


def _key(stamps: list[tuple[int, int]], caps: tuple[str, ...] = ("CAP_KILL",), native: str = "x86_64",
         release: str = "6.1.0") -> bytes:
    return cache._default_key(stamps, caps, native, release)


def test_default_key_covers_its_inputs() -> None:
    stamps = [(1_700_000_000_000_000_000, 1000), (1_700_000_000_000_000_001, 2000)]
    touched = [(1_700_000_000_000_000_001, 1000), stamps[1]]
    resized = [(stamps[0][0], 1001), stamps[1]]
    keys = [_key(stamps), _key(touched), _key(resized), _key(stamps, ("CAP_KILL", "CAP_SYS_ADMIN")),
            _key(stamps, native="aarch64"), _key(stamps, release="6.2.0"), _key(stamps, ())]
    assert len(set(keys)) == len(keys)
    assert _key(stamps) == _key(list(stamps))


def test_default_key_normalises_caps_like_resolve() -> None:
    for name in ("kill", "CAP_KILL", "cap_kill", "Sys_Admin"):
        assert cache._cap_name(name) == profile._cap_name(name)


def test_default_key_sources_are_the_real_files() -> None:
    stamps = cache._source_stamps()
    assert stamps is not None and len(stamps) == len(cache._SOURCES)
    assert os.path.samefile(cache._SOURCES[0], profile.DEFAULT_PROFILE_FILE)
    assert {os.path.realpath(p) for p in cache._SOURCES[1:]} >= {
        os.path.realpath(m.__file__ or "") for m in (compiler, profile, syscall_tables, cache)}


@pytest.fixture
def fake_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A stand-in for the shipped profile file, whose mtime a test may change."""
    source = tmp_path / "seccomp-default.json"
    source.write_text("{}")
    monkeypatch.setattr(cache, "_SOURCES", (str(source), *cache._SOURCES[1:]))
    return source


def test_touching_a_source_is_a_new_key(cache_home: Path, fake_sources: Path) -> None:
    first = seccomp.default_bpf(DOCKER_CAPS, "x86_64")
    stat = fake_sources.stat()
    os.utime(fake_sources, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert seccomp.default_bpf(DOCKER_CAPS, "x86_64") == first
    assert len(_entries(cache_home)) == 2


def test_missing_source_skips_the_cache(cache_home: Path, fake_sources: Path) -> None:
    fake_sources.unlink()
    resolved = seccomp.resolve(seccomp.default_profile(), [], "x86_64")
    assert seccomp.default_bpf([], "x86_64") == (seccomp.compile_bpf(resolved, "x86_64"), 0)
    assert not cache_home.exists()


@pytest.mark.parametrize("damage", [
    lambda data: data[:-3],                                      # torn write
    lambda data: data[:-1] + bytes([data[-1] ^ 1]),              # flipped bit in the program
    lambda data: data.replace(b"\0x86_64\0", b"\0x86_65\0"),     # flipped bit in the key
    lambda data: data + b"\0" * 8,                               # longer than it says
    lambda data: data.replace(b"seccomp-bpf-2", b"seccomp-bpf-1"),  # older format
    lambda data: data.split(b"\n", 1)[0] + b"\n1 2 3\n",          # short header
    lambda data: b"",                                            # empty
    lambda data: b"garbage" * 10,                                # not ours
])
def test_corrupt_default_entry_is_recompiled(cache_home: Path, damage: Callable[[bytes], bytes]) -> None:
    good = seccomp.default_bpf(DOCKER_CAPS, "x86_64")
    [entry] = _entries(cache_home)
    intact = entry.read_bytes()
    entry.write_bytes(damage(intact))
    assert seccomp.default_bpf(DOCKER_CAPS, "x86_64") == good
    assert entry.read_bytes() == intact  # rewritten


def test_entry_for_another_key_is_a_miss(cache_home: Path) -> None:
    """A file-name collision cannot return another key's program: the whole key is compared."""
    good = seccomp.default_bpf(DOCKER_CAPS, "x86_64")
    [entry] = _entries(cache_home)
    other = seccomp.default_bpf([], "x86_64")
    assert other != good
    [other_entry] = set(_entries(cache_home)) - {entry}
    entry.write_bytes(other_entry.read_bytes())
    assert seccomp.default_bpf(DOCKER_CAPS, "x86_64") == good


def test_default_bpf_with_unusable_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    resolved = seccomp.resolve(seccomp.default_profile(), DOCKER_CAPS, "x86_64")
    assert seccomp.default_bpf(DOCKER_CAPS, "x86_64") == (seccomp.compile_bpf(resolved, "x86_64"), 0)


def test_cache_directory_is_private(cache_home: Path) -> None:
    old = os.umask(0o022)
    try:
        seccomp.default_bpf([], "x86_64")
    finally:
        os.umask(old)
    assert cache_home.stat().st_mode & 0o777 == 0o700
    assert not [p for p in cache_home.iterdir() if p.name.startswith(".")]  # no temporary left


def test_default_bpf_unknown_arch_is_a_host_error(cache_home: Path) -> None:
    with pytest.raises(HostError, match="no syscall table for architecture 'mips'"):
        seccomp.default_bpf([], "mips")


# --- the real kernel ---------------------------------------------------------------------

native = os.uname().machine
needs_native_table = pytest.mark.skipif(native not in profile.MACHINES, reason=f"no table for {native}")


def _in_child(body: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run ``body`` in a forked child (a filter cannot be removed) and return its report."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        status = 1
        try:
            os.close(read_fd)
            os.write(write_fd, json.dumps(body()).encode())
            status = 0
        except BaseException as exc:  # report anything, never return into pytest
            os.write(write_fd, json.dumps({"error": repr(exc)}).encode())
        finally:
            os._exit(status)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as pipe:
        data = pipe.read()
    _, status = os.waitpid(pid, 0)
    report: dict[str, Any] = json.loads(data or b"{}")
    assert os.waitstatus_to_exitcode(status) == 0, report
    return report


def _raw_syscall() -> Callable[..., int]:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long

    def call(name: str, *args: int) -> int:
        """The syscall's result, or minus its errno."""
        table = syscall_tables.X86_64 if native == "x86_64" else syscall_tables.AARCH64
        ret = libc.syscall(ctypes.c_long(table[name]), *(ctypes.c_long(a) for a in args))
        return -ctypes.get_errno() if ret == -1 else int(ret)
    return call


@pytest.fixture
def installed(cache_home: Path) -> Callable[[], None]:
    def install() -> None:
        syscalls.set_no_new_privs()
        seccomp.load(seccomp.resolve(seccomp.default_profile(), DOCKER_CAPS))
    return install


@needs_native_table
def test_default_profile_in_the_kernel(installed: Callable[[], None]) -> None:
    def body() -> dict[str, Any]:
        call = _raw_syscall()
        installed()
        with open("/proc/self/status") as status:
            mode = next(line for line in status if line.startswith("Seccomp:"))
        keyring_id, session_keyring = 0, -3
        return {
            "getpid": os.getpid() > 0,
            "keyctl": call("keyctl", keyring_id, session_keyring, 0),
            "unshare": call("unshare", CLONE_NEWUSER),
            "bpf": call("bpf", 0, 0, 0),
            "reboot": call("reboot", 0, 0, 0, 0),
            "clone3": call("clone3", 0, 0),
            "status": mode,
        }
    report = _in_child(body)
    assert report == {
        "getpid": True, "keyctl": -errno.EPERM, "unshare": -errno.EPERM, "bpf": -errno.EPERM,
        "reboot": -errno.EPERM, "clone3": -errno.ENOSYS, "status": "Seccomp:\t2\n",
    }


@needs_native_table
def test_keyctl_works_without_the_filter() -> None:
    """The control for the test above: keyctl's EPERM comes from the filter."""
    assert _in_child(lambda: {"keyctl": _raw_syscall()("keyctl", 0, -3, 0)})["keyctl"] != -errno.EPERM


@needs_native_table
def test_exec_under_the_default_profile(installed: Callable[[], None]) -> None:
    def body() -> dict[str, Any]:
        installed()
        pid = os.fork()
        if pid == 0:
            os.execv("/bin/true", ["true"])
        return {"exit": os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])}
    assert _in_child(body) == {"exit": 0}


# mov eax, NR; <trap>; ret: a syscall of another ABI, from this x86_64 process
I386_GETPID = b"\xb8" + I386["getpid"].to_bytes(4, "little") + b"\xcd\x80\xc3"   # int 0x80
X32_GETPID = b"\xb8" + X32["getpid"].to_bytes(4, "little") + b"\x0f\x05\xc3"     # syscall


def _machine_code_outcome(code: bytes, profile: dict[str, Any] | None) -> int:
    """Run ``code`` in a child under ``profile``: 0 if it returned a pid, an errno, or -signal."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        status = 255
        try:
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a seccomp kill dumps core
            page = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
            page.write(code)
            call = ctypes.CFUNCTYPE(ctypes.c_int)(ctypes.addressof(ctypes.c_char.from_buffer(page)))
            if profile is not None:
                syscalls.set_no_new_privs()
                seccomp.load(profile)
            ret = call()
            status = 0 if ret > 0 else min(-ret, 254)
        finally:
            os._exit(status)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


@pytest.mark.skipif(native != "x86_64", reason="i386 and x32 calls are x86_64's")
@pytest.mark.parametrize("code", [I386_GETPID, X32_GETPID], ids=["i386", "x32"])
@pytest.mark.parametrize(("listed", "outcome"), [
    ([], -signal.SIGSYS), (["SCMP_ARCH_X86_64"], -signal.SIGSYS), (["SCMP_ARCH_X86", "SCMP_ARCH_X32"], errno.EPERM),
], ids=["unlisted", "native-listed", "listed"])
def test_other_abis_in_the_kernel(cache_home: Path, code: bytes, listed: list[str], outcome: int) -> None:
    """The reviewer's bypass: a deny-list of getpid, and getpid through i386's int 0x80 or x32."""
    unfiltered = _machine_code_outcome(code, None)
    if unfiltered not in (0, errno.ENOSYS):  # ENOSYS: x32 compiled out (seccomp still sees the call)
        pytest.skip(f"this kernel does not run that ABI ({unfiltered})")
    deny = {"defaultAction": "SCMP_ACT_ALLOW", "architectures": listed,
            "syscalls": [{"names": ["getpid"], "action": "SCMP_ACT_ERRNO"}]}
    assert _machine_code_outcome(code, deny) == outcome


@needs_native_table
def test_load_honours_flags(cache_home: Path) -> None:
    def body() -> dict[str, Any]:
        syscalls.set_no_new_privs()
        seccomp.load({"defaultAction": "SCMP_ACT_ALLOW", "flags": ["SECCOMP_FILTER_FLAG_TSYNC"],
                      "syscalls": [{"names": ["getppid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 42}]})
        return {"getppid": _raw_syscall()("getppid")}
    assert _in_child(body) == {"getppid": -42}
