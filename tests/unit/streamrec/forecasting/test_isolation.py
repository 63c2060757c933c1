"""The forecasting and behaviour cores stand without Kafka, Faust or the packages above them."""

import subprocess
import sys

BLOCKED = ["confluent_kafka", "faust", "aiokafka", "rocksdict", "pydantic", "click", "indexing", "streams", "producers"]


def test_forecasting_and_analytics_import_without_kafka_or_the_packages_above():
    code = (
        "import sys\n"
        f"for name in {BLOCKED!r}: sys.modules[name] = None\n"
        "import streamrec.forecasting.demand, streamrec.forecasting.models, streamrec.forecasting.backtest\n"
        "import streamrec.forecasting.service, streamrec.analytics.behaviour\n"
        "print('ok')\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "ok"
