"""x-request-id values the HCM generates: version-4 UUIDs (Envoy's UUID4 request ids), unique per request."""
from __future__ import annotations

import collections
import uuid

from pyproxy.http.connection import new_request_id


def test_a_request_id_is_a_canonical_version_4_uuid() -> None:
    for _ in range(200):
        rid = new_request_id()
        parsed = uuid.UUID(rid)
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122
        assert str(parsed) == rid  # lower-case, dashes at 8-4-4-4-12


def test_request_ids_differ_and_their_random_digits_are_spread() -> None:
    ids = [new_request_id() for _ in range(4000)]
    assert len(set(ids)) == len(ids)
    # the variant digit takes all four of its values, each about a quarter of the time
    variants = collections.Counter(rid[19] for rid in ids)
    assert set(variants) == set("89ab")
    assert all(700 < n < 1300 for n in variants.values()), variants
    # every other hex position (not the version digit) takes all 16 digits
    for pos in (0, 9, 15, 20, 35):
        assert len({rid[pos] for rid in ids}) == 16, pos
