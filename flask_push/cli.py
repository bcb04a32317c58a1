"""The ``flask push`` commands."""

from __future__ import annotations

import click
from flask.cli import AppGroup
from py_vapid import Vapid

from .credentials import vapid_public_key, vapid_raw_private_key

push_cli = AppGroup("push", help="flask-push: push notifications.")


@push_cli.command("vapid-keys")
@click.option(
    "--subject",
    default="mailto:you@example.com",
    show_default=True,
    help="Contact for the push services: a mailto: or https: URI.",
)
def vapid_keys(subject: str) -> None:
    """Make a VAPID key pair and print the config lines to paste."""
    vapid = Vapid()
    vapid.generate_keys()
    click.echo(
        "# Web Push (VAPID) keys made by `flask push vapid-keys`; keep the private key secret."
    )
    click.echo(f'PUSH_VAPID_PRIVATE_KEY = "{vapid_raw_private_key(vapid)}"')
    click.echo(f'PUSH_VAPID_PUBLIC_KEY = "{vapid_public_key(vapid)}"')
    click.echo(f'PUSH_VAPID_SUBJECT = "{subject}"')
