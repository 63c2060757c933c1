"""The pure core stands on its own: no Kafka client, no Faust, nothing above it."""

import subprocess
import sys

BLOCKED = ["confluent_kafka", "faust", "aiokafka", "rocksdict", "pydantic", "click", "indexing", "streams", "producers"]


def test_the_core_imports_without_kafka_faust_or_the_packages_above_it():
    code = (
        "import sys\n"
        f"for name in {BLOCKED!r}: sys.modules[name] = None  # any import of these fails\n"
        "import streamrec.core.batch, streamrec.core.items, streamrec.core.interest, streamrec.core.search, "
        "streamrec.core.state, streamrec.core.experiments, streamrec.core.attribution, streamrec.core.abtest\n"
        "print('ok')\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "ok"
