"""The ``opscope token`` commands: create, list and revoke the server's API tokens.

Tokens live in ``<data_dir>/tokens.json`` as SHA-256 hashes (see
:mod:`opscope.server.tokens`); ``create`` prints the token once. A running server picks up a
change of the file without a restart. Registered on :data:`opscope.cli.app` by
:func:`register`.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, cast

import typer
from rich.table import Table

from opscope.cli import ConfigOption, JsonOption, _fail, err, out
from opscope.errors import ConfigError, StoreError

if TYPE_CHECKING:
    from opscope.server.tokens import Scope, TokenFile

token_app = typer.Typer(help="API tokens of the server (read, write, admin).", no_args_is_help=True)
DataDirOption = Annotated[
    Path | None,
    typer.Option("--data-dir", help="Store directory (default: data_dir of the config)."),
]


def _tokens(config: Path, data_dir: Path | None) -> TokenFile:
    """The token file of ``--data-dir``, else of the configuration's ``data_dir`` (only that
    field is read: the rest of the file's variables need not be set)."""
    from opscope.config import load_data_dir
    from opscope.server.tokens import TokenFile

    if data_dir is not None:
        return TokenFile(data_dir)
    try:
        return TokenFile(load_data_dir(config))
    except ConfigError as exc:
        for line in str(exc).splitlines():
            err.print(f"[bold red]error:[/] {line}", highlight=False)
        raise typer.Exit(2) from None


@token_app.command("create")
def create(
    name: Annotated[str, typer.Option("--name", help="What the token is for, e.g. ci-push.")],
    scope: Annotated[
        str, typer.Option("--scope", help="read (queries, dashboard), write (+ push), admin.")
    ] = "read",
    config: ConfigOption = Path("opscope.yaml"),
    data_dir: DataDirOption = None,
    as_json: JsonOption = False,
) -> None:
    """Create an API token; it is printed once, only its hash is stored."""
    tokens = _tokens(config, data_dir)
    try:
        token = tokens.create(name, cast("Scope", scope))  # the scope is checked by create
    except ConfigError as exc:
        raise _fail(str(exc), 2) from None
    except StoreError as exc:
        raise _fail(str(exc), 1) from None
    if as_json:
        out.print_json(json.dumps({"name": name, "scope": scope, "token": token}))
        return
    sys.stdout.write(token + "\n")
    err.print(
        f"token {name} ({scope}) created; it is not shown again. Send it as "
        '"Authorization: Bearer TOKEN" (OPSCOPE_TOKEN for the CLI).',
        highlight=False,
    )


@token_app.command("list")
def list_tokens(
    config: ConfigOption = Path("opscope.yaml"),
    data_dir: DataDirOption = None,
    as_json: JsonOption = False,
) -> None:
    """List tokens: name, scope, creation time (never the tokens themselves)."""
    try:
        records = _tokens(config, data_dir).records()
    except StoreError as exc:
        raise _fail(str(exc), 1) from None
    rows = [
        (r.name, r.scope, datetime.fromtimestamp(r.created, UTC).isoformat(timespec="seconds"))
        for r in records
    ]
    if as_json:
        out.print_json(json.dumps([{"name": n, "scope": s, "created": c} for n, s, c in rows]))
        return
    table = Table("name", "scope", "created")
    for row in rows:
        table.add_row(*row)
    out.print(table)


@token_app.command("revoke")
def revoke(
    name: Annotated[str, typer.Argument(help="Name of the token.")],
    config: ConfigOption = Path("opscope.yaml"),
    data_dir: DataDirOption = None,
) -> None:
    """Delete a token; a running server refuses it from its next request."""
    try:
        found = _tokens(config, data_dir).revoke(name)
    except StoreError as exc:
        raise _fail(str(exc), 1) from None
    if not found:
        raise _fail(f"no token named {name}", 2)
    out.print(f"token {name} revoked", highlight=False)


def register(app: typer.Typer) -> None:
    """Add ``opscope token`` to ``app``."""
    app.add_typer(token_app, name="token")
