"""A user's state as kept in the ``user-states`` table, and its compact binary codec.

The table stores raw bytes (no pickling, no JSON of floats): a fixed header, the float32
vector, then the bounded lists of recent events and purchased items. A state's recent events
are held the way they are stored, column by column (:class:`History`: the ids as one
separator-joined byte string each, the types and times as packed arrays), so that reading a
state, checking an event against it, appending a batch's events and writing it back make no
object per event; an event is built only when something iterates over the history.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple, overload

import numpy as np

from streamrec.contract import EVENT_TYPE_CODES, EVENT_TYPES

_MAGIC = 0x5352  # "SR"
#: 3: event ids and item ids in two columns (2: one interleaved list); 2 is still read.
_FORMAT_VERSION = 3
#: Format 3 with the taste vector (:mod:`streamrec.core.taste`) after the vector, as a uint32
#: length and float32 values; states without one are written as format 3.
_TASTE_FORMAT_VERSION = 4
_READABLE_FORMATS = (2, 3, 4)
# magic, format, dim, n_events, last_ts, partition, offset, len(model_version), len(recent), len(purchased)
_HEADER = struct.Struct("<HHIQdiqHHH")
_LENGTH = struct.Struct("<I")
_SEP = "\x1f"
SEP = b"\x1f"  # ids never hold it: the contract refuses control characters in ids


class StateDecodeError(ValueError):
    """Stored bytes that are not a user state of this format."""


class RecentEvent(NamedTuple):
    """One of a user's recent events, as the state keeps it."""

    event_id: str
    item_id: str
    type: str
    ts: float


class History(Sequence[RecentEvent]):
    """A user's recent events, oldest first, column by column: event ids and item ids as
    UTF-8 strings joined by :data:`SEP`, type codes one byte each, times packed float64.

    It is a sequence of :class:`RecentEvent` (indexing, slicing, iterating, comparing with a
    tuple of them build the events on demand); the worker's hot path uses the column
    operations (:meth:`has_event`, :meth:`extended`, :attr:`last_event_id`), which make none.

    >>> h = History.of([RecentEvent("e1", "sku-1", "view", 1.0)]).extended(["e2"], ["sku-2"], b"\x04", [2.0], limit=32)
    >>> h.has_event("e2"), h.has_event("e"), h.last_event_id, [e.item_id for e in h]
    (True, False, 'e2', ['sku-1', 'sku-2'])
    """

    __slots__ = ("_ids", "_items", "_ts", "_types")

    def __init__(self, ids: bytes = b"", items: bytes = b"", types: bytes = b"", ts: bytes = b"") -> None:
        self._ids, self._items, self._types, self._ts = ids, items, types, ts

    @classmethod
    def of(cls, events: Iterable[RecentEvent]) -> History:
        """The history of these events (``RecentEvent`` or ``(event_id, item_id, type, ts)``)."""
        if isinstance(events, History):
            return events
        events = list(events)
        if not events:
            return EMPTY_HISTORY
        return cls(_SEP.join([e[0] for e in events]).encode(), _SEP.join([e[1] for e in events]).encode(),
                   bytes(EVENT_TYPE_CODES[e[2]] for e in events),
                   np.array([e[3] for e in events], dtype="<f8").tobytes())

    # -- the columns -------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._types)

    def event_ids(self) -> list[str]:
        return self._ids.decode().split(_SEP) if self._types else []

    def item_ids(self) -> list[str]:
        return self._items.decode().split(_SEP) if self._types else []

    def type_codes(self) -> bytes:
        return self._types

    def times(self) -> list[float]:
        return list(struct.unpack(f"<{len(self._types)}d", self._ts))

    @property
    def last_event_id(self) -> str | None:
        return self._ids.rpartition(SEP)[2].decode() if self._types else None

    @property
    def last_item_id(self) -> str | None:
        return self._items.rpartition(SEP)[2].decode() if self._types else None

    def has_event(self, event_id: str) -> bool:
        """Is ``event_id`` among these events? (One substring search, no list of ids.)"""
        return bool(self._types) and (SEP + event_id.encode() + SEP) in (SEP + self._ids + SEP)

    def extended(self, event_ids: Sequence[str], item_ids: Sequence[str], type_codes: bytes,
                 times: Sequence[float] | np.ndarray | bytes, *, limit: int) -> History:
        """These events followed by the given ones (``times``: floats, or packed float64),
        keeping the newest ``limit``."""
        added = len(type_codes)
        if not added:
            return self
        ids = _SEP.join(event_ids).encode()
        items = _SEP.join(item_ids).encode()
        ts = times if isinstance(times, bytes) else np.asarray(times, dtype="<f8").tobytes()
        if self._types:
            ids, items = self._ids + SEP + ids, self._items + SEP + items
            types, ts = self._types + type_codes, self._ts + ts
        else:
            types = bytes(type_codes)
        drop = len(types) - limit
        if drop > 0:
            if drop >= len(types):
                return EMPTY_HISTORY
            ids, items = ids.split(SEP, drop)[drop], items.split(SEP, drop)[drop]
            types, ts = types[drop:], ts[8 * drop :]
        return History(ids, items, types, ts)

    # -- the sequence of events --------------------------------------------------------------

    def _events(self) -> list[RecentEvent]:
        kinds = [EVENT_TYPES[code] for code in self._types]
        return list(map(RecentEvent, self.event_ids(), self.item_ids(), kinds, self.times()))

    def __iter__(self) -> Iterator[RecentEvent]:
        return iter(self._events())

    @overload
    def __getitem__(self, index: int) -> RecentEvent: ...
    @overload
    def __getitem__(self, index: slice) -> tuple[RecentEvent, ...]: ...
    def __getitem__(self, index):
        if isinstance(index, slice):
            return tuple(self._events()[index])
        return self._events()[index]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, History):
            return (self._ids, self._items, self._types, self._ts) == (other._ids, other._items, other._types, other._ts)
        if isinstance(other, (tuple, list)):
            return tuple(self._events()) == tuple(other)
        return NotImplemented

    def __hash__(self) -> int:
        return hash((self._ids, self._items, self._types, self._ts))

    def __repr__(self) -> str:
        return f"History({self._events()!r})"


EMPTY_HISTORY = History()


@dataclass(frozen=True)
class UserState:
    """What the worker remembers about one user."""

    vector: np.ndarray  # float32 (d,), in the context space of ``model_version``'s item vectors
    last_ts: float | None  # event time of the newest event applied, None before the first
    n_events: int
    model_version: str
    #: Most recent events, oldest first; bounded by history_size. Rebuilds the vector for a new
    #: model version and recognises re-sent events. Any sequence of ``RecentEvent`` is taken
    #: and held as a :class:`History`.
    recent: History = EMPTY_HISTORY
    #: Purchased item ids, oldest first, bounded by max_exclusions; never recommended.
    purchased: tuple[str, ...] = ()
    #: Source partition and offset of the newest applied event (-1 before the first), so
    #: that events replayed after a crash or a rebalance are recognised and not applied twice.
    partition: int = -1
    offset: int = -1
    #: The long-term taste vector (:mod:`streamrec.core.taste`); None when taste is off.
    taste: np.ndarray | None = None

    def __post_init__(self) -> None:
        if type(self.recent) is not History:
            object.__setattr__(self, "recent", History.of(self.recent))
        if not is_finite_vector(self.vector):
            raise ValueError("a user vector must be finite (NaN or inf found)")
        if self.taste is not None and not is_finite_vector(self.taste):
            raise ValueError("a taste vector must be finite (NaN or inf found)")


def checked_state(vector: np.ndarray, last_ts: float | None, n_events: int, model_version: str, recent: History,
                  purchased: tuple[str, ...], partition: int, offset: int, taste: np.ndarray | None = None) -> UserState:
    """A :class:`UserState` from parts the caller has already checked (a finite float32 vector,
    a :class:`History`), without checking them again: the batch checks all its users' vectors
    in one vectorised call, then builds thousands of states."""
    state = object.__new__(UserState)
    state.__dict__.update(vector=vector, last_ts=last_ts, n_events=n_events, model_version=model_version,
                          recent=recent, purchased=purchased, partition=partition, offset=offset, taste=taste)
    return state


def is_finite_vector(vector: np.ndarray) -> bool:
    """True when every component is finite: one float64 sum (NaN and inf propagate, and no
    float32 values can overflow it), about a third of ``np.isfinite(v).all()``'s cost."""
    return math.isfinite(vector.sum(dtype=np.float64))


def encode_state(state: UserState) -> bytes:
    version = state.model_version.encode()
    vector = state.vector
    if vector.dtype != np.float32 or not vector.flags.c_contiguous:
        vector = np.ascontiguousarray(vector, dtype=np.float32)
    recent = state.recent
    purchased = _SEP.join(state.purchased).encode()
    taste = b"" if state.taste is None else _encode_taste(state.taste)
    header = _HEADER.pack(
        _MAGIC, _TASTE_FORMAT_VERSION if taste else _FORMAT_VERSION, vector.shape[0], state.n_events,
        math.nan if state.last_ts is None else state.last_ts,
        state.partition, state.offset, len(version), len(recent), len(state.purchased),
    )
    return b"".join([
        header, version, vector.tobytes(), taste, recent._types, recent._ts,
        _LENGTH.pack(len(recent._ids)), recent._ids, _LENGTH.pack(len(recent._items)), recent._items, purchased,
    ])


def decode_state(raw: bytes) -> UserState:
    try:
        magic, fmt, dim, n_events, last_ts, partition, offset, n_version, n_recent, n_purchased = _HEADER.unpack_from(raw, 0)
    except struct.error as exc:
        raise StateDecodeError(f"user state too short ({len(raw)} bytes)") from exc
    if magic != _MAGIC or fmt not in _READABLE_FORMATS:
        raise StateDecodeError(f"not a user state of format {_FORMAT_VERSION} (magic {magic:#x}, format {fmt})")
    pos = _HEADER.size
    try:
        version = raw[pos : pos + n_version].decode()
        pos += n_version
        # A read-only view of the (immutable) bytes: states are never changed in place.
        vector = np.frombuffer(raw, dtype=np.float32, count=dim, offset=pos)
        pos += 4 * dim
        taste = None
        if fmt == _TASTE_FORMAT_VERSION:
            (n_taste,) = _LENGTH.unpack_from(raw, pos)
            taste = np.frombuffer(raw, dtype=np.float32, count=n_taste, offset=pos + 4)
            pos += 4 + 4 * n_taste
        types = raw[pos : pos + n_recent]
        pos += n_recent
        ts = raw[pos : pos + 8 * n_recent]
        pos += 8 * n_recent
        (n_ids,) = _LENGTH.unpack_from(raw, pos)
        pos += 4
        ids = raw[pos : pos + n_ids]
        pos += n_ids
        if fmt == 2:  # event and item ids interleaved in one list
            both = ids.split(SEP) if n_recent else []
            ids, items = SEP.join(both[0::2]), SEP.join(both[1::2])
            if len(both) != 2 * n_recent:
                raise StateDecodeError("user state lists are inconsistent with its header")
        else:
            (n_items,) = _LENGTH.unpack_from(raw, pos)
            pos += 4
            items = raw[pos : pos + n_items]
            pos += n_items
        purchased = tuple(raw[pos:].decode().split(_SEP)) if n_purchased else ()
    except (struct.error, ValueError) as exc:  # truncated, or bytes that are not UTF-8
        raise StateDecodeError(f"user state is damaged: {exc}") from None
    separators = n_recent - 1 if n_recent else 0
    if (len(types) != n_recent or len(ts) != 8 * n_recent or ids.count(SEP) != separators
            or items.count(SEP) != separators or (n_recent and not (ids and items)) or len(purchased) != n_purchased):
        raise StateDecodeError("user state lists are inconsistent with its header")
    if n_recent and max(types) >= len(EVENT_TYPES):
        raise StateDecodeError("user state holds an unknown event type code")
    if not is_finite_vector(vector):
        raise StateDecodeError("user state rejected: a user vector must be finite (NaN or inf found)")
    if taste is not None and not is_finite_vector(taste):
        raise StateDecodeError("user state rejected: a taste vector must be finite (NaN or inf found)")
    return checked_state(vector, None if math.isnan(last_ts) else last_ts, n_events, version,
                         History(ids, items, types, ts) if n_recent else EMPTY_HISTORY, purchased, partition, offset,
                         taste)


def _encode_taste(taste: np.ndarray) -> bytes:
    values = np.ascontiguousarray(taste, dtype=np.float32)
    return _LENGTH.pack(values.shape[0]) + values.tobytes()
