"""`streamrec train --catalog / --no-catalog`: the catalog's features reach the training."""

from __future__ import annotations

import json
from collections import Counter

from click.testing import CliRunner

from indexing.artifact import load_artifact
from producers.synthetic import SyntheticShop
from streamrec.cli.train import train
from streamrec.core.items import item_features

SHOP = ["--synthetic", "--users", "60", "--items", "80", "--events", "1500", "--dim", "8", "--json"]


def shared_features(catalog, item_ids) -> int:
    """Features (category levels, brands...) that two or more of the version's items have."""
    counts = Counter(f for item in catalog if item.item_id in item_ids for f in item_features(item)
                     if f[0] != "word")  # title words are not shared by default
    return sum(n >= 2 for n in counts.values())


def test_the_synthetic_shop_trains_with_its_catalog_and_without_when_asked(tmp_path):
    runner = CliRunner()
    result = runner.invoke(train, [*SHOP, "--models-dir", str(tmp_path / "with")])
    assert result.exit_code == 0, result.output
    meta = json.loads(result.output.strip().splitlines()[-1])
    item_ids = set(load_artifact(tmp_path / "with" / meta["version"], use_gpu=False).row_of)
    catalog = SyntheticShop(items=80, users=60, seed=7).catalog()
    assert meta["training"]["refine"]["features"] == shared_features(catalog, item_ids) > 0
    result = runner.invoke(train, [*SHOP, "--no-catalog", "--models-dir", str(tmp_path / "without")])
    assert result.exit_code == 0, result.output
    assert "features" not in json.loads(result.output.strip().splitlines()[-1])["training"]["refine"]


def test_a_catalog_file_is_read_and_a_contradiction_refused(tmp_path):
    catalog = tmp_path / "items.jsonl"
    catalog.write_text("".join(json.dumps({"item_id": item.item_id, "brand": "one"}) + "\n"
                               for item in SyntheticShop(items=80, users=60, seed=7).catalog()))
    result = CliRunner().invoke(train, [*SHOP, "--catalog", str(catalog), "--models-dir", str(tmp_path / "m")])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output.strip().splitlines()[-1])["training"]["refine"]["features"] == 1  # one brand
    result = CliRunner().invoke(train, [*SHOP, "--catalog", str(catalog), "--no-catalog"])
    assert result.exit_code == 2 and "--catalog and --no-catalog contradict each other" in result.output
    unknown = tmp_path / "items.txt"
    unknown.write_text("x\n")
    result = CliRunner().invoke(train, [*SHOP, "--catalog", str(unknown), "--models-dir", str(tmp_path / "n")])
    assert result.exit_code == 1 and "cannot tell the catalog format" in result.output
