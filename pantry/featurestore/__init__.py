"""Feast's Redis online store, read and written directly (for speed) but only in Feast's own layout.

- `layout`: views from the registry, entity keys, field names, rows decoded from HMGET replies
- `values`: Feast's value and timestamp encodings
- `resp`: rows as RESP `HSET` commands
- `pipeline`: pipelined writes (one connection, or one per Redis Cluster node), `write_rows`
- `roundtrip`: async pipelined round trips for serving (single Redis or Cluster)
- `reader`: a request's rows in one round trip, with each row's age and TTL status
- `repo`: the Feast repo for pantry's settings (feature_store.yaml, apply, registry)
- `batch_views`: the catalogue and coupon views online

Anything written here is readable by `FeatureStore.get_online_features` (tests/pantry/featurestore proves it).
"""
