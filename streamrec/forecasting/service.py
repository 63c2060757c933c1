"""The live forecaster: events topic in, daily demand forecasts out on a compacted ``forecasts`` topic.

At start it reads the events topic from the beginning (every partition assigned directly, no
consumer group), so its counts are rebuilt from the log: no local store to lose or to keep in
step, at the cost of one read of the topic per start (the topic's retention bounds the history
it can see). It then keeps consuming; once it has first caught up with the topic, whenever
``refit_interval_s`` has passed since the last round, it refits and publishes one record per
series, keyed by the series (``shop``, ``category:<c>``, ``item:<id>``), so the compacted topic
holds the latest forecast of each. An event that breaks the contract goes to the dead-letter
topic with its reason, and is counted.

The history of a round ends with the last *complete* day (the day before the newest event's
day, in the shop's time zone); the forecast covers the ``horizon`` days after it, today first.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

import numpy as np
import orjson

from streamrec.contract import InvalidEvent, decode_event, encode_dead_letter
from streamrec.forecasting.demand import SHOP, DemandCounts, learn_calendar
from streamrec.forecasting.models import MODELS, forecast

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ForecasterConfig:
    bootstrap: str
    events_topic: str = "events"
    forecasts_topic: str = "forecasts"
    dlq_topic: str = "forecasts-dlq"
    horizon: int = 7
    timezone: str = "UTC"
    model: str = "ets+arima+seasonal-naive"
    item_model: str = "window-28"
    top_items: int = 200
    refit_interval_s: float = 3600.0
    holidays: frozenset[date] = frozenset()
    partitions: int = 1

    def __post_init__(self) -> None:
        for name in (self.model, self.item_model):
            if name not in MODELS:
                raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
        if not 1 <= self.horizon <= 366:
            raise ValueError(f"the horizon must be 1 to 366 days, got {self.horizon}")


@dataclass
class ForecasterStats:
    events: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    rounds: int = 0
    published: int = 0


def forecast_records(counts: DemandCounts, config: ForecasterConfig, *, made_at: float) -> list[tuple[str, dict[str, Any]]]:
    """One ``(series, record)`` per series: the shop, every category and the top items, or none before a full day."""
    span = counts.days()
    if span is None:
        return []
    first, newest = span
    last = newest - timedelta(days=1)  # the newest day is still being sold in
    if last < first:
        return []
    shop = counts.matrix([SHOP], first, last)[0]
    calendar = learn_calendar(shop, first, config.holidays)
    categories = [s for s in counts.series_names() if s.startswith("category:")]
    items = counts.top_items(config.top_items)
    days = [last + timedelta(days=k + 1) for k in range(config.horizon)]
    records: list[tuple[str, dict[str, Any]]] = []
    for names, model in (([SHOP, *categories], config.model), (items, config.item_model)):
        if not names:
            continue
        units = counts.matrix(names, first, last)
        predicted = forecast(units, first, config.horizon, MODELS[model], shop_units=shop, calendar=calendar)
        for name, row in zip(names, predicted):
            record: dict[str, Any] = {
                "series": name, "model": model, "made_at": made_at, "history_start": first.isoformat(),
                "history_end": last.isoformat(),
                "days": [{"date": d.isoformat(), "units": round(float(u), 4)} for d, u in zip(days, row)],
            }
            if name == SHOP:  # the shop's first day, hour by hour: the day's units × the last 4 weeks' hourly shares
                shares = counts.hourly_shares(last - timedelta(days=27), last)
                record["hours_of_first_day"] = [round(float(u), 4) for u in row[0] * shares]
            records.append((name, record))
    return records


def run_forecaster(config: ForecasterConfig, *, should_stop: Callable[[], bool] = lambda: False,
                   max_rounds: int | None = None, clock: Callable[[], float] = time.time) -> ForecasterStats:
    """Consume, count, publish forecasts every ``refit_interval_s`` once caught up; return when
    ``should_stop()`` or after ``max_rounds`` rounds."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition

    from streamrec.kafka.admin import ensure_topics
    from streamrec.kafka.security import client_config

    ensure_topics(config.bootstrap, {config.events_topic: config.partitions, config.dlq_topic: 1})
    ensure_topics(config.bootstrap, {config.forecasts_topic: 1},
                  configs={config.forecasts_topic: {"cleanup.policy": "compact"}})
    consumer = Consumer({**client_config(config.bootstrap), "group.id": f"forecaster-{config.forecasts_topic}",
                         "enable.auto.commit": False, "enable.partition.eof": True, "log_level": 4})
    producer = Producer({**client_config(config.bootstrap), "acks": "all", "enable.idempotence": True,
                         "linger.ms": 20, "log_level": 4})
    stats = ForecasterStats()
    counts = DemandCounts(config.timezone)
    try:
        metadata = consumer.list_topics(config.events_topic, timeout=30)
        partitions = sorted(metadata.topics[config.events_topic].partitions)
        consumer.assign([TopicPartition(config.events_topic, p, OFFSET_BEGINNING) for p in partitions])
        at_end: set[int] = set()
        caught_up = False
        last_round = -float("inf")
        while not should_stop():
            for message in consumer.consume(1000, timeout=0.5):
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        at_end.add(message.partition())
                        continue
                    raise RuntimeError(f"{message.topic()} [{message.partition()}]: {error}")
                at_end.discard(message.partition())
                try:
                    event = decode_event(message.value())
                except InvalidEvent as exc:
                    stats.rejected[exc.reason] = stats.rejected.get(exc.reason, 0) + 1
                    logger.warning("%s [%d] offset %d: %s", message.topic(), message.partition(), message.offset(), exc)
                    producer.produce(config.dlq_topic, encode_dead_letter(
                        message.value(), exc.reason, exc.detail, topic=message.topic(),
                        partition=message.partition(), offset=message.offset()), key=message.key())
                    continue
                counts.add(event)
                stats.events += 1
            # After the first catch-up, a busy topic (never at its end on every partition at once) does not hold rounds back.
            caught_up = caught_up or len(at_end) == len(partitions)
            if caught_up and clock() - last_round >= config.refit_interval_s:
                last_round = clock()
                records = forecast_records(counts, config, made_at=last_round)
                for series, record in records:
                    producer.produce(config.forecasts_topic, orjson.dumps(record, option=orjson.OPT_SERIALIZE_NUMPY),
                                     key=series.encode())
                if producer.flush(30) != 0:
                    raise RuntimeError(f"forecasts to {config.forecasts_topic} were not delivered within 30 s")
                stats.rounds += 1
                stats.published += len(records)
                logger.info("round %d: %d forecasts from %d events", stats.rounds, len(records), stats.events)
                if max_rounds is not None and stats.rounds >= max_rounds:
                    break
            producer.poll(0)
    finally:
        producer.flush(30)
        consumer.close()
    return stats


def series_units(records: list[dict[str, Any]], series: str) -> np.ndarray:
    """The forecast units of ``series`` in the newest of ``records`` (decoded forecast records)."""
    mine = [r for r in records if r["series"] == series]
    if not mine:
        raise KeyError(f"no forecast for {series!r}")
    return np.array([d["units"] for d in max(mine, key=lambda r: r["made_at"])["days"]])
