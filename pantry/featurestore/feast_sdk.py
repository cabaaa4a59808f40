"""Importing the Feast SDK at half its cost, and the `feast` CLI the same way.

Feast decorates its definition classes with typeguard's `@typechecked`, which re-parses and re-compiles every
method's source when the module is imported: about half of the 13-16 s that `import feast` takes on the project's
2-core machine (docs/DECISIONS.md, "Importing Feast"). Every pantry process that touches Feast (the live and replay
flows, `pantry serve` reading the registry, training's push, `feast apply`) pays that on start, and a restart pays it
again. `import_feast` imports the SDK with `@typechecked` as the identity for the duration of the import only, so
Feast's classes are the same classes without the argument checks; the checks guard hand-written definitions, and
pantry's are checked by the plain `feast` CLI in tests/feature_repo.

    python -m pantry.featurestore.feast_sdk -c feature_repo -f feature_store.yaml apply   # `feast ...`, faster
"""

from __future__ import annotations

import importlib
import sys
from types import ModuleType


def _unchecked(target=None, **_options):
    """typeguard.typechecked's two forms (`@typechecked` and `@typechecked(...)`), checking nothing."""
    return target if target is not None else _unchecked


def import_feast() -> ModuleType:
    """The `feast` package, imported once per process without typeguard's instrumentation."""
    if "feast" in sys.modules:
        return sys.modules["feast"]
    import typeguard

    checked = typeguard.typechecked
    typeguard.typechecked = _unchecked
    try:
        return importlib.import_module("feast")
    finally:
        typeguard.typechecked = checked


def main() -> None:
    import_feast()
    from feast.cli.cli import cli

    sys.argv[0] = "feast"
    cli()


if __name__ == "__main__":
    main()
