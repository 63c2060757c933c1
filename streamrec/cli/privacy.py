"""``streamrec pseudonym`` and ``streamrec forget``: pseudonymous ids and erasure requests
(:mod:`streamrec.privacy`, :mod:`producers.erasure`, docs/security.md)."""

from __future__ import annotations

import json

import click

from streamrec.config import get_settings
from streamrec.privacy import PseudonymKeyError, Pseudonymizer

#: librdkafka's partitioners (its ``partitioner`` setting).
PARTITIONERS = ("consistent_random", "consistent", "murmur2_random", "murmur2", "fnv1a_random", "fnv1a", "random")


def _pseudonymizer() -> Pseudonymizer:
    try:
        return Pseudonymizer.from_settings(get_settings())
    except PseudonymKeyError as exc:
        raise click.ClickException(str(exc)) from None


@click.command()
@click.argument("user_ids", nargs=-1, required=True, metavar="USER_ID...")
def pseudonym(user_ids: tuple[str, ...]) -> None:
    """Print the pseudonym of each USER_ID under the key STREAMREC_PRIVACY__USER_ID_KEY, one a line:
    the id the broker, tables, lists and `serve` know the user by."""
    pseudonymizer = _pseudonymizer()
    for user_id in user_ids:
        click.echo(pseudonymizer(user_id))


@click.command()
@click.argument("user_id")
@click.option("--pseudonymize", is_flag=True,
              help="USER_ID is a raw id: forget its pseudonym (key: STREAMREC_PRIVACY__USER_ID_KEY).")
@click.option("--bootstrap", help="Kafka bootstrap servers [default: settings kafka.bootstrap].")
@click.option("--partitioner", type=click.Choice(PARTITIONERS),
              help="The partitioner of the producers that publish your events, so the request lands on the "
                   "user's partition [default: librdkafka's consistent_random, as streamrec's producers; "
                   "Java clients: murmur2_random].")
@click.option("--json", "as_json", is_flag=True, help="Print the request sent as JSON.")
def forget(user_id: str, pseudonymize: bool, bootstrap: str | None, partitioner: str | None, as_json: bool) -> None:
    """Erase USER_ID: publish an erasure request to the compacted erasures topic and, in order with
    the user's events, to the events topic. The worker deletes the user's state and writes its
    changelog tombstone, `serve` answers as for an unknown user, the trainer leaves the user's
    earlier events out of every later model; docs/security.md says how long the rest takes."""
    from producers.erasure import forget as send
    from producers.publisher import DeliveryError, QueueFullError
    from streamrec.kafka.admin import ensure_topics

    settings = get_settings()
    kafka = settings.kafka
    bootstrap = bootstrap or kafka.bootstrap
    if not user_id.strip():
        raise click.BadParameter("the user id must not be empty", param_hint="USER_ID")
    pseudonymizer = _pseudonymizer() if pseudonymize else None
    try:
        from streamrec.kafka.admin import compacted

        ensure_topics(bootstrap, {kafka.erasures_topic: kafka.partitions, kafka.events_topic: kafka.partitions},
                      timeout=15.0, configs={kafka.erasures_topic: compacted(kafka)})
        request = send(user_id, bootstrap=bootstrap, events_topic=kafka.events_topic,
                       erasures_topic=kafka.erasures_topic, pseudonymizer=pseudonymizer, partitioner=partitioner)
    except RuntimeError as exc:  # DeliveryError, QueueFullError and an unreachable broker
        hint = "" if isinstance(exc, (DeliveryError, QueueFullError)) else "\n(is the broker running? try `streamrec kafka status`)"
        raise click.ClickException(f"{exc}{hint}") from None
    if as_json:
        click.echo(json.dumps({**request.to_dict(), "topics": [kafka.erasures_topic, kafka.events_topic]}))
    else:
        click.echo(f"erasure request for {request.user_id} sent to {kafka.erasures_topic} and {kafka.events_topic}")


__all__ = ["forget", "pseudonym"]
