"""Feast's feature-server routes, so that a stock Feast SDK (`online_store: {type: remote, path: <pantry>}`) reads
and writes pantry's online store: POST /get-online-features (serving/online_features.py), /write-to-online-store and
/push (serving/feast_server.py). The key comes as Feast's client sends it, `Authorization: Bearer <key>` (or
`X-API-Key`), with the `features` scope for reads and writes alike (serving/access.py)."""

from __future__ import annotations

from litestar import Controller, post
from litestar.params import JSONBody

from pantry.schemas import FeastPushRequest, FeastWriteRequest, FeastWriteResult, FeaturesRequest, FeaturesResponse
from serving.feast_server import push_request, write_request
from serving.online_features import online_features
from serving.services import Injected


class FeastServerController(Controller):
    path = "/"
    tags = ("feast feature server",)

    @post("/get-online-features", status_code=200,
          summary="Feast's /get-online-features: values past their TTL are returned, marked OUTSIDE_MAX_AGE")
    async def get_online_features(self, data: JSONBody[FeaturesRequest], services: Injected) -> FeaturesResponse:
        return await online_features(services, data, stale_values=True)

    @post("/write-to-online-store", status_code=200, summary="Feast's /write-to-online-store: one view's rows")
    async def write_to_online_store(self, data: JSONBody[FeastWriteRequest], services: Injected) -> FeastWriteResult:
        return await write_request(services, data)

    @post("/push", status_code=200, summary="Feast's /push: rows into every view the push source feeds")
    async def push(self, data: JSONBody[FeastPushRequest], services: Injected) -> list[FeastWriteResult]:
        return await push_request(services, data)
