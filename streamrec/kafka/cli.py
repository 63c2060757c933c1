import click


@click.group()
def kafka() -> None:
    """Run a real Apache Kafka broker locally (no Docker)."""
