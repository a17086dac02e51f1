"""`make demo ENVOY=...` / `python -m pyproxy.demo_mesh --envoy ...`: which workloads get a real Envoy sidecar."""
from __future__ import annotations

import pytest

from pyproxy.demo_mesh import envoy_workloads


@pytest.mark.parametrize("values, chosen", [
    ([], []),
    (["reviews-v2"], ["reviews-v2"]),
    (["reviews-v2,details-v1"], ["details-v1", "reviews-v2"]),  # commas, as a user types a list
    (["reviews-v2 details-v1"], ["details-v1", "reviews-v2"]),  # spaces, as `make demo ENVOY="a b"` passes them
    (["reviews-v2", "reviews-v2"], ["reviews-v2"]),
    (["all"], ["productpage-v1", "details-v1", "reviews-v1", "reviews-v2", "reviews-v3", "ratings-v1"]),
    (["reviews-v2,all"], ["productpage-v1", "details-v1", "reviews-v1", "reviews-v2", "reviews-v3", "ratings-v1"]),
])
def test_the_workloads_chosen(values, chosen):
    assert envoy_workloads(values) == chosen


def test_an_unknown_workload_is_named_with_the_known_ones():
    with pytest.raises(ValueError) as err:
        envoy_workloads(["reviews-v2,reviews-v9"])
    assert str(err.value).startswith("--envoy 'reviews-v9': one of productpage-v1, details-v1,")
