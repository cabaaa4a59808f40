"""The gate's memory of the event ids it accepted within the lateness bound, at ~8 bytes an id.

The gate drops an event whose id it accepted before, and holds every id of the last LATENESS_S of event time: at a
sustained 10,000 events/s, 6,000,000 ids. Held as a dict of id strings to times they cost ~150 bytes each (the
string, its float, the slot; `python -m experiments.state_growth memory`): ~900 MB, and as much again to encode in
every recovery snapshot. Here an id is a 64-bit keyed BLAKE2b hash, in one sorted numpy array per minute of event
time; a batch's ids are looked up in each minute's array at once (np.searchsorted), and a minute is forgotten whole
once it is past the lateness bound. New hashes wait in a set (so a batch sees its own duplicates) and merge into their
minutes' arrays once SEAL_AT of them wait, between batches.

Two distinct ids with the same hash would make the second a "duplicate": with n ids held, a new id collides with
probability n / 2^64 (3e-13 at 6,000,000), about one event in ten years at 10,000 events/s. The key is random per gate
state and kept in its snapshot, so ids cannot be chosen to collide with someone else's.
"""

from __future__ import annotations

import hashlib
import os
from array import array
from collections.abc import Iterable, Sequence

import numpy as np

MINUTE_S = 60.0
SEAL_AT = 16_384  # waiting hashes merged into their minutes' arrays (each merge copies those arrays: O(minute))
KEY_BYTES = 16


class Recording:
    """The ids added since a fork, in order: their hashes (uint64) and event times (float64)."""

    __slots__ = ("hashes", "times")

    def __init__(self) -> None:
        self.hashes, self.times = array("Q"), array("d")

    def __len__(self) -> int:
        return len(self.hashes)


class SeenIds:
    """Which ids were accepted. Per batch: `sealed_hits` of its hashes; each id accepted is a duplicate if sealed or
    in `pending`, else is added to `pending` at once (a batch sees its own duplicates) and, with its time, to the
    list handed to `settle` after the batch."""

    __slots__ = ("by_minute", "key", "pending", "recording", "waiting")

    def __init__(self, key: bytes | None = None, minutes: Iterable[tuple[float, bytes]] = ()):
        self.key = key or os.urandom(KEY_BYTES)
        self.by_minute: dict[float, np.ndarray] = {m: np.frombuffer(raw, dtype=np.uint64) for m, raw in minutes}
        self.pending: set[int] = set()  # hashes not yet in an array
        self.waiting: dict[float, list[int]] = {}  # the same, by minute
        # the hashes and times of the ids added since a forked snapshot's fork (streaming.gate.GateSnapshots), or
        # None; typed arrays, so that the close takes their bytes as they are
        self.recording: Recording | None = None

    def __len__(self) -> int:
        return sum(len(a) for a in self.by_minute.values()) + len(self.pending)

    def hashes(self, ids: Sequence[str]) -> list[int]:
        key, blake2b = self.key, hashlib.blake2b
        # surrogatepass: any str encodes (a JSON "\\ud800" escape decodes to a lone surrogate)
        raw = b"".join([blake2b(i.encode("utf-8", "surrogatepass"), digest_size=8, key=key).digest() for i in ids])
        return np.frombuffer(raw, dtype=np.uint64).tolist()

    def sealed_hits(self, hashes: Sequence[int]) -> list[bool]:
        """Whether each hash is in a minute's array (not `pending`: the caller checks that as it adds)."""
        if not self.by_minute or not hashes:
            return [False] * len(hashes)
        q = np.array(hashes, dtype=np.uint64)
        found = np.zeros(len(q), dtype=bool)
        for arr in self.by_minute.values():
            i = np.searchsorted(arr, q)
            np.minimum(i, len(arr) - 1, out=i)
            found |= arr[i] == q
        return found.tolist()

    def settle(self, bound: float, added: Iterable[tuple[int, float]] = ()) -> None:
        """After a batch: the (hash, time) of the ids it added to `pending` join their minutes' waiting lists; the
        minutes wholly before `bound` (the lateness bound) are forgotten; and the waiting hashes merge into their
        arrays once there are SEAL_AT of them."""
        waiting, recording = self.waiting, self.recording
        for h, t in added:
            if recording is not None:
                recording.hashes.append(h)
                recording.times.append(t)
            m = t // MINUTE_S * MINUTE_S
            held = waiting.get(m)
            if held is None:
                waiting[m] = [h]
            else:
                held.append(h)
        for m in [m for m in self.by_minute if m + MINUTE_S <= bound]:
            del self.by_minute[m]
        for m in [m for m in self.waiting if m + MINUTE_S <= bound]:
            self.pending.difference_update(self.waiting.pop(m))
        if len(self.pending) >= SEAL_AT:
            self.seal()

    def seal(self) -> None:
        for m, hashes in self.waiting.items():
            new = np.unique(np.array(hashes, dtype=np.uint64))
            arr = self.by_minute.get(m)
            self.by_minute[m] = new if arr is None else np.insert(arr, np.searchsorted(arr, new), new)
        self.waiting, self.pending = {}, set()

    def minutes(self) -> list[tuple[float, bytes]]:
        """(minute, its sorted hashes as bytes), every hash sealed first: what a snapshot keeps."""
        self.seal()
        return [(m, arr.tobytes()) for m, arr in sorted(self.by_minute.items())]
