"""`streamrec train --factory`: checked at the model's dimension before any training."""

from __future__ import annotations

from click.testing import CliRunner

from streamrec.cli.train import train


def test_a_factory_that_needs_the_real_dimension_is_checked_at_it(tmp_path):
    # PQ48 needs a dimension divisible by 48: fine at d = 96, impossible at the default.
    result = CliRunner().invoke(train, ["--synthetic", "--factory", "IVF8,PQ48", "--dim", "100",
                                        "--models-dir", str(tmp_path)])
    assert result.exit_code == 2 and "not a FAISS factory string for d = 100" in result.output
    assert not any(tmp_path.iterdir())  # refused before training anything
