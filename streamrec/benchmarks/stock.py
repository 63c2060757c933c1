"""``streamrec bench --stock-churn``: how soon an item that goes out of stock leaves every list.

While the workload's events flow at a steady rate, a second thread every ``every_s`` seconds
picks items that the worker is recommending right now (read live from the recommendations
topic) and publishes ``available: false`` catalog records for them. After the run every list
is read back; for each item the delay is the time from the broker's acknowledgement of its
catalog record to the last list (by ``produced_at``) that still contained it (0 when no later
list did). The same run gives the event-to-list latency, so the churn's cost shows too.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import numpy as np
from confluent_kafka import OFFSET_END, Consumer, TopicPartition

from indexing.artifact import load_artifact
from producers.publisher import EventPublisher
from streamrec.benchmarks.load import Workload, produce
from streamrec.contract import CatalogItem, decode_recommendation, encode_catalog_item
from streamrec.harness.topics import wait_for_answers
from streamrec.harness.worker import WorkerConfig, WorkerProcess
from streamrec.kafka.admin import ensure_topics
from streamrec.kafka.security import client_config


def _percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p99": None, "max": None}
    array = np.asarray(values)
    return {"p50": round(float(np.percentile(array, 50)) * 1000, 1), "p99": round(float(np.percentile(array, 99)) * 1000, 1),
            "max": round(float(array.max()) * 1000, 1)}


class _Churn(threading.Thread):
    """Marks items that lists hold right now as unavailable, a few every ``every_s`` seconds."""

    def __init__(self, bootstrap: str, items_topic: str, recs_topic: str, every_s: float, per_round: int) -> None:
        super().__init__(daemon=True)
        self.bootstrap, self.items_topic, self.recs_topic = bootstrap, items_topic, recs_topic
        self.every_s, self.per_round = every_s, per_round
        self.written: dict[str, float] = {}  # item -> when the broker acknowledged its record
        self.stop = threading.Event()

    def run(self) -> None:
        consumer = Consumer({**client_config(self.bootstrap), "group.id": f"churn-{uuid.uuid4().hex[:8]}",
                             "enable.auto.commit": False})
        partitions = consumer.list_topics(self.recs_topic, timeout=10).topics[self.recs_topic].partitions
        consumer.assign([TopicPartition(self.recs_topic, p, OFFSET_END) for p in partitions])
        seen: Counter[str] = Counter()
        next_round = time.monotonic() + self.every_s
        with EventPublisher(self.bootstrap, self.items_topic, linger_ms=0) as publisher:
            while not self.stop.is_set():
                for message in consumer.consume(1000, timeout=0.1):
                    if message.error() is None:
                        seen.update(i.item_id for i in decode_recommendation(message.value()).items)
                if time.monotonic() < next_round:
                    continue
                chosen = [item for item, _ in seen.most_common() if item not in self.written][: self.per_round]
                for item in chosen:
                    publisher.publish_raw(item.encode(), encode_catalog_item(CatalogItem(item, available=False)))
                publisher.flush(10.0)
                acked = time.time()
                for item in chosen:
                    self.written[item] = acked
                seen.clear()
                next_round = time.monotonic() + self.every_s
        consumer.close()


def run_stock_churn(bootstrap: str, workload: Workload, *, rate: float, workdir: Path, partitions: int,
                    every_s: float = 2.0, per_round: int = 3, timeout: float = 600.0, log=print) -> dict:  # noqa: ANN001
    """Run the workload through a worker at ``rate`` while items go out of stock; the delays."""
    run = uuid.uuid4().hex[:6]
    topics = {name: f"{name}-churn-{run}" for name in ("events", "recommendations", "dlq", "items")}
    ensure_topics(bootstrap, {t: partitions for t in topics.values()},
                  configs={topics["items"]: {"cleanup.policy": "compact"}})
    config = WorkerConfig(bootstrap=bootstrap, models_dir=workload.model_dir, data_dir=workdir / "churn-data",
                          app_id=f"streamrec-churn-{run}", events_topic=topics["events"],
                          recommendations_topic=topics["recommendations"], dlq_topic=topics["dlq"],
                          partitions=partitions, extra_env={"STREAMREC_KAFKA__ITEMS_TOPIC": topics["items"]})
    worker = WorkerProcess(config, log_file=workdir / "churn-worker.log").start()
    try:
        worker.wait_ready()
        churn = _Churn(bootstrap, topics["items"], topics["recommendations"], every_s, per_round)
        churn.start()
        log(f"stock churn: {len(workload):,} events at {rate:g}/s, {per_round} item(s) out of stock every {every_s:g} s")
        produced_at = produce(bootstrap, topics["events"], workload.keys, workload.values, rate=rate)
        churn.stop.set()
        churn.join()
        wanted = [event_id.decode() for event_id in workload.last_event_ids()]
        lists = [rec for rec, _ in wait_for_answers(bootstrap, topics["recommendations"], wanted, timeout=timeout)]
    finally:
        worker.stop()
    last_with: dict[str, float] = {}
    for rec in lists:
        for item in rec.items:
            if item.item_id in churn.written:
                last_with[item.item_id] = max(last_with.get(item.item_id, 0.0), rec.produced_at)
    delays = [max(0.0, last_with.get(item, 0.0) - written) for item, written in churn.written.items()]
    position = {event_id: n for n, event_id in enumerate(workload.event_ids)}
    latency = [rec.produced_at - produced_at[position[rec.event_id.encode()]] for rec in lists
               if rec.event_id.encode() in position]
    short = sum(len(rec.items) < 10 for rec in lists)
    model = load_artifact(workload.model_dir, use_gpu=False)
    return {
        "items_out_of_stock": len(churn.written),
        "delay_ms": _percentiles(delays),
        "lists": len(lists),
        "lists_with_fewer_than_10": short,
        "event_to_list_latency_ms": _percentiles(latency),
        "config": {"rate": rate, "events": len(workload), "model_items": model.n_items, "every_s": every_s,
                   "per_round": per_round, "partitions": partitions},
        "per_item": {item: round(d * 1000, 1) for item, d in zip(churn.written, delays)},
    }


def stock_text(result: dict) -> str:
    d, lat = result["delay_ms"], result["event_to_list_latency_ms"]
    return (f"{result['items_out_of_stock']} items went out of stock at {result['config']['rate']:g} events/s; "
            f"delay from the catalog write to the last list holding the item: p50 {d['p50']} ms, p99 {d['p99']} ms, "
            f"max {d['max']} ms; event-to-list latency p50 {lat['p50']} ms, p99 {lat['p99']} ms; "
            f"{result['lists']:,} lists, {result['lists_with_fewer_than_10']} with fewer than 10 items")

