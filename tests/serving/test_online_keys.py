"""serving.online.EntityKeys builds exactly Feast's keys (the ones the stream writes), without protobuf."""

from __future__ import annotations

from serving.online import EntityKeys


def test_entity_keys_match_feast(layout):
    keys = EntityKeys(layout)
    values = [0, 1, 7, 2**31, 2**40 + 3, 9_300_011, -5]
    checked = 0
    for view, schema in layout.views.items():
        n = len(schema.join_keys)
        for i, v in enumerate(values):
            join_values = tuple(values[(i + j) % len(values)] + j for j in range(n)) if n else (v,)
            assert keys.key(view, join_values) == layout.key(view, join_values), (view, join_values)
            checked += 1
    assert checked and any(len(s.join_keys) > 1 for s in layout.views.values())
