"""`ca-migrate ca ...` and `ca-migrate document ...`: the root catalog and job documents."""

from __future__ import annotations

import typer

ca_app = typer.Typer(help="The catalog of known root CAs.", no_args_is_help=True)
document_app = typer.Typer(help="Build and validate migration job documents.", no_args_is_help=True)
