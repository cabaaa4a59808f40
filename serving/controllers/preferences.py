"""PUT and GET /v1/customers/{customer_id}/preferences (the `ingest` scope: the order flow sets them;
serving/preferences.py stores them). A bad body is a 400 naming the field (pantry/schemas.py CustomerPreferences)."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, get, put
from litestar.params import JSONBody, Parameter

from pantry.events import MAX_ID
from pantry.schemas import CustomerPreferences, StoredPreferences
from serving import preferences
from serving.services import Injected

CustomerId = Annotated[int, Parameter(ge=0, le=MAX_ID, description="a Complete Journey household id")]


class PreferencesController(Controller):
    path = "/v1/customers/{customer_id:int}/preferences"
    tags = ("customers",)

    @put(status_code=200, summary="Set a shopper's preferences (replaces them); every answer honours them")
    async def put_preferences(self, customer_id: CustomerId, data: JSONBody[CustomerPreferences],
                              services: Injected) -> StoredPreferences:
        return await preferences.put(services, customer_id, data)

    @get(summary="A shopper's preferences (the defaults when none were set)")
    async def get_preferences(self, customer_id: CustomerId, services: Injected) -> StoredPreferences:
        return await preferences.get(services, customer_id)
