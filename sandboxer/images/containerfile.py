"""Containerfile (Dockerfile) parsing and Docker's word and variable rules.

The parser turns the file into :class:`Instruction` records and checks
everything that can be checked without running anything: unknown or
unsupported instructions, flags, JSON forms, missing arguments.  So a
typo on line 40 fails the build before line 2 starts a sandbox.  Errors
name ``FILE:LINE`` and the instruction.

Variable substitution (``$VAR``, ``${VAR}``, ``${VAR:-word}``, …) and
quote removal follow Docker's shell-like lexer; they happen at build time
(:func:`expand_word`, :func:`split_words`), because the values depend on
``ARG``/``ENV`` instructions executed so far.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping

from ..errors import SandboxerError
from ..records import record

__all__ = ["Instruction", "ContainerfileError", "parse", "parse_file", "default_containerfile", "expand_word",
           "split_words", "name_values", "chmod_flag", "expose_ports", "SUPPORTED"]

#: instruction -> the flags it takes (``--name=value``)
SUPPORTED: dict[str, frozenset[str]] = {
    "FROM": frozenset(), "ARG": frozenset(), "ENV": frozenset(), "LABEL": frozenset(),
    "EXPOSE": frozenset(), "WORKDIR": frozenset(), "USER": frozenset(), "RUN": frozenset({"network"}),
    "CMD": frozenset(), "ENTRYPOINT": frozenset(), "COPY": frozenset({"chown", "chmod"}),
    "ADD": frozenset({"chown", "chmod"}), "SHELL": frozenset(), "VOLUME": frozenset(),
    "STOPSIGNAL": frozenset(), "MAINTAINER": frozenset(),
}
#: known to Docker, refused here with a reason
_UNSUPPORTED = {
    "HEALTHCHECK": "health checks are not supported by sandboxer",
    "ONBUILD": "ONBUILD triggers are not supported by sandboxer",
}
#: flags Docker knows that need features sandboxer does not have
_UNSUPPORTED_FLAGS = {
    "from": "multi-stage builds (COPY --from) are not supported",
    "mount": "RUN --mount is not supported",
    "platform": "--platform in a Containerfile is not supported; sandboxer builds for this machine",
    "link": "COPY --link is not supported",
    "security": "RUN --security is not supported",
}
#: instructions whose argument may be a JSON array (the exec form)
_JSON_FORMS = frozenset({"RUN", "CMD", "ENTRYPOINT", "SHELL", "COPY", "ADD", "VOLUME"})
_ESCAPE = "\\"
_QUOTE_HINT = "close the quote, or escape the quote character with a backslash"
_SUBST_HINT = "supported: $VAR, ${VAR}, ${VAR:-default}, ${VAR:+alternative}, ${VAR:?message}; a literal $ is \\$"


class ContainerfileError(SandboxerError):
    """The Containerfile is malformed or asks for what is not supported; the message starts with FILE:LINE."""


class Instruction(record("Instruction", "keyword flags args exec_form file line")):
    """One instruction: ``keyword`` upper-case, ``flags`` the leading ``--name=value`` options,
    ``args`` the rest as written (continuations joined), ``exec_form`` the JSON array if it is one."""

    keyword: str
    flags: dict[str, str]
    args: str
    exec_form: list[str] | None
    file: str
    line: int
    __slots__ = ()

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"

    def error(self, problem: str, hint: str | None = None) -> ContainerfileError:
        return ContainerfileError(f"{self.where}: {self.keyword}: {problem}", hint=hint)

    def __str__(self) -> str:
        flags = "".join(f"--{k}={v} " for k, v in self.flags.items())
        return f"{self.keyword} {flags}{self.args}".rstrip()


def parse_file(path: str) -> list[Instruction]:
    """Read and parse a Containerfile; an unreadable file is an error naming it."""
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            text = f.read()
    except FileNotFoundError:
        raise ContainerfileError(f"Containerfile {path} does not exist",
                                 hint="give one with -f, or put a Containerfile or Dockerfile in the context") from None
    except OSError as e:
        raise ContainerfileError(f"cannot read Containerfile {path}: {e.strerror}",
                                 hint="check the file's permissions") from None
    return parse(text, path)


def parse(text: str, file: str = "Containerfile") -> list[Instruction]:
    """Parse Containerfile text into instructions; see the module docstring."""
    out = []
    for line_no, logical in _logical_lines(text, file):
        keyword, rest = _split_keyword(logical)
        out.append(_instruction(keyword, rest, file, line_no))
    return out


def _split_keyword(logical: str) -> tuple[str, str]:
    stripped = logical.strip()
    for i, ch in enumerate(stripped):
        if ch.isspace():
            return stripped[:i], stripped[i:].strip()
    return stripped, ""


def _logical_lines(text: str, file: str) -> list[tuple[int, str]]:
    """(first line number, text) of each instruction: comments dropped, ``\\`` continuations joined.

    As Docker does: continuation lines are concatenated as they are,
    comment and blank lines inside a continuation are dropped, and parser
    directives (``# syntax=``, ``# escape=``) are read only at the top.
    Only the default escape character is supported.
    """
    out: list[tuple[int, str]] = []
    pending: list[str] = []
    start = 0
    directives = True
    for n, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if directives and stripped.startswith("#"):
            name, eq, value = stripped[1:].partition("=")
            name, value = name.strip().lower(), value.strip()
            if eq and name == "escape" and value != _ESCAPE:
                raise ContainerfileError(f"{file}:{n}: the parser directive 'escape={value}' is not supported",
                                         hint="use the default escape character, a backslash")
            if eq and name in ("escape", "syntax", "check"):
                continue
        directives = False
        if not stripped or stripped.startswith("#"):
            continue
        if not pending:
            start = n
        body = raw.rstrip()
        if body.endswith(_ESCAPE):
            pending.append(body[:-1])
            continue
        pending.append(raw)
        out.append((start, "".join(pending)))
        pending = []
    if pending:
        raise ContainerfileError(f"{file}:{start}: the last instruction ends with a line continuation ('\\')",
                                 hint="remove the trailing backslash")
    return out


def _instruction(keyword_raw: str, rest: str, file: str, line: int) -> Instruction:
    keyword = keyword_raw.upper()
    where = f"{file}:{line}"
    if keyword in _UNSUPPORTED:
        raise ContainerfileError(f"{where}: {keyword}: {_UNSUPPORTED[keyword]}",
                                 hint="remove the instruction, or build with podman or docker")
    if keyword not in SUPPORTED:
        raise ContainerfileError(f"{where}: unknown instruction {keyword_raw!r}",
                                 hint="see the Dockerfile reference for the instructions (FROM, RUN, COPY, ...)")
    flags, args = _flags(keyword, rest, where)
    if not args and keyword not in ("CMD", "ENTRYPOINT"):
        raise ContainerfileError(f"{where}: {keyword} needs an argument",
                                 hint="see the Dockerfile reference for its syntax")
    exec_form = _json_form(args) if keyword in _JSON_FORMS else None
    ins = Instruction(keyword, flags, args, exec_form, file, line)
    _check(ins)
    return ins


def _flags(keyword: str, rest: str, where: str) -> tuple[dict[str, str], str]:
    """The leading ``--name=value`` flags (any instruction may have them in Docker's grammar)."""
    flags: dict[str, str] = {}
    while rest.startswith("--"):
        word, _, after = rest.partition(" ")
        name, eq, value = word[2:].partition("=")
        name = name.lower()
        if name in _UNSUPPORTED_FLAGS:
            raise ContainerfileError(f"{where}: {keyword} --{name}: {_UNSUPPORTED_FLAGS[name]}",
                                     hint="remove the flag, or build with podman or docker")
        if name not in SUPPORTED[keyword]:
            allowed = ", ".join(f"--{f}" for f in sorted(SUPPORTED[keyword])) or "none"
            raise ContainerfileError(f"{where}: {keyword}: unknown flag --{name}", hint=f"{keyword} takes: {allowed}")
        if not eq or not value:
            raise ContainerfileError(f"{where}: {keyword}: flag --{name} needs a value",
                                     hint=f"write it as --{name}=VALUE")
        flags[name] = value
        rest = after.lstrip()
    return flags, rest


def _json_form(args: str) -> list[str] | None:
    """The exec form: a JSON array of strings; anything else is the shell form (as Docker decides)."""
    if not args.startswith("["):
        return None
    try:
        value = json.loads(args)
    except ValueError:
        return None
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    return None


def _check(ins: Instruction) -> None:
    """Per-instruction checks of what is fixed before any variable is expanded."""
    k, args = ins.keyword, ins.args
    if k == "FROM":
        words = args.split()
        if len(words) == 3 and words[1].lower() == "as":
            raise ins.error("multi-stage builds (FROM ... AS NAME) are not supported",
                            hint="use one FROM per Containerfile")
        if len(words) != 1:
            raise ins.error(f"expected one image name, got {args!r}", hint="FROM IMAGE[:TAG], or FROM scratch")
    elif k == "SHELL" and (ins.exec_form is None or not ins.exec_form):
        raise ins.error("takes a JSON array of strings", hint='e.g. SHELL ["/bin/sh", "-c"]')
    elif k in ("COPY", "ADD"):
        words = ins.exec_form if ins.exec_form is not None else split_words(args, ins.where)
        if len(words) < 2:
            raise ins.error("needs at least one source and a destination", hint=f"{k} SRC... DEST")
        if "chmod" in ins.flags:
            _chmod(ins)
    elif k in ("ENV", "LABEL"):
        name_values(ins)
    elif k == "ARG":
        for word in split_words(args, ins.where):
            name = word.partition("=")[0]
            if not _is_name(name):
                raise ins.error(f"invalid argument name {name!r}", hint="ARG NAME[=DEFAULT] ...")
    elif k == "RUN" and "network" in ins.flags and ins.flags["network"] not in ("none", "host", "default"):
        raise ins.error(f"unsupported --network={ins.flags['network']}", hint="use none, host or default")
    elif k == "EXPOSE":
        words = split_words(args, ins.where)
        if not words:
            raise ins.error("needs at least one port", hint="EXPOSE PORT[/PROTOCOL] ...")
        for word in words:
            if "$" not in word:  # checked now, before any RUN; a variable's value only when the step runs
                expose_ports(word, ins)


def _chmod(ins: Instruction) -> int:
    text = ins.flags["chmod"]
    try:
        mode = int(text, 8)
    except ValueError:
        mode = -1
    if not 0 <= mode <= 0o7777:
        raise ins.error(f"--chmod={text} is not an octal mode", hint="e.g. --chmod=0644")
    return mode


def chmod_flag(ins: Instruction) -> int | None:
    """The ``--chmod`` of a COPY/ADD as a mode, or None."""
    return _chmod(ins) if "chmod" in ins.flags else None


def _is_name(name: str) -> bool:
    return bool(name) and not name[0].isdecimal() and all(c.isalnum() or c == "_" for c in name)


def name_values(ins: Instruction, expand: Callable[[str], str] | None = None) -> list[tuple[str, str]]:
    """``ENV``/``LABEL``: ``K=V K2="V 2"``, or the legacy ``K V W`` (one pair: the value is the rest).

    ``expand`` (variable substitution and quote removal) is applied to the
    values, and to LABEL keys; without it the raw words are returned (the
    parse-time check).
    """
    words = split_words(ins.args, ins.where)
    exp = expand or (lambda text: text)
    if "=" not in words[0]:
        if len(words) < 2 and ins.keyword == "ENV":
            raise ins.error(f"{ins.args!r}: a value is missing", hint="ENV NAME=VALUE ...")
        rest = ins.args.strip()[len(words[0]):].strip()
        return [(exp(words[0]) if ins.keyword == "LABEL" else words[0], exp(rest))]
    out = []
    for word in words:
        key, eq, value = word.partition("=")
        if not eq:
            raise ins.error(f"{word!r} is not NAME=VALUE", hint="quote values with spaces: NAME=\"a b\"")
        key = exp(key) if ins.keyword == "LABEL" else key
        if ins.keyword == "ENV" and not _is_name(key):
            raise ins.error(f"invalid variable name {key!r}", hint="names are letters, digits and '_'")
        if not key:
            raise ins.error(f"{word!r} has an empty name", hint=f"{ins.keyword} NAME=VALUE ...")
        out.append((key, exp(value)))
    return out


# -- Docker's lexer: words, quotes, escapes, variables ------------------------------------------


def split_words(text: str, where: str = "") -> list[str]:
    """Split at whitespace outside quotes; quotes and escapes stay for :func:`expand_word`."""
    words: list[str] = []
    current: list[str] = []
    quote = ""
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == _ESCAPE and quote != "'" and i + 1 < len(text):
            current.append(text[i:i + 2])
            i += 2
            continue
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch.isspace():
            if current:
                words.append("".join(current))
                current = []
            i += 1
            continue
        current.append(ch)
        i += 1
    if quote:
        raise ContainerfileError(f"{where}: unterminated {quote} quote in {text!r}".lstrip(": "), hint=_QUOTE_HINT)
    if current:
        words.append("".join(current))
    return words


def expand_word(word: str, env: Mapping[str, str], where: str = "") -> str:
    """Substitute variables and remove quotes and escapes, as Docker's ``ProcessWord``.

    Single quotes keep everything literal; in double quotes ``\\`` escapes
    only ``"``, ``$`` and ``\\``.  Unset variables expand to nothing.
    """
    out: list[str] = []
    quote = ""
    i = 0
    n = len(word)
    while i < n:
        ch = word[i]
        if quote == "'":
            if ch == "'":
                quote = ""
            else:
                out.append(ch)
            i += 1
        elif ch == _ESCAPE and i + 1 < n:
            nxt = word[i + 1]
            if quote == '"' and nxt not in '"$\\':
                out.append(ch)
            out.append(nxt)
            i += 2
        elif ch == "$":
            value, i = _dollar(word, i, env, where)
            out.append(value)
        elif ch in "'\"" and (not quote or quote == ch):
            quote = "" if quote else ch
            i += 1
        else:
            out.append(ch)
            i += 1
    if quote:
        raise ContainerfileError(f"{where}: unterminated {quote} quote in {word!r}".lstrip(": "), hint=_QUOTE_HINT)
    return "".join(out)


def _dollar(word: str, i: int, env: Mapping[str, str], where: str) -> tuple[str, int]:
    """The value of the ``$...`` reference at ``word[i]``, and the index after it."""
    n = len(word)
    if i + 1 < n and word[i + 1] == "{":
        end = _closing_brace(word, i + 2)
        if end < 0:
            raise ContainerfileError(f"{where}: missing '}}' in {word!r}".lstrip(": "), hint=_SUBST_HINT)
        inner = word[i + 2:end]
        j = 0
        while j < len(inner) and (inner[j].isalnum() or inner[j] == "_"):
            j += 1
        name, op = inner[:j], inner[j:]
        if not name:
            raise ContainerfileError(f"{where}: bad substitution ${{{inner}}}".lstrip(": "), hint=_SUBST_HINT)
        return _operator(name, op, env, where), end + 1
    j = i + 1
    while j < n and (word[j].isalnum() or word[j] == "_"):
        j += 1
    if j == i + 1:
        return "$", i + 1
    return env.get(word[i + 1:j], ""), j


def _closing_brace(word: str, start: int) -> int:
    depth = 1
    i = start
    while i < len(word):
        if word[i] == _ESCAPE:
            i += 2
            continue
        if word[i] == "{":
            depth += 1
        elif word[i] == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return -1


def _operator(name: str, op: str, env: Mapping[str, str], where: str) -> str:
    """``${NAME}``, ``${NAME:-w}``, ``${NAME-w}``, ``${NAME:+w}``, ``${NAME+w}``, ``${NAME:?msg}``."""
    value = env.get(name)
    if not op:
        return value or ""
    for spelling, need_non_empty in ((":-", True), ("-", False), (":+", True), ("+", False),
                                     (":?", True), ("?", False)):
        if op.startswith(spelling):
            arg = expand_word(op[len(spelling):], env, where)
            present = value is not None and (bool(value) or not need_non_empty)
            kind = spelling[-1]
            if kind == "-":
                return value if present and value is not None else arg
            if kind == "+":
                return arg if present else ""
            if not present:
                raise ContainerfileError(f"{where}: {name}: {arg or 'is not set'}".lstrip(": "),
                                         hint=f"set it with ARG/ENV, or pass --build-arg {name}=VALUE")
            return value or ""
    raise ContainerfileError(f"{where}: unsupported substitution ${{{name}{op}}}".lstrip(": "), hint=_SUBST_HINT)


def default_containerfile(context: str) -> str:
    """``Containerfile`` in the context, else ``Dockerfile`` (podman's order)."""
    for name in ("Containerfile", "Dockerfile"):
        path = os.path.join(context, name)
        if os.path.exists(path):
            return path
    return os.path.join(context, "Containerfile")


def expose_ports(word: str, ins: Instruction) -> list[str]:
    """``80``, ``80/udp``, ``8000-8002/tcp`` as ExposedPorts keys."""
    port, _, proto = word.partition("/")
    proto = (proto or "tcp").lower()
    first, dash, last = port.partition("-")
    if proto not in ("tcp", "udp", "sctp") or not first.isdecimal() or (dash and not last.isdecimal()):
        raise ins.error(f"invalid port {word!r}", hint="EXPOSE PORT[/tcp|udp|sctp] or a range 8000-8010")
    low, high = int(first), int(last) if dash else int(first)
    if not 0 < low <= high <= 65535:
        raise ins.error(f"invalid port {word!r}", hint="ports are 1-65535")
    return [f"{p}/{proto}" for p in range(low, high + 1)]
