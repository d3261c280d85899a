"""The deploy commands of the ``opscope`` CLI: deploy, rollback, history, status, diff.

They are registered on :data:`opscope.cli.app` by :func:`register`; each one parses, calls the
engine (:mod:`opscope.deploy`), renders its progress with Rich and exits with the engine's code:

0 success; 1 failed and rolled back (or refused before anything changed); 2 usage or
configuration error; 3 failed and the rollback failed, is not verified, or was not done.
``opscope diff`` exits 0 when nothing would change, 2 when something would, 1 on errors.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from opscope.cli import ConfigOption, JsonOption, _fail, _load, err, out
from opscope.config import LoadedConfig
from opscope.durations import parse_duration
from opscope.errors import ConfigError, DeployError

T = TypeVar("T")

EnvOption = Annotated[str, typer.Option("--env", "-e", help="Environment (a key of environments).")]
ServiceArgument = Annotated[
    str | None, typer.Argument(metavar="SERVICE", help="Service (a key of services).")
]
AllOption = Annotated[bool, typer.Option("--all", help="Every service, in depends_on order.")]
TimeoutOption = Annotated[
    str | None,
    typer.Option(
        "--timeout",
        help="Deadline per service, e.g. 5m (default: deploy.timeout).",
        show_default=False,
    ),
]
ForceUnlockOption = Annotated[
    bool,
    typer.Option(
        "--force-unlock", help="Take the release's deploy lock even if another deploy holds it."
    ),
]

_OUTCOME_STYLE = {
    "deployed": "green",
    "unchanged": "green",
    "rolled-back": "yellow",
    "refused": "yellow",
    "rollback-unhealthy": "bold red",
    "failed": "bold red",
    "paused": "bold red",
}


def _seconds(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        return parse_duration(text).total_seconds()
    except ValueError:
        raise _fail(f'--timeout: expected a duration like 5m, got "{text}"', 2) from None


def _run(coro: Awaitable[T]) -> T:
    """Run the engine; configuration problems exit 2, failures of the machinery exit 3."""
    try:
        return asyncio.run(coro)  # type: ignore[arg-type]
    except ConfigError as exc:
        raise _fail(str(exc), 2) from None
    except DeployError as exc:
        raise _fail(str(exc), 3) from None


def _specs(loaded: LoadedConfig, env: str, service: str | None, all_services: bool) -> list[Any]:
    from opscope.deploy.spec import environment_config, service_spec, stack_specs

    if (service is None) != all_services:
        raise _fail("name one SERVICE or pass --all, not both", 2)
    try:
        environment_config(loaded.config, env)
        if all_services:
            specs = stack_specs(loaded.config, env, loaded.path.parent)
        else:
            assert service is not None
            specs = [service_spec(loaded.config, env, service, loaded.path.parent)]
    except ConfigError as exc:
        raise _fail(str(exc), 2) from None
    if not specs:
        raise _fail("no services to deploy (add a services section)", 2)
    return specs


def _validate(loaded: LoadedConfig, env: str, specs: list[Any]) -> None:
    """Strict schema validation of the manifests before anything reaches a cluster."""
    from opscope.deploy.manifests import render_manifests
    from opscope.deploy.validate import validate_manifests

    environment = loaded.config.environments[env]
    if environment.backend != "kubernetes":
        return
    try:
        objects = [o for s in specs for o in render_manifests(s, loaded.config.project)]
        problems = validate_manifests(objects, environment.kubernetes.version)
    except ConfigError as exc:
        raise _fail(str(exc), 2) from None
    errors = [p for p in problems if p.severity == "error"]
    for problem in errors:
        err.print(f"[bold red]error:[/] {escape(str(problem))}", highlight=False)
    if errors:
        raise typer.Exit(2)


def _print_table(table: Table) -> None:
    """Print a table; when stdout is not a terminal, wide enough that no column is dropped."""
    if out.is_terminal:
        out.print(table)
    else:
        Console(width=200, no_color=True).print(table)


def _column(table: Table, name: str) -> None:
    """Identifiers never wrap (they are copied into other commands); free text folds."""
    if name in ("", "message", "description", "detail"):
        table.add_column(name, overflow="fold", min_width=20)
    else:
        table.add_column(name, no_wrap=True)


@dataclass
class _Row:
    phase: str = "queued"
    message: str = ""
    elapsed: float = 0.0
    replicas: str = ""


class ProgressView:
    """Live progress of deploys: a Rich table on a terminal, one line per change otherwise."""

    def __init__(self, services: list[str], *, quiet: bool) -> None:
        self.rows = {name: _Row() for name in services}
        self.quiet = quiet
        self.live: Live | None = None
        self.started = time.monotonic()

    def __enter__(self) -> ProgressView:
        if not self.quiet and err.is_terminal:
            self.live = Live(self._table(), console=err, refresh_per_second=8, transient=True)
            self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.__exit__(None, None, None)

    def _table(self) -> Table:
        table = Table(box=None, pad_edge=False, show_header=True, header_style="bold")
        for column in ("service", "phase", "replicas", "elapsed", ""):
            _column(table, column)
        for name, row in self.rows.items():
            table.add_row(
                name, row.phase, row.replicas, f"{row.elapsed:5.1f}s", escape(row.message)
            )
        return table

    def __call__(self, event: Any) -> None:
        if event.phase == "warning":
            return  # printed once, after the summary
        row = self.rows.setdefault(event.service, _Row())
        changed = (row.phase, row.message) != (event.phase, event.message)
        row.phase, row.message, row.elapsed = event.phase, event.message, event.elapsed
        status = event.status
        if status is not None and status.desired is not None:
            row.replicas = f"{status.updated}/{status.ready}/{status.available} of {status.desired}"
        if self.live is not None:
            self.live.update(self._table())
        elif changed and not self.quiet:
            err.print(
                f"[dim]{event.elapsed:6.1f}s[/] {event.service:<24} {event.phase:<10} "
                f"{escape(event.message)}",
                highlight=False,
            )


def _result_table(results: list[Any], title: str | None = None) -> Table:
    table = Table(title=title, box=None, pad_edge=False, header_style="bold")
    for column in ("service", "outcome", "revision", "version", "time", "message"):
        _column(table, column)
    for r in results:
        style = _OUTCOME_STYLE.get(r.outcome, "")
        revision = "" if r.revision is None else str(r.revision)
        if r.rollback_revision is not None:
            revision += f" → {r.rollback_revision}"
        table.add_row(
            r.service,
            Text(r.outcome, style=style),
            revision,
            r.version,
            f"{r.duration:.1f}s",
            escape(r.message),
        )
    return table


def _print_details(results: list[Any]) -> None:
    for warning in dict.fromkeys(w for r in results for w in r.warnings):
        err.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False)
    for r in results:
        if r.detail:
            err.print(f"[bold]{r.service}[/]:", highlight=False)
            for line in r.detail.splitlines():
                err.print(f"  {escape(line)}", highlight=False)


async def _with_deployer(
    loaded: LoadedConfig, env: str, progress: Callable[[Any], None], work: Callable[[Any], Any]
) -> Any:
    from opscope.deploy.rollout import Deployer
    from opscope.deploy.stack import open_backend

    async with open_backend(loaded.config, env, loaded.path.parent) as backend:
        deployer = Deployer(backend, loaded.config.deploy, progress=progress)
        return await work(deployer)


def deploy(
    env: EnvOption,
    service: ServiceArgument = None,
    all_services: AllOption = False,
    config: ConfigOption = Path("opscope.yaml"),
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what would change; change nothing.")
    ] = False,
    timeout: TimeoutOption = None,
    no_rollback: Annotated[
        bool, typer.Option("--no-rollback", help="Leave a failed deploy in place.")
    ] = False,
    force_unlock: ForceUnlockOption = False,
    as_json: JsonOption = False,
) -> None:
    """Deploy services to an environment: apply, wait for the rollout, check health, record a
    revision; roll back automatically on failure.

    Exit codes: 0 deployed; 1 failed and rolled back (or refused, nothing changed); 2 usage or
    configuration error; 3 failed and not rolled back, rollback unhealthy, or paused.
    """
    from opscope.deploy.stack import deploy_stack

    loaded = _load(config)
    specs = _specs(loaded, env, service, all_services)
    _validate(loaded, env, specs)
    seconds = _seconds(timeout)
    if dry_run:
        _diff(loaded, env, specs, as_json=as_json)
        return
    view = ProgressView([s.service for s in specs], quiet=as_json)

    async def work(deployer: Any) -> Any:
        if all_services:
            return await deploy_stack(
                deployer,
                specs,
                parallelism=loaded.config.deploy.parallelism,
                rollback=not no_rollback,
                force_unlock=force_unlock,
                timeout=seconds,
            )
        return await deployer.deploy(
            specs[0], rollback=not no_rollback, force_unlock=force_unlock, timeout=seconds
        )

    with view:
        result = _run(_with_deployer(loaded, env, view, work))
    if as_json:
        out.print_json(json.dumps(result.to_json()))
        raise typer.Exit(result.exit_code)
    if all_services:
        _print_table(_result_table(result.results, title=f"deploy --all --env {env}"))
        if result.skipped:
            out.print(f"not attempted: {', '.join(result.skipped)}", highlight=False)
        if result.rollbacks:
            _print_table(_result_table(result.rollbacks, title="rolled back (changed in this run)"))
        _print_details(result.results + result.rollbacks)
        out.print(
            f"{result.succeeded} succeeded, {result.failed} failed in {result.duration:.1f}s",
            highlight=False,
        )
    else:
        _print_table(_result_table([result]))
        _print_details([result])
    raise typer.Exit(result.exit_code)


def rollback(
    service: Annotated[str, typer.Argument(metavar="SERVICE", help="Service (a key of services).")],
    env: EnvOption,
    to: Annotated[
        int | None,
        typer.Option("--to", min=1, help="Revision to restore (default: the previous one)."),
    ] = None,
    config: ConfigOption = Path("opscope.yaml"),
    timeout: TimeoutOption = None,
    force_unlock: ForceUnlockOption = False,
    as_json: JsonOption = False,
) -> None:
    """Restore an earlier revision's manifests as a new revision (like helm rollback).

    Exit codes: 0 rolled back and healthy; 1 refused; 2 usage or configuration error; 3 the
    restored revision did not become healthy.
    """
    loaded = _load(config)
    spec = _specs(loaded, env, service, False)[0]
    seconds = _seconds(timeout)
    view = ProgressView([spec.service], quiet=as_json)
    with view:
        result = _run(
            _with_deployer(
                loaded,
                env,
                view,
                lambda d: d.rollback(spec, to=to, force_unlock=force_unlock, timeout=seconds),
            )
        )
    if as_json:
        out.print_json(json.dumps(result.to_json()))
    else:
        _print_table(_result_table([result]))
        _print_details([result])
    raise typer.Exit(result.exit_code)


def history(
    service: Annotated[str, typer.Argument(metavar="SERVICE", help="Service (a key of services).")],
    env: EnvOption,
    config: ConfigOption = Path("opscope.yaml"),
    as_json: JsonOption = False,
) -> None:
    """List the kept revisions of a service in an environment (like helm history)."""
    loaded = _load(config)
    spec = _specs(loaded, env, service, False)[0]
    revisions = _run(_with_deployer(loaded, env, lambda e: None, lambda d: d.history(spec)))
    if as_json:
        out.print_json(
            json.dumps(
                [{k: v for k, v in r.to_json().items() if k != "payload"} for r in revisions]
            )
        )
        return
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("revision", "updated", "status", "version", "image", "description"):
        _column(table, column)
    for r in revisions:
        updated = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r.updated_at))
        table.add_row(
            str(r.revision), updated, r.status, r.version, r.image or "", escape(r.description)
        )
    if not revisions:
        out.print(f"no revisions of {spec.release} in {env}", highlight=False)
        return
    _print_table(table)


def status(
    env: EnvOption,
    config: ConfigOption = Path("opscope.yaml"),
    as_json: JsonOption = False,
) -> None:
    """Show every service of an environment: current revision, version and live state."""
    from opscope.deploy.stack import environment_status

    loaded = _load(config)
    specs = _specs(loaded, env, None, True)
    rows = _run(_with_deployer(loaded, env, lambda e: None, lambda d: environment_status(d, specs)))
    if as_json:
        out.print_json(json.dumps({"environment": env, "services": rows}))
        return
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("service", "revision", "status", "version", "live", "detail"):
        _column(table, column)
    for row in rows:
        table.add_row(
            row["service"],
            "" if row["revision"] is None else str(row["revision"]),
            row["status"] or "not deployed",
            row["version"] or "",
            row["live"],
            escape(row["detail"]),
        )
    _print_table(table)


def _diff(loaded: LoadedConfig, env: str, specs: list[Any], *, as_json: bool) -> bool:
    """Print what deploying ``specs`` would change; ``True`` when something would."""
    from opscope.deploy.stack import plan_changes

    changes = _run(_with_deployer(loaded, env, lambda e: None, lambda d: plan_changes(d, specs)))
    changed = [c for c in changes if c["change"] != "none"]
    if as_json:
        out.print_json(json.dumps({"changes": changes}))
        return bool(changed)
    for change in changed:
        if change.get("diff"):
            text = change["diff"]
            sys.stdout.write(text if text.endswith("\n") else text + "\n")
        else:
            out.print(f"{change['object']}: {change['change']}", highlight=False)
    if not changed:
        err.print("no changes", highlight=False)
    return bool(changed)


def diff(
    env: EnvOption,
    service: ServiceArgument = None,
    all_services: AllOption = False,
    config: ConfigOption = Path("opscope.yaml"),
    as_json: JsonOption = False,
) -> None:
    """Show what a deploy would change: the live objects against a server-side dry-run apply,
    one unified diff per object (like kubectl diff).

    Exit codes: 0 nothing would change; 2 something would change; 1 error.
    """
    try:
        loaded = _load(config)
        specs = _specs(loaded, env, service, all_services)
        _validate(loaded, env, specs)
        changed = _diff(loaded, env, specs, as_json=as_json)
    except typer.Exit as exc:
        raise typer.Exit(1 if exc.exit_code else 0) from None
    raise typer.Exit(2 if changed else 0)


def stop(
    env: EnvOption,
    service: ServiceArgument = None,
    all_services: AllOption = False,
    config: ConfigOption = Path("opscope.yaml"),
) -> None:
    """Stop the processes of services of a local environment (their revisions are kept; the
    next deploy starts them again)."""
    from opscope.deploy.local import LocalProcesses

    loaded = _load(config)
    specs = _specs(loaded, env, service, all_services)
    if loaded.config.environments[env].backend != "local":
        raise _fail(f'environment "{env}" runs on Kubernetes: scale it there (kubectl scale)', 2)
    processes = LocalProcesses(
        Path(loaded.config.data_dir) / "local" / env,
        stop_timeout=loaded.config.deploy.stop_timeout.total_seconds(),
    )
    for spec in specs:
        _run(processes.stop(spec.service))
        out.print(f"stopped {spec.service}", highlight=False)


def register(app: typer.Typer) -> None:
    """Add the deploy commands to ``app``."""
    for command in (deploy, rollback, history, status, diff, stop):
        app.command()(command)
