"""Named tuples for the modules every start loads, without ``collections``.

``collections.namedtuple`` costs ~1.4 ms to import, and ~0.07 ms for each class it makes (it compiles
the class's ``__new__`` from source text): ~2.3 ms of a ~40 ms ``sandboxer run``, which makes a dozen.
:func:`record` makes the same kind of class from plain closures — a ``tuple`` subclass with named
fields and defaults, ``_make``, ``_replace`` (and ``copy.replace``), ``_asdict``, ``_fields``,
``_field_defaults``, namedtuple's repr, pickling and ``match`` — with namedtuple's own C field accessor.

Type checkers see :func:`collections.namedtuple` itself, which they understand.
"""

from __future__ import annotations

import sys

__all__ = ["record"]

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections import namedtuple as record
else:
    try:
        from _collections import _tuplegetter  # what namedtuple's fields are made of (CPython)
    except ImportError:  # pragma: no cover - another Python
        def _tuplegetter(index, doc):
            return property(lambda self: self[index], doc=doc)

    def record(typename, field_names, *, defaults=()):
        """A namedtuple class: ``record("Point", "x y", defaults=(0,))``; fields as a string or a sequence."""
        fields = tuple(field_names.replace(",", " ").split() if isinstance(field_names, str) else field_names)
        if len(defaults) > len(fields):
            raise TypeError("got more default values than field names")
        field_defaults = dict(zip(fields[len(fields) - len(defaults):], defaults, strict=True))
        count = len(fields)

        def __new__(cls, *args, **kwargs):
            if kwargs or len(args) != count:
                args = _bind(typename, fields, field_defaults, args, kwargs)
            return tuple.__new__(cls, args)

        def _make(cls, iterable):
            result = tuple.__new__(cls, iterable)
            if len(result) != count:
                raise TypeError(f"expected {count} arguments, got {len(result)}")
            return result

        def _replace(self, **changes):
            result = tuple.__new__(type(self), [changes.pop(f, v) for f, v in zip(fields, self, strict=True)])
            if changes:
                raise ValueError(f"got unexpected field names: {list(changes)!r}")
            return result

        def __repr__(self):
            return f"{type(self).__name__}({', '.join(f'{f}={v!r}' for f, v in zip(fields, self, strict=True))})"

        namespace = {
            "__doc__": f"{typename}({', '.join(fields)})", "__slots__": (), "_fields": fields,
            "_field_defaults": field_defaults, "__match_args__": fields, "__new__": __new__,
            "_make": classmethod(_make), "_replace": _replace, "__replace__": _replace, "__repr__": __repr__,
            "_asdict": lambda self: dict(zip(fields, self, strict=True)), "__getnewargs__": lambda self: tuple(self),
            # where pickle and repr look for the class: the caller's module, as namedtuple sets it
            "__module__": sys._getframe(1).f_globals.get("__name__", "__main__"),
        }
        for index, name in enumerate(fields):
            namespace[name] = _tuplegetter(index, f"Alias for field number {index}")
        return type(typename, (tuple,), namespace)

    def _bind(typename, fields, field_defaults, args, kwargs):
        """The values of a call with keywords, missing arguments or too many, checked as namedtuple's are."""
        if len(args) > len(fields):
            raise TypeError(f"{typename}.__new__() takes {len(fields) + 1} positional arguments "
                            f"but {len(args) + 1} were given")
        values = list(args)
        for name in fields[len(args):]:
            if name in kwargs:
                values.append(kwargs.pop(name))
            elif name in field_defaults:
                values.append(field_defaults[name])
            else:
                raise TypeError(f"{typename}.__new__() missing required argument: {name!r}")
        for name in kwargs:
            raise TypeError(f"{typename}.__new__() got multiple values for argument {name!r}" if name in fields
                            else f"{typename}.__new__() got an unexpected keyword argument {name!r}")
        return values
