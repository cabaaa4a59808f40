"""Freshness probes: after a probe purchase of a new customer is sent, poll Redis until that customer's
`customer_activity` row is readable; the delay is the event's freshness (streaming.py and deployed.py)."""

from __future__ import annotations

import threading
import time

from pantry.settings import Settings


class FreshnessProbe(threading.Thread):
    """Polls the online hash of each expected probe customer until its activity row appears; records the delay."""

    def __init__(self, settings: Settings, layout=None):
        from pantry.featurestore import repo
        from pantry.redis_server import sync_client

        super().__init__(daemon=True)
        self.layout = layout or repo.layout(settings)
        self.client = sync_client(settings)
        self.field = self.layout.fields("customer_activity", ["orders_7d"])[-1]  # the _ts field
        self.pending: dict[bytes, float] = {}
        self.lock = threading.Lock()
        self.latencies: list[float] = []
        self.sent: list[float] = []  # when each seen probe was sent (time.monotonic: one clock for every process)
        self.stop = threading.Event()

    def expect(self, customer_id: int, sent: float) -> None:
        with self.lock:
            self.pending[self.layout.key("customer_activity", (customer_id,))] = sent

    def run(self) -> None:
        while not self.stop.is_set():
            with self.lock:
                keys = list(self.pending)
            if keys:
                pipe = self.client.pipeline(transaction=False)
                for k in keys:
                    pipe.hexists(k, self.field)
                now = time.monotonic()
                for k, seen in zip(keys, pipe.execute(), strict=True):
                    if seen:
                        with self.lock:
                            sent = self.pending.pop(k)
                            self.latencies.append(now - sent)
                            self.sent.append(sent)
            time.sleep(0.002)
