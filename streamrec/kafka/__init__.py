"""A real local Apache Kafka broker (KRaft, single node) run from Maven-resolved jars, no Docker."""

from streamrec.kafka.launcher import LIB_ENV_VAR, KafkaLauncher, KafkaLauncherError, KafkaStatus

__all__ = ["LIB_ENV_VAR", "KafkaLauncher", "KafkaLauncherError", "KafkaStatus"]
