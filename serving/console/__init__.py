"""The operator console at /console: server-rendered pages (Jinja templates, one stylesheet, no script and nothing
from a CDN) where merchandisers and ML engineers do their daily work. Each page reads the same services as the
/admin API and each action calls the same functions, so the audit log records console actions like API ones.

`ROUTES` are the route handlers, `TEMPLATES` the template config (serving/app.py registers both)."""

from __future__ import annotations

from pathlib import Path

from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.static_files import create_static_files_router
from litestar.template.config import TemplateConfig

from serving.console.auth import ConsoleAuthController
from serving.console.campaigns import ConsoleCampaignsController
from serving.console.decisions import ConsoleDecisionsController
from serving.console.features import ConsoleFeaturesController
from serving.console.models import ConsoleModelsController
from serving.console.overview import ConsoleOverviewController

_HERE = Path(__file__).parent

TEMPLATES = TemplateConfig(directory=_HERE / "templates", engine=JinjaTemplateEngine)

ROUTES = [
    ConsoleAuthController,
    ConsoleOverviewController,
    ConsoleCampaignsController,
    ConsoleDecisionsController,
    ConsoleModelsController,
    ConsoleFeaturesController,
    create_static_files_router(path="/console/static", directories=[_HERE / "static"], include_in_schema=False,
                               cache_control=None),
]
