"""``vars(v)`` / ``v.__dict__`` of a Value, as micrograd shows it.

micrograd's Value is a plain Python object: its instance dict holds ``data``,
``grad``, ``_backward``, ``_prev`` and ``_op`` (then whatever the user set,
e.g. the lecture's ``label``).  fastgrad keeps those in C fields (compiled
engine) or slots (``fastgrad.reference``), and the node's real instance dict
holds only user attributes.  :class:`ValueVars` is the mapping both engines
return for ``__dict__``: micrograd's keys first, in micrograd's order, then
the user attributes -- live (it reads the Value at every access) and written
through (``vars(v)["data"] = 2.0`` sets ``v.data``).  It is a
``MutableMapping``, not a ``dict``: ``isinstance(vars(v), dict)`` is False;
``vars(v).copy()`` or ``dict(vars(v))`` gives a plain dict snapshot.
"""
from collections.abc import Callable, Iterator, MutableMapping
from typing import Any

__all__ = ["ValueVars", "ENGINE_KEYS"]

#: the attributes micrograd's ``Value.__init__`` creates, in its order
ENGINE_KEYS = ("data", "grad", "_backward", "_prev", "_op")

# stored in the real instance dict by the engines, not shown as attributes
# (a hand-built node's op label; its user _backward is shown as _backward)
_HIDDEN = ("_custom_op", "_backward")


class ValueVars(MutableMapping[str, Any]):
    """A Value's attributes as a live mapping (what ``vars(v)`` returns).

    Parameters
    ----------
    value : Value
        The node.
    own_dict : callable
        ``own_dict(value, create)`` returns the node's real instance dict
        (user attributes); with ``create`` False it may return a new empty
        dict instead of giving the node one (the compiled engine's backward
        takes a slower path for nodes that have a dict).

    Examples
    --------
    >>> from fastgrad import Value
    >>> a = Value(2.0); b = a * 3.0
    >>> list(vars(b))
    ['data', 'grad', '_backward', '_prev', '_op']
    >>> vars(b)["_op"], vars(b)["data"]
    ('*', 6.0)
    >>> vars(a)["data"] = 5.0; a.data
    5.0
    >>> a.label = "a"; vars(a)["label"]
    'a'
    """

    __slots__ = ("_value", "_own_dict")

    def __init__(self, value: Any, own_dict: Callable[[Any, bool], dict[str, Any]]) -> None:
        self._value = value
        self._own_dict = own_dict

    def _user(self, create: bool = False) -> dict[str, Any]:
        return self._own_dict(self._value, create)

    def __getitem__(self, key: str) -> Any:
        if key in ENGINE_KEYS:
            return getattr(self._value, key)
        if key in _HIDDEN:
            raise KeyError(key)
        return self._user()[key]

    def __setitem__(self, key: str, item: Any) -> None:
        if key in ENGINE_KEYS:
            setattr(self._value, key, item)
        else:
            self._user(True)[key] = item

    def __delitem__(self, key: str) -> None:
        if key == "_backward":
            # a node's own _backward (user-assigned) goes; its rule stays
            try:
                del self._user()["_backward"]
            except KeyError:
                raise KeyError(key) from None
            return
        if key in ENGINE_KEYS:
            raise TypeError(f"cannot delete {key!r} from a Value's attributes "
                            "(it is part of the node); assign it instead")
        if key in _HIDDEN:
            raise KeyError(key)
        del self._user()[key]

    def __iter__(self) -> Iterator[str]:
        yield from ENGINE_KEYS
        for key in list(self._user()):
            if key not in _HIDDEN:
                yield key

    def __len__(self) -> int:
        return len(ENGINE_KEYS) + sum(1 for k in self._user() if k not in _HIDDEN)

    def __contains__(self, key: object) -> bool:
        if key in ENGINE_KEYS:
            return True
        return key not in _HIDDEN and key in self._user()

    def __repr__(self) -> str:
        return "{" + ", ".join(f"{k!r}: {self[k]!r}" for k in self) + "}"

    def copy(self) -> dict[str, Any]:
        """A plain dict with the current attributes (a snapshot)."""
        return {k: self[k] for k in self}

    def replace_all(self, mapping: Any) -> None:
        """``v.__dict__ = mapping``: user attributes become those of
        ``mapping``; its engine keys are assigned to the node."""
        items = dict(mapping)
        user = self._user(True)
        keep = {k: user[k] for k in _HIDDEN if k in user and k != "_backward"}
        user.clear()
        user.update(keep)
        for key, item in items.items():
            self[key] = item
