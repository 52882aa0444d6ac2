"""Compile a plain OCI seccomp profile into a classic-BPF program, in pure Python.

libseccomp is not used because importing a binding costs more start-up time
than compiling.  The program has this shape::

    load arch; one JEQ per filtered audit arch -> its section, else defaultAction
    section:   load nr; binary search over nr *intervals* -> action or rule chain
    chain:     the syscall's rules in profile order, first match wins,
               each rule's conditions ANDed, 64-bit args compared hi word then lo

Searching intervals (runs of numbers with the same outcome) instead of single
numbers makes the allowlist nearly free: ~30 consecutive allowed syscalls
cost no more than one.  The intervals also give the two special ranges:
numbers above the highest one in our table return ENOSYS (so libc falls back
from syscalls newer than the table, e.g. clone3 -> clone; allow-by-default
profiles allow them instead), and on x86_64 the x32 range (nr bit
0x40000000) is x32's, filtered only when SCMP_ARCH_X32 is listed.

Filtered ABIs: x86_64 (+ x32 and i386 when listed) and aarch64.  As in
libseccomp, an ABI the profile does not list (the native one always counts
as listed) gets the "bad arch" action, BAD_ARCH: otherwise a deny-list
profile (defaultAction ALLOW) would be bypassed through i386's ``int 0x80``
or x32.  arm32 on aarch64 has no table: when listed, an allowlist profile
denies all of it with defaultAction, a deny-list one gets BAD_ARCH.

The program is emitted backwards (last instruction first), so every jump
target already has a position when the jump is written; a target beyond the
8-bit jt/jf range gets a nearby copy of its RET or a JA trampoline.
"""

from __future__ import annotations

import itertools
import struct
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

from sandboxer.errors import ConfigError
from sandboxer.seccomp import syscall_tables
from sandboxer.seccomp.profile import (
    ACTION_DATA_MAX,
    ACTIONS,
    DEFAULT_PATH_PREFIX,
    EPERM,
    MACHINES,
    machine,
    validate,
)

__all__ = ["BAD_ARCH", "COMPILER_VERSION", "MAX_INSNS", "compile_bpf", "unknown_names"]

#: bump when the generated code changes for the same input (it keys the cache)
COMPILER_VERSION = 2
#: the kernel's BPF_MAXINSNS
MAX_INSNS = 4096

ENOSYS = 38
X32_SYSCALL_BIT = 0x40000000
_U32 = 0xFFFFFFFF
_NR_SPACE = 1 << 32

# classic BPF opcodes (linux/filter.h)
LD_W_ABS = 0x20
ALU_AND_K = 0x54
JA = 0x05
JEQ = 0x15
JGT = 0x25
JGE = 0x35
RET_K = 0x06
_INSN = struct.Struct("HBBI")

# struct seccomp_data offsets; args are little-endian u64s on every filtered ABI
NR_OFFSET = 0
ARCH_OFFSET = 4
ARGS_OFFSET = 16


class Abi(NamedTuple):
    """One syscall ABI: its table and the ``nr`` range it owns under its audit arch."""

    scmp: str
    audit: int
    table: Mapping[str, int]
    first: int = 0
    end: int = _NR_SPACE
    #: 32 for compat ABIs, whose args are 32-bit: only the low word is compared (like libseccomp)
    arg_bits: int = 64


_X86_64 = Abi("SCMP_ARCH_X86_64", 0xC000003E, syscall_tables.X86_64, end=X32_SYSCALL_BIT)
_X32 = Abi("SCMP_ARCH_X32", 0xC000003E, syscall_tables.X32, first=X32_SYSCALL_BIT)
_I386 = Abi("SCMP_ARCH_X86", 0x40000003, syscall_tables.I386, arg_bits=32)
_AARCH64 = Abi("SCMP_ARCH_AARCH64", 0xC00000B7, syscall_tables.AARCH64)
_ARM = Abi("SCMP_ARCH_ARM", 0x40000028, {}, arg_bits=32)  # no table: see _section
#: per machine, the ABIs its kernel runs, native first
ABIS: dict[str, tuple[Abi, ...]] = {"x86_64": (_X86_64, _X32, _I386), "aarch64": (_AARCH64, _ARM)}


class Cond(NamedTuple):
    arg: int                    # argument index, 0-5
    op: str
    value: int
    value_two: int


class Rule(NamedTuple):
    ret: int                    # SECCOMP_RET_* value when every condition holds
    conds: tuple[Cond, ...]


Chain = tuple[Rule, ...]        # one syscall's rules; () means defaultAction
_ENOSYS_CHAIN: Chain = (Rule(ACTIONS["SCMP_ACT_ERRNO"] | ENOSYS, ()),)
#: What a syscall of an ABI the profile does not list gets: libseccomp's default bad-arch action,
#: SCMP_ACT_KILL (= SECCOMP_RET_KILL_THREAD), which runc keeps (it never sets another).
BAD_ARCH = ACTIONS["SCMP_ACT_KILL"]
_BAD_ARCH_CHAIN: Chain = (Rule(BAD_ARCH, ()),)


class Ret(NamedTuple):
    """A jump target that is "return this value" (placed wherever it is reachable)."""

    value: int


Label = int                     # an instruction's position, counted from the program's end
Target = Label | Ret


# --- public API --------------------------------------------------------------

def compile_bpf(profile: Mapping[str, Any], arch: str | None = None, *,
                path_prefix: str = DEFAULT_PATH_PREFIX) -> bytes:
    """Compile a plain OCI profile for ``arch`` (default: this machine); ConfigError if bad."""
    validate(profile, path_prefix)
    native = machine(arch)
    listed = _listed(native, profile.get("architectures", []))
    default = Ret(_ret(profile["defaultAction"], profile.get("defaultErrnoRet")))
    chains = {name: chain for name, rules in _rules_by_name(profile.get("syscalls", [])).items()
              if (chain := _chain(rules, default))}
    # An allow-by-default (deny-list) profile lets syscalls newer than the table through.
    allow_unknown = profile["defaultAction"] in ("SCMP_ACT_ALLOW", "SCMP_ACT_LOG")
    groups = [(audit, list(group)) for audit, group in itertools.groupby(ABIS[native], lambda a: a.audit)]
    em = _Emitter()
    # Native last: the program is built backwards, so it lands nearest the dispatch.
    sections = [(audit, _section(em, group, listed, chains, default, allow_unknown))
                for audit, group in reversed(groups) if any(abi.scmp in listed for abi in group)]
    dispatch: Target = Ret(BAD_ARCH)  # an arch the profile does not list
    for audit, section in sections:
        dispatch = em.jump(JEQ, audit, section, dispatch)
    em.stmt(LD_W_ABS, ARCH_OFFSET, then=dispatch)
    if em.size > MAX_INSNS:
        raise ConfigError(path_prefix, f"compiles to {em.size} BPF instructions, "
                          f"more than the kernel's limit of {MAX_INSNS}",
                          hint="merge syscalls that share an action into one entry")
    return em.program()


# --- lowering: profile -> rules per syscall ---------------------------------

def _ret(action: str, data: int | None) -> int:
    if action in ACTION_DATA_MAX:
        return ACTIONS[action] | (EPERM if data is None else data)
    return ACTIONS[action]


def _listed(native: str, architectures: Iterable[str]) -> set[str]:
    """The ABIs to filter: the native one always (as libseccomp does), others if listed."""
    return {MACHINES[native], *architectures}


def unknown_names(profile: Mapping[str, Any], arch: str | None = None) -> list[str]:
    """The syscall names of a valid ``profile`` that no ABI it filters has: compile_bpf skips them."""
    native = machine(arch)
    listed = _listed(native, profile.get("architectures", []))
    tables = [abi.table for abi in ABIS[native] if abi.scmp in listed]
    return sorted({name for entry in profile.get("syscalls", []) for name in entry["names"]
                   if not any(name in table for table in tables)})


def _rules_by_name(entries: Iterable[Mapping[str, Any]]) -> dict[str, list[Rule]]:
    rules: dict[str, list[Rule]] = {}
    for entry in entries:
        conds = tuple(Cond(a["index"], a["op"], a["value"], a.get("valueTwo", 0))
                      for a in entry.get("args", []))
        rule = Rule(_ret(entry["action"], entry.get("errnoRet")), conds)
        for name in entry["names"]:
            rules.setdefault(name, []).append(rule)
    return rules


def _chain(rules: Iterable[Rule], default: Ret) -> Chain:
    """Drop rules that cannot change the outcome: after an unconditional one, or trailing defaults."""
    live: list[Rule] = []
    for rule in rules:
        live.append(rule)
        if not rule.conds:
            break
    while live and live[-1].ret == default.value:
        live.pop()
    return tuple(live)


def _intervals(group: list[Abi], listed: set[str], chains: Mapping[str, Chain],
               allow_unknown: bool) -> list[tuple[int, Chain]]:
    """Cover [0, 2**32) with (start, chain) runs, neighbours always different."""
    marks: list[tuple[int, int, Chain]] = []
    for abi in group:
        if abi.scmp not in listed:  # x32's numbers when only x86_64 is listed
            marks.append((abi.first, abi.end, _BAD_ARCH_CHAIN))
            continue
        for name, chain in chains.items():
            nr = abi.table.get(name)  # names unknown to this ABI are skipped, as runc does
            if nr is not None:
                marks.append((nr, nr + 1, chain))
        if not allow_unknown:
            marks.append((max(abi.table.values()) + 1, abi.end, _ENOSYS_CHAIN))
    runs: list[tuple[int, Chain]] = []
    pos = 0
    for start, end, chain in sorted(marks, key=lambda mark: mark[0]):
        if start > pos:
            _append_run(runs, pos, ())
        _append_run(runs, start, chain)
        pos = end
    if pos < _NR_SPACE:
        _append_run(runs, pos, ())
    return runs


def _append_run(runs: list[tuple[int, Chain]], start: int, chain: Chain) -> None:
    if not runs or runs[-1][1] != chain:
        runs.append((start, chain))


# --- code generation ----------------------------------------------------------

class _Emitter:
    """Builds a BPF program backwards so that all jumps (forward-only in BPF) resolve at once."""

    def __init__(self) -> None:
        self._rev: list[bytes] = []          # instructions, last one first
        self._rets: dict[int, Label] = {}    # RET value -> newest copy of it

    @property
    def size(self) -> int:
        return len(self._rev)

    def program(self) -> bytes:
        return b"".join(reversed(self._rev))

    def jump(self, op: int, k: int, jt: Target, jf: Target) -> Target:
        """A conditional jump; jf is placed first and keeps room for jt's possible stub."""
        if jt == jf:
            return jt  # nothing to decide
        f = self._reachable(jf, 254)
        t = self._reachable(jt, 255)
        return self._emit(op, k, self._offset(t), self._offset(f))

    def stmt(self, op: int, k: int, then: Target) -> Label:
        """A non-jump instruction, which falls through to ``then``."""
        last = self.size - 1
        if isinstance(then, Ret):
            if self._rets.get(then.value) != last:
                self._ret(then.value)
        elif then != last:
            self._emit(JA, self._offset(then))
        return self._emit(op, k)

    def _emit(self, op: int, k: int, jt: int = 0, jf: int = 0) -> Label:
        self._rev.append(_INSN.pack(op, jt, jf, k))
        return self.size - 1

    def _ret(self, value: int) -> Label:
        self._rets[value] = self._emit(RET_K, value)
        return self._rets[value]

    def _offset(self, label: Label) -> int:
        """Jump offset from the next instruction to be emitted to ``label``."""
        return self.size - label - 1

    def _reachable(self, target: Target, limit: int) -> Label:
        """A label for ``target`` at most ``limit`` instructions past the next one."""
        if isinstance(target, Ret):
            label = self._rets.get(target.value)
            return self._ret(target.value) if label is None or self._offset(label) > limit else label
        return self._emit(JA, self._offset(target)) if self._offset(target) > limit else target


def _section(em: _Emitter, group: list[Abi], listed: set[str], chains: Mapping[str, Chain],
             default: Ret, allow_unknown: bool) -> Target:
    """Code for one listed audit arch: load nr, then search its intervals."""
    if not any(abi.table for abi in group):
        # No table to apply the rules with: deny it all; defaultAction would let a deny-list's denials through.
        return Ret(BAD_ARCH) if allow_unknown else default
    runs = _intervals(group, listed, chains, allow_unknown)
    bits = group[0].arg_bits  # ABIs sharing an audit arch share a register width
    targets = {chain: _emit_chain(em, chain, default, bits)
               for chain in dict.fromkeys(chain for _, chain in runs)}
    root = _search(em, [(start, targets[chain]) for start, chain in runs])
    return root if isinstance(root, Ret) else em.stmt(LD_W_ABS, NR_OFFSET, then=root)


def _search(em: _Emitter, runs: list[tuple[int, Target]]) -> Target:
    """Balanced binary search on run starts: depth log2(runs), one JGE per run boundary."""
    if len(runs) == 1:
        return runs[0][1]
    mid = len(runs) // 2
    upper = _search(em, runs[mid:])
    lower = _search(em, runs[:mid])
    return em.jump(JGE, runs[mid][0], upper, lower)


def _emit_chain(em: _Emitter, chain: Chain, default: Ret, bits: int) -> Target:
    """Rules tried in order; a rule whose conditions all hold returns its action."""
    target: Target = default
    for rule in reversed(chain):
        matched: Target = Ret(rule.ret)
        for cond in reversed(rule.conds):
            matched = _emit_cond(em, cond, matched, target, bits)
        target = matched
    return target


_NEGATION = {"SCMP_CMP_NE": "SCMP_CMP_EQ", "SCMP_CMP_LT": "SCMP_CMP_GE", "SCMP_CMP_LE": "SCMP_CMP_GT"}


def _emit_cond(em: _Emitter, cond: Cond, ok: Target, fail: Target, bits: int) -> Target:
    """Test one 64-bit argument condition: NE/LT/LE are EQ/GE/GT with the exits swapped."""
    op = _NEGATION.get(cond.op, cond.op)
    if op != cond.op:
        ok, fail = fail, ok
    lo_off = ARGS_OFFSET + 8 * cond.arg
    hi_off = lo_off + 4
    if op in ("SCMP_CMP_EQ", "SCMP_CMP_MASKED_EQ"):
        mask, want = ((cond.value, cond.value_two) if op == "SCMP_CMP_MASKED_EQ"
                      else ((1 << 64) - 1, cond.value))
        low = _emit_word_eq(em, lo_off, mask & _U32, want & _U32, ok, fail)
        return low if bits == 32 else _emit_word_eq(em, hi_off, mask >> 32, want >> 32, low, fail)
    # GT or GE: decided by the high word unless it is equal, then by the low word
    low = em.stmt(LD_W_ABS, lo_off, then=em.jump(JGT if op == "SCMP_CMP_GT" else JGE,
                                                   cond.value & _U32, ok, fail))
    if bits == 32:
        return low
    hi = cond.value >> 32
    return em.stmt(LD_W_ABS, hi_off, then=em.jump(JGT, hi, ok, em.jump(JEQ, hi, low, fail)))


def _emit_word_eq(em: _Emitter, offset: int, mask: int, want: int, ok: Target,
                  fail: Target) -> Target:
    """``(word & mask) == want``, folded away when the mask decides it alone."""
    if want & ~mask:
        return fail
    if mask == 0:
        return ok
    check: Target = em.jump(JEQ, want, ok, fail)
    if mask != _U32:
        check = em.stmt(ALU_AND_K, mask, then=check)
    return em.stmt(LD_W_ABS, offset, then=check)
