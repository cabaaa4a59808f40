"""`pantry customers forget ID`: the erasure of pantry.erasure, run on the host (recorded as actor `cli:<user>`)."""

from __future__ import annotations

import click

from pantry.settings import get_settings


@click.group()
def customers() -> None:
    """Customers' personal data (erasure)."""


@customers.command("forget")
@click.argument("customer_id", type=click.IntRange(min=0))
def customers_forget(customer_id: int) -> None:
    """Erase CUSTOMER_ID from the online store, feature log, decision log, dead letters, event stream, data set and
    model artifacts; record it in the audit log. Idempotent; safe while the service and the live flow run."""
    import getpass

    from pantry import erasure

    try:
        removed = erasure.forget(get_settings(), customer_id, f"cli:{getpass.getuser()}")
    except Exception as exc:  # Redis down, no registry, a view it cannot handle: a message, not a traceback
        raise click.ClickException(f"erasure of customer {customer_id} not completed (run it again): {exc}") from exc
    click.echo(f"customer {customer_id} forgotten: " + ", ".join(f"{k} {v}" for k, v in removed.items()))
