"""The ``opscope`` command line: parse, call one core entry point, print, exit.

Exit codes: 0 success; 1 failure at run time (store, port, query); 2 usage or configuration error.
"""

from __future__ import annotations

import asyncio
import enum
import json
import logging
import math
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

from opscope import __version__
from opscope.config import LoadedConfig, json_schema, load_config
from opscope.errors import ConfigError, OpscopeError, QueryError, StoreError

app = typer.Typer(
    name="opscope",
    help="Deploy services, watch them live and report on the business.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
)
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

ConfigOption = Annotated[
    Path,
    typer.Option(
        "--config", "-c", envvar="OPSCOPE_CONFIG", help="Configuration file.", show_default=True
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


class LogLevel(enum.StrEnum):
    """Log levels of ``opscope serve``."""

    debug = "debug"
    info = "info"
    warning = "warning"
    error = "error"


def _fail(message: str, code: int) -> typer.Exit:
    from rich.markup import escape

    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, markup=True)
    return typer.Exit(code)


def _load(path: Path) -> LoadedConfig:
    from rich.markup import escape

    try:
        loaded = load_config(path)
    except ConfigError as exc:
        for line in str(exc).splitlines():
            err.print(f"[bold red]error:[/] {escape(line)}", highlight=False)
        if not path.exists():
            err.print(
                "hint: pass the configuration with -c FILE, e.g. -c examples/blatam/opscope.yaml",
                highlight=False,
            )
        raise typer.Exit(2) from None
    for warning in loaded.warnings:
        err.print(f"[yellow]warning:[/] {warning}", highlight=False)
    return loaded


def _setup_logging(level: str) -> None:
    # Rich output on a terminal; one plain line per record when logs go to a file or journal.
    handler: logging.Handler
    if err.is_terminal:
        handler = RichHandler(console=err, show_path=False, rich_tracebacks=False)
        handler.setFormatter(logging.Formatter("%(message)s", datefmt="[%X]"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    # Python warnings (a database driver's, say) become log records, so they pass through the
    # same handlers — and the secret-masking filter ``serve`` puts on them — as every line.
    logging.captureWarnings(True)
    # Every scrape and probe is an HTTP request: httpx's per-request INFO lines would drown the log.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)


def _version(value: bool) -> None:
    if value:
        out.print(f"opscope {__version__}")
        raise typer.Exit(0)


@app.callback()
def main_options(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
) -> None:
    """Deploy services, watch them live and report on the business."""


@app.command()
def serve(
    config: ConfigOption = Path("opscope.yaml"),
    host: Annotated[
        str | None, typer.Option(help="Address to bind (default: server.host).")
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(min=0, max=65535, help="Port (default: server.port; 0 picks a free one)."),
    ] = None,
    data_dir: Annotated[
        Path | None, typer.Option("--data-dir", help="Store directory (default: data_dir).")
    ] = None,
    log_level: Annotated[LogLevel, typer.Option(help="How much to log.")] = LogLevel.info,
) -> None:
    """Collect metrics and serve the API, the live WebSocket and the dashboard."""
    from opscope.server.running import OpscopeServer

    _setup_logging(log_level.value)
    loaded = _load(config)
    server = OpscopeServer(loaded, host=host, port=port, data_dir=data_dir)
    try:
        asyncio.run(server.run())
    except ConfigError as exc:
        raise _fail(str(exc), 2) from None
    except StoreError as exc:
        raise _fail(str(exc), 1) from None
    except KeyboardInterrupt:
        pass


@app.command()
def validate(config: ConfigOption = Path("opscope.yaml"), as_json: JsonOption = False) -> None:
    """Check a configuration file and its rules; print each problem with file, line and column."""
    from opscope.monitor.rules import compile_groups

    try:
        loaded = load_config(config)
        compile_groups(loaded.rule_groups)
    except ConfigError as exc:
        problems = getattr(exc, "problems", [])
        if as_json:
            out.print_json(
                json.dumps(
                    {
                        "valid": False,
                        "problems": [
                            {
                                "file": p.file,
                                "line": p.line,
                                "column": p.column,
                                "path": p.path,
                                "message": p.message,
                            }
                            for p in problems
                        ],
                    }
                )
            )
        else:
            for line in str(exc).splitlines():
                err.print(f"[bold red]error:[/] {line}", highlight=False)
        raise typer.Exit(2) from None
    monitor = loaded.config.monitor
    targets = sum(len(j.targets) for j in monitor.scrape)
    probes = sum(len(p.targets) for p in monitor.probes)
    rules = sum(len(g.rules) for g in loaded.rule_groups)
    if as_json:
        out.print_json(
            json.dumps(
                {
                    "valid": True,
                    "file": str(config),
                    "scrape_targets": targets,
                    "probe_targets": probes,
                    "rules": rules,
                    "warnings": [str(w) for w in loaded.warnings],
                }
            )
        )
        return
    for warning in loaded.warnings:
        err.print(f"[yellow]warning:[/] {warning}", highlight=False)
    out.print(
        f"{config}: valid ({targets} scrape target(s), {probes} probe target(s), {rules} rule(s), "
        f"system metrics {'on' if monitor.system.enabled else 'off'})",
        highlight=False,
    )


@app.command()
def schema(
    output: Annotated[Path | None, typer.Option("--out", "-o", help="Write to this file.")] = None,
    markdown: Annotated[
        bool, typer.Option("--markdown", help="Print the Markdown reference instead.")
    ] = False,
) -> None:
    """Print the JSON Schema of opscope.yaml (for editor completion), or its reference."""
    from opscope.config.reference import markdown_reference

    text = markdown_reference().rstrip("\n") if markdown else json.dumps(json_schema(), indent=2)
    if output is None:
        sys.stdout.write(text + "\n")
        return
    try:
        output.write_text(text + "\n", encoding="utf-8")
    except OSError as exc:
        raise _fail(f"cannot write {output}: {exc.strerror}", 1) from None


@app.command()
def query(
    selector: Annotated[str, typer.Argument(help='Series selector, e.g. up{job="node"}')],
    config: ConfigOption = Path("opscope.yaml"),
    data_dir: Annotated[
        Path | None,
        typer.Option("--data-dir", help="Store directory (default: data_dir of the config)."),
    ] = None,
    at: Annotated[
        float | None, typer.Option("--time", help="Evaluation time, Unix seconds (default: now).")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Print the current value of every series a selector matches (reads the store directly)."""
    from opscope.server.params import check_time, format_value
    from opscope.store import Store, instant_query, parse_selector

    if data_dir is None:
        loaded = _load(config)
        data_dir = loaded.config.data_dir
        lookback_ms = int(loaded.config.monitor.lookback_delta.total_seconds() * 1000)
    else:
        lookback_ms = 300_000
    try:
        t = time.time() if at is None else check_time(at, name="--time", text=at)
        parsed = parse_selector(selector)
        with Store.open(data_dir, readonly=True) as store:
            samples = instant_query(store, parsed, int(t * 1000), lookback_ms=lookback_ms)
    except QueryError as exc:
        raise _fail(str(exc), 2) from None
    except OpscopeError as exc:
        raise _fail(str(exc), 1) from None
    if as_json:
        out.print_json(
            json.dumps(
                [
                    {
                        "metric": s.ref.metric(),
                        "value": format_value(s.value),
                        "timestamp": s.sample_timestamp_ms / 1000.0,
                    }
                    for s in samples
                ]
            )
        )
        return
    table = Table("series", "value", "sample age")
    for s in samples:
        labels = ", ".join(f'{k}="{v}"' for k, v in s.ref.labels)
        age = t - s.sample_timestamp_ms / 1000.0
        value = format_value(s.value) if math.isfinite(s.value) else str(s.value)
        table.add_row(f"{s.ref.name}{{{labels}}}", value, f"{age:.1f}s")
    out.print(table)
    if not samples:
        err.print("no series matched", highlight=False)


rules_app = typer.Typer(help="Alerting and recording rules.", no_args_is_help=True)
app.add_typer(rules_app, name="rules")


@rules_app.command("test")
def rules_test(
    files: Annotated[list[Path], typer.Argument(help="promtool test files.")],
) -> None:
    """Run rule unit tests in Prometheus's promtool format; exit code 1 on any failure."""
    from opscope.monitor.ruletest import run_test_file

    # Rule evaluation errors are in the report; the engine's log lines would repeat them.
    logging.getLogger("opscope.monitor.rules").setLevel(logging.ERROR)
    failed = False
    for path in files:
        try:
            outcome = run_test_file(path)
        except ConfigError as exc:
            for line in str(exc).splitlines():
                err.print(f"[bold red]error:[/] {line}", highlight=False)
            raise typer.Exit(2) from None
        out.print(outcome.report(), highlight=False, markup=False, end="")
        failed = failed or not outcome.passed
    raise typer.Exit(1 if failed else 0)


export_app = typer.Typer(help="Export for Prometheus and Alertmanager.", no_args_is_help=True)
app.add_typer(export_app, name="export")


@export_app.command("prometheus-rules")
def export_prometheus_rules(
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Directory to write.")] = Path("."),
    config: ConfigOption = Path("opscope.yaml"),
) -> None:
    """Write every rule group as Prometheus rule files (promtool check rules accepts them)."""
    from opscope.monitor.export import prometheus_rules
    from opscope.monitor.rules import compile_groups

    loaded = _load(config)
    try:
        compile_groups(loaded.rule_groups)
    except ConfigError as exc:
        raise _fail(str(exc), 2) from None
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        for name, text in prometheus_rules(loaded.rule_groups).items():
            (out_dir / name).write_text(text, encoding="utf-8")
            out.print(f"wrote {out_dir / name}", highlight=False)
    except OSError as exc:
        raise _fail(f"cannot write {out_dir}: {exc.strerror}", 1) from None


@export_app.command("alertmanager")
def export_alertmanager(
    output: Annotated[
        Path | None, typer.Option("--out", "-o", help="File to write (default: stdout).")
    ] = None,
    config: ConfigOption = Path("opscope.yaml"),
) -> None:
    """Write notify as an Alertmanager configuration (amtool check-config accepts it)."""
    from opscope.monitor.export import alertmanager_config

    loaded = _load(config)
    text, notes = alertmanager_config(loaded.config.notify)
    for note in notes:
        err.print(f"[yellow]note:[/] {note}", highlight=False)
    if loaded.secrets:
        err.print(
            "[yellow]note:[/] the output contains values from environment variables "
            "(secrets): keep it private",
            highlight=False,
        )
    if output is None:
        sys.stdout.write(text)
        return
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise _fail(f"cannot write {output}: {exc.strerror}", 1) from None


silence_app = typer.Typer(help="Silences of alert notifications.", no_args_is_help=True)
app.add_typer(silence_app, name="silence")
UrlOption = Annotated[
    str | None,
    typer.Option(
        "--url",
        envvar="OPSCOPE_URL",
        help="The running server (default: server.host/port of the config).",
    ),
]


def _server_url(config: Path, url: str | None) -> str:
    if url:
        return url.rstrip("/")
    loaded = _load(config)
    host, port = loaded.config.server.host, loaded.config.server.port
    return f"http://{host}:{port}"


def _api(method: str, url: str, **kwargs: Any) -> Any:
    import os

    import httpx

    token = os.environ.get("OPSCOPE_TOKEN")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        response = httpx.request(method, url, timeout=10, headers=headers, **kwargs)
    except httpx.HTTPError as exc:
        raise _fail(f"cannot reach opscope at {url}: {exc}", 1) from None
    body = (
        response.json()
        if response.headers.get("content-type", "").startswith("application/json")
        else {}
    )
    if response.status_code >= 400:
        raise _fail(
            body.get("error", f"HTTP {response.status_code}"),
            2 if response.status_code < 500 else 1,
        )
    return body.get("data")


@silence_app.command("add")
def silence_add(
    matchers: Annotated[list[str], typer.Argument(help='Matchers, e.g. alertname="HighCPU"')],
    duration: Annotated[str, typer.Option(help="How long, e.g. 2h.")] = "1h",
    author: Annotated[str, typer.Option(help="Who silences.", envvar="USER")] = "opscope",
    comment: Annotated[str, typer.Option(help="Why.")] = "",
    config: ConfigOption = Path("opscope.yaml"),
    url: UrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """Silence the alerts matching every matcher for a while."""
    from opscope.durations import parse_duration

    try:
        seconds = parse_duration(duration).total_seconds()
    except ValueError as exc:
        raise _fail(f"--duration: {exc}", 2) from None
    base = _server_url(config, url)
    data = _api(
        "POST",
        f"{base}/api/v1/silences",
        json={
            "matchers": matchers,
            "endsAt": str(time.time() + seconds),
            "createdBy": author,
            "comment": comment,
        },
    )
    if as_json:
        out.print_json(json.dumps(data))
    else:
        out.print(f"silence {data['silenceID']} until {data['endsAt']}", highlight=False)


@silence_app.command("list")
def silence_list(
    config: ConfigOption = Path("opscope.yaml"),
    url: UrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """List silences (active, pending and expired); piped, one per line, tab-separated."""
    data = _api("GET", f"{_server_url(config, url)}/api/v1/silences")
    if as_json:
        out.print_json(json.dumps(data))
        return
    rows = [
        (
            s["id"],
            s["status"]["state"],
            ", ".join(s["matchers"]),
            s["endsAt"],
            s["createdBy"],
            " ".join(s["comment"].split()),
        )
        for s in data
    ]
    if not out.is_terminal:  # for scripts: whole ids, never cut to a terminal's width
        for row in rows:
            sys.stdout.write("\t".join(row) + "\n")
        return
    table = Table("id", "state", "matchers", "ends", "by", "comment")
    table.columns[0].no_wrap = True
    table.columns[0].min_width = max((len(row[0]) for row in rows), default=2)
    for row in rows:
        table.add_row(*row)
    out.print(table)


@silence_app.command("expire")
def silence_expire(
    silence_ids: Annotated[
        list[str], typer.Argument(help="Silence ids, or the start of one (unique).")
    ],
    config: ConfigOption = Path("opscope.yaml"),
    url: UrlOption = None,
) -> None:
    """End silences now."""
    base = _server_url(config, url)
    known = [s["id"] for s in _api("GET", f"{base}/api/v1/silences")]
    for given in silence_ids:
        found = [i for i in known if i == given] or [i for i in known if i.startswith(given)]
        if not found:
            raise _fail(f"no silence {given}", 2)
        if len(found) > 1:
            raise _fail(f'"{given}" starts {len(found)} silence ids; give more of it', 2)
        data = _api("DELETE", f"{base}/api/v1/silences/{found[0]}")
        out.print(f"silence {data['id']} expired", highlight=False)


@app.command()
def render(
    env: Annotated[str, typer.Option("--env", "-e", help="Environment (a key of environments).")],
    service: Annotated[
        str | None,
        typer.Argument(metavar="SERVICE", help="Service to render (a key of services)."),
    ] = None,
    all_services: Annotated[bool, typer.Option("--all", help="Render every service.")] = False,
    config: ConfigOption = Path("opscope.yaml"),
    out_dir: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help="Write DIR/<service>.yaml per service and DIR/prometheus-scrape.yml.",
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Print the Kubernetes manifests of services, validated against the cluster's version."""
    import yaml
    from rich.markup import escape

    from opscope.deploy.manifests import (
        manifests_yaml,
        prometheus_scrape_config,
        render_manifests,
    )
    from opscope.deploy.spec import environment_config, service_spec, stack_specs
    from opscope.deploy.validate import validate_manifests

    if (service is None) != all_services:
        raise _fail("name one SERVICE or pass --all, not both", 2)
    loaded = _load(config)
    project = loaded.config.project
    try:
        environment = environment_config(loaded.config, env)
        if environment.backend != "kubernetes":
            others = [
                name for name, e in loaded.config.environments.items() if e.backend == "kubernetes"
            ]
            raise _fail(
                f'environment "{env}" uses the {environment.backend} backend: it has no '
                "Kubernetes manifests (kubernetes environments: "
                f"{', '.join(others) or 'none'})",
                2,
            )
        if all_services:
            specs = stack_specs(loaded.config, env, loaded.path.parent)
        else:
            assert service is not None
            specs = [service_spec(loaded.config, env, service, loaded.path.parent)]
        if not specs:
            raise _fail("no services to render (add a services section)", 2)
        rendered = [(spec, render_manifests(spec, project)) for spec in specs]
        objects = [o for _, manifests in rendered for o in manifests]
        found = validate_manifests(objects, environment.kubernetes.version)
    except ConfigError as exc:
        raise _fail(str(exc), 2) from None
    errors = [p for p in found if p.severity == "error"]
    notes = [str(p) for p in found if p.severity == "note"]
    for problem in errors:
        err.print(f"[bold red]error:[/] {escape(str(problem))}", highlight=False)
    if errors:
        raise typer.Exit(2)
    for note in notes:
        err.print(f"[yellow]note:[/] {escape(note)}", highlight=False)
    text = manifests_yaml(objects)
    if any(secret in text for secret in loaded.secrets):
        err.print(
            "[yellow]note:[/] the output contains values from environment variables: keep it "
            "private, or pass credentials as secrets (secretKeyRef)",
            highlight=False,
        )
    written: list[str] = []
    if out_dir is not None:
        files = {f"{spec.name}.yaml": manifests_yaml(manifests) for spec, manifests in rendered}
        files["prometheus-scrape.yml"] = "# Generated by `opscope render`.\n" + yaml.safe_dump(
            prometheus_scrape_config(specs), sort_keys=False
        )
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
            for name, content in files.items():
                (out_dir / name).write_text(content, encoding="utf-8")
                written.append(str(out_dir / name))
        except OSError as exc:
            raise _fail(f"cannot write {out_dir}: {exc.strerror}", 1) from None
    if as_json:
        payload: dict[str, Any] = {"objects": objects, "notes": notes}
        if out_dir is not None:
            payload["written"] = written
        out.print_json(json.dumps(payload))
    elif out_dir is not None:
        for path in written:
            out.print(f"wrote {path}", highlight=False)
    else:
        sys.stdout.write(text)


from opscope.cli_deploy import register as _register_deploy_commands  # noqa: E402

_register_deploy_commands(app)

from opscope.cli_report import register as _register_report_command  # noqa: E402

_register_report_command(app)

from opscope.cli_tokens import register as _register_token_commands  # noqa: E402

_register_token_commands(app)


def main() -> None:
    """Console-script entry point."""
    app()
