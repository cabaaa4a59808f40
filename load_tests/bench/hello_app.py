"""The ceiling: a Litestar + msgspec hello-world served exactly like pantry (granian), nothing else."""

from __future__ import annotations

import msgspec
from litestar import Litestar, get, post


class Hello(msgspec.Struct):
    hello: str


@post("/hello", status_code=200)
async def hello() -> Hello:
    return Hello(hello="world")


@get("/healthz")
async def healthz() -> Hello:
    return Hello(hello="ok")


app = Litestar([hello, healthz], openapi_config=None)
