"""The ground layer's one version parser and one percentile definition."""

from __future__ import annotations

import numpy as np
import pytest

from tdmi.errors import ConfigError, DataError
from tdmi.stats import percentile, percentiles
from tdmi.versions import installed_version, version_tuple


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("10.15.1.29", (10, 15, 1, 29)),
        ("1.25.0rc1", (1, 25, 0)),
        ("2.11.0+cu130", (2, 11, 0)),
        ("v11", (11,)),
    ],
)
def test_version_tuple(text: str, want: tuple[int, ...]) -> None:
    assert version_tuple(text) == want


def test_version_tuple_refuses_words() -> None:
    with pytest.raises(ConfigError, match="TensorRT version 'latest' is not a version number"):
        version_tuple("latest", "TensorRT")


def test_installed_version() -> None:
    assert installed_version("numpy") == np.__version__
    assert installed_version("no-such-distribution-tdmi") is None


def test_percentile_matches_numpy() -> None:
    rng = np.random.default_rng(0)
    xs = rng.random(101).tolist()
    for q in (0, 12.5, 50, 90, 99, 100):
        assert percentile(xs, q) == pytest.approx(float(np.percentile(xs, q)))
    assert percentiles([3.0, 1.0, 2.0], (0, 50, 100)) == [1.0, 2.0, 3.0]


def test_percentile_refuses_bad_input() -> None:
    with pytest.raises(DataError, match="no values"):
        percentile([], 50)
    with pytest.raises(DataError, match=r"0\.\.100"):
        percentile([1.0], 101)
