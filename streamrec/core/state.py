"""A user's state as kept in the ``user-states`` table, and its compact binary codec.

The table stores raw bytes (no pickling, no JSON of floats): a fixed header, the float32
vector, then the bounded lists of recent events and purchased items. Decoding is a few
``struct``/``numpy.frombuffer`` calls, so reading and writing state stays cheap in the
worker's hot path.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from streamrec.contract import EVENT_TYPE_CODES, EVENT_TYPES

_MAGIC = 0x5352  # "SR"
_FORMAT_VERSION = 2
# Format 3: format 2 with the taste vector (streamrec.core.taste) after the vector, as a
# uint32 length and float32 values; states without one are still written as format 2.
_TASTE_FORMAT_VERSION = 3
# magic, format, dim, n_events, last_ts, partition, offset, len(model_version), len(recent), len(purchased)
_HEADER = struct.Struct("<HHIQdiqHHH")
_SEP = "\x1f"


class StateDecodeError(ValueError):
    """Stored bytes that are not a user state of this format."""


class RecentEvent(NamedTuple):
    """One of a user's recent events, as the state keeps it."""

    event_id: str
    item_id: str
    type: str
    ts: float


@dataclass(frozen=True)
class UserState:
    """What the worker remembers about one user."""

    vector: np.ndarray  # float32 (d,), in the context space of ``model_version``'s item vectors
    last_ts: float | None  # event time of the newest event applied, None before the first
    n_events: int
    model_version: str
    #: Most recent events, oldest first; bounded by history_size. Rebuilds the vector for a new
    #: model version and recognises re-sent events.
    recent: tuple[RecentEvent, ...] = ()
    #: Purchased item ids, oldest first, bounded by max_exclusions; never recommended.
    purchased: tuple[str, ...] = ()
    #: Source partition and offset of the newest applied event (-1 before the first), so
    #: that events replayed after a crash or a rebalance are recognised and not applied twice.
    partition: int = -1
    offset: int = -1
    #: The long-term taste vector (:mod:`streamrec.core.taste`); None when taste is off.
    taste: np.ndarray | None = None

    def __post_init__(self) -> None:
        if not is_finite_vector(self.vector):
            raise ValueError("a user vector must be finite (NaN or inf found)")
        if self.taste is not None and not is_finite_vector(self.taste):
            raise ValueError("a taste vector must be finite (NaN or inf found)")


def is_finite_vector(vector: np.ndarray) -> bool:
    """True when every component is finite: one float64 sum (NaN and inf propagate, and no
    float32 values can overflow it), about a third of ``np.isfinite(v).all()``'s cost."""
    return math.isfinite(vector.sum(dtype=np.float64))


def encode_state(state: UserState) -> bytes:
    version = state.model_version.encode()
    vector = np.ascontiguousarray(state.vector, dtype=np.float32)
    recent_ids = _SEP.join([part for event in state.recent for part in (event.event_id, event.item_id)]).encode()
    recent_types = bytes(EVENT_TYPE_CODES[event.type] for event in state.recent)
    recent_ts = np.array([event.ts for event in state.recent], dtype=np.float64).tobytes()
    purchased = _SEP.join(state.purchased).encode()
    taste = b"" if state.taste is None else _encode_taste(state.taste)
    header = _HEADER.pack(
        _MAGIC,
        _TASTE_FORMAT_VERSION if taste else _FORMAT_VERSION,
        vector.shape[0],
        state.n_events,
        math.nan if state.last_ts is None else state.last_ts,
        state.partition,
        state.offset,
        len(version),
        len(state.recent),
        len(state.purchased),
    )
    return b"".join(
        [
            header,
            version,
            vector.tobytes(),
            taste,
            recent_types,
            recent_ts,
            struct.pack("<I", len(recent_ids)),
            recent_ids,
            purchased,
        ]
    )


def decode_state(raw: bytes) -> UserState:
    try:
        magic, fmt, dim, n_events, last_ts, partition, offset, n_version, n_recent, n_purchased = _HEADER.unpack_from(raw, 0)
    except struct.error as exc:
        raise StateDecodeError(f"user state too short ({len(raw)} bytes)") from exc
    if magic != _MAGIC or fmt not in (_FORMAT_VERSION, _TASTE_FORMAT_VERSION):
        raise StateDecodeError(f"not a user state of format {_FORMAT_VERSION} or {_TASTE_FORMAT_VERSION} "
                               f"(magic {magic:#x}, format {fmt})")
    pos = _HEADER.size
    version = raw[pos : pos + n_version].decode()
    pos += n_version
    # A read-only view of the (immutable) bytes: states are never changed in place.
    vector = np.frombuffer(raw, dtype=np.float32, count=dim, offset=pos)
    pos += 4 * dim
    taste = None
    if fmt == _TASTE_FORMAT_VERSION:
        taste, pos = _decode_taste(raw, pos)
    types = raw[pos : pos + n_recent]
    pos += n_recent
    recent_ts = struct.unpack_from(f"<{n_recent}d", raw, pos)
    pos += 8 * n_recent
    (n_ids,) = struct.unpack_from("<I", raw, pos)
    pos += 4
    recent_ids = raw[pos : pos + n_ids].decode().split(_SEP) if n_recent else []
    pos += n_ids
    purchased = tuple(raw[pos:].decode().split(_SEP)) if n_purchased else ()
    if len(recent_ids) != 2 * n_recent or len(purchased) != n_purchased:
        raise StateDecodeError("user state lists are inconsistent with its header")
    try:
        kinds = [EVENT_TYPES[code] for code in types]
    except IndexError:
        raise StateDecodeError("user state holds an unknown event type code") from None
    recent = tuple(map(RecentEvent, recent_ids[0::2], recent_ids[1::2], kinds, recent_ts))
    try:
        return UserState(
            vector=vector,
            last_ts=None if math.isnan(last_ts) else last_ts,
            n_events=n_events,
            model_version=version,
            recent=recent,
            purchased=purchased,
            partition=partition,
            offset=offset,
            taste=taste,
        )
    except ValueError as exc:  # a non-finite vector
        raise StateDecodeError(f"user state rejected: {exc}") from None


def _encode_taste(taste: np.ndarray) -> bytes:
    values = np.ascontiguousarray(taste, dtype=np.float32)
    return struct.pack("<I", values.shape[0]) + values.tobytes()


def _decode_taste(raw: bytes, pos: int) -> tuple[np.ndarray, int]:
    try:
        (n,) = struct.unpack_from("<I", raw, pos)
        taste = np.frombuffer(raw, dtype=np.float32, count=n, offset=pos + 4)
    except (struct.error, ValueError) as exc:
        raise StateDecodeError("user state too short for its taste vector") from exc
    return taste, pos + 4 + 4 * n
