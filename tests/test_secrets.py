"""The configuration's secrets never leave the server: a real `opscope serve` with secrets in every
place they can be (SMTP password, webhook URL and secret, probe and database passwords, an API
token), failing deliveries and collections so that errors mention them, then every log line and
every API response is searched for each secret."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from opscope.config import parse_config
from opscope.errors import ConfigFileError
from opscope.monitor.collectors.sql import display_url
from opscope.redaction import Redactor, config_secrets, hide_url_password, hide_url_secrets
from opscope.server.tokens import TokenFile

from .conftest import ServeProcess, wait_until

SECRETS = {
    "SMTP_PASSWORD": "smtp-Pw-4f1d2c",
    "HOOK_TOKEN": "hookpath-9a8b7c",
    "HOOK_SECRET": "hmac-secret-77e1",
    "DB_PASSWORD": "db-Pw-31337x",
    "PROBE_PASSWORD": "probe-Pw-5150",
    "PROBE_KEY": "probe-key-8086",
}
CONFIG = """\
server: {auth: required}
monitor:
  interval: 1s
  evaluation_interval: 1s
  system: {enabled: false}
  sql:
    - name: crm_revenue
      url: "postgresql+psycopg://ops:${DB_PASSWORD}@127.0.0.1:1/crm"
      query: "SELECT 1 AS value"
  probes:
    - {job: web, targets: ["http://probe:${PROBE_PASSWORD}@127.0.0.1:1/health?apikey=${PROBE_KEY}"]}
  rules:
    - {alert: SomethingDown, expr: "up == 0", for: 0s, labels: {severity: critical}}
notify:
  group_wait: 0s
  channels:
    email: "mailto://ops:${SMTP_PASSWORD}@127.0.0.1:1?from=a@example.com&to=b@example.com&mode=insecure"
    hook: {webhook: "http://127.0.0.1:1/hook/${HOOK_TOKEN}", secret: "${HOOK_SECRET}"}
  channels_default: [email, hook]
"""


def test_secrets_appear_nowhere(
    serve_process: Callable[..., ServeProcess], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    data = tmp_path / "data"
    token = TokenFile(data).create("reader", "admin")
    serve = serve_process(CONFIG, data_dir=data)
    headers = {"Authorization": f"Bearer {token}"}
    responses: list[str] = []

    def get(path: str, **params: str) -> httpx.Response:
        response = httpx.get(f"{serve.url}{path}", params=params, headers=headers, timeout=10)
        responses.append(response.text)
        return response

    def deliveries_failed() -> bool:
        data = get("/api/v1/notifications").json()["data"]
        failed = {d["channel"] for d in data if d["lastError"]}
        return failed >= {"email", "hook"}

    wait_until(deliveries_failed, timeout=30, what="both channels to fail a delivery")
    targets = get("/api/v1/targets").json()["data"]["activeTargets"]
    errors = {t["scrapePool"]: t["lastError"] for t in targets}
    assert errors["sql"] and errors["web"]  # both failed, so their errors were written
    probes = {t["scrapeUrl"] for t in targets if t["kind"] == "probe"}
    assert probes == {"http://probe:***@127.0.0.1:1/health?apikey=***"}
    # The stored instance label is the masked URL: queries and label values show no secret.
    success = get("/api/v1/query", query="probe_success").json()["data"]["result"]
    assert [r["metric"]["instance"] for r in success] == [
        "http://probe:***@127.0.0.1:1/health?apikey=***"
    ]
    for path in (
        "/api/v1/alerts",
        "/api/v1/rules",
        "/api/v1/silences",
        "/metrics",
        "/api/v1/push",
        "/healthz",
        "/api/openapi.json",
        "/api/v1/labels",
    ):
        assert get(path).status_code == 200
    get("/api/v1/query", query='{__name__=~".+"}')
    get("/api/v1/series", **{"match[]": '{__name__=~".+"}'})
    get("/api/v1/label/instance/values")
    get("/api/v1/query", query="rate(")  # an error message too
    bad = httpx.put(f"{serve.url}/api/v1/push/j", content="x{", headers=headers, timeout=10)
    responses.append(bad.text)
    assert bad.status_code == 400
    serve.process.terminate()
    serve.process.wait(timeout=15)
    log = serve.output()
    assert "SomethingDown" in "".join(responses)  # the run did what it should
    leaks = [
        (name, where)
        for name, value in {**SECRETS, "token": token}.items()
        for where, text in [("log", log), *(("response", r) for r in responses)]
        if value in text
    ]
    assert leaks == []


def test_redactor_masks_every_secret_longest_first() -> None:
    redact = Redactor(["abcd", "abcdef", "p@ss/word", "x"])
    assert redact("abcdef abcd x") == "*** *** x"  # "x" is too short to be a secret
    assert redact("url pass=p%40ss%2Fword") == "url pass=***"
    assert redact("") == ""


def test_url_passwords_are_hidden() -> None:
    assert hide_url_password("http://u:pw@h:1/p?q=1") == "http://u:***@h:1/p?q=1"
    assert hide_url_password("http://h/p") == "http://h/p"


def test_credential_query_parameters_are_hidden() -> None:
    assert (
        hide_url_secrets("http://h/p?apikey=abc&page=2&access_token=t0k&password=pw&x=")
        == "http://h/p?apikey=***&page=2&access_token=***&password=***&x="
    )
    # libpq's password parameter and SQLite URI parameters of a database URL.
    assert display_url("postgresql://ops@db/crm?password=LiteralQueryPw99&sslmode=require") == (
        "postgresql://ops@db/crm?password=***&sslmode=require"
    )
    assert display_url("sqlite:///file:crm.db?user=x&password=LiteralQueryPw99&uri=true") == (
        "sqlite:///file:crm.db?user=x&password=***&uri=true"
    )


def test_only_secret_variables_are_secrets() -> None:
    environ = {
        "OPSCOPE_PORT": "18765",
        "DB_PW": "EnvSecret55",
        "API_TOKEN": "tok-123456",
        "SLACK_URL": "slack://TokenA/TokenB/TokenC",
        "CRM_HOST": "crm.internal",
    }
    loaded = parse_config(
        "server:\n  port: ${OPSCOPE_PORT}\n"
        "monitor:\n"
        "  probes:\n"
        '    - {job: web, targets: ["http://${CRM_HOST}:${OPSCOPE_PORT}/h?token=${API_TOKEN}"]}\n'
        "  sql:\n"
        '    - {name: q, url: "postgresql://u:${DB_PW}@${CRM_HOST}/db", query: "SELECT 1"}\n'
        "notify:\n"
        '  channels: {slack: "${SLACK_URL}"}\n',
        environ=environ,
    )
    # A port or a host name is not a secret: "serving on http://127.0.0.1:18765" stays readable.
    assert loaded.secrets == {"EnvSecret55", "tok-123456", "slack://TokenA/TokenB/TokenC"}
    redact = Redactor(config_secrets(loaded))
    assert redact("http://crm.internal:18765/h?token=tok-123456") == (
        "http://crm.internal:18765/h?token=***"
    )


@pytest.mark.parametrize(
    ("yaml_text", "secret"),
    [
        (
            'monitor:\n  sql:\n    - {name: q, url: "postgresql://u:${DB_PW}@host:badport/db", '
            'query: "SELECT 1 AS value"}\n',
            "EnvSecret55",
        ),
        ('monitor:\n  probes:\n    - {job: p, targets: ["${PROBE_URL}"]}\n', "EnvSecret66"),
        (
            'monitor:\n  probes:\n    - {job: p, targets: ["ftp://user:LiteralPw77@host/x"]}\n',
            "LiteralPw77",
        ),
    ],
)
def test_configuration_errors_never_quote_a_secret(
    yaml_text: str, secret: str, tmp_path: Path
) -> None:
    environ = {"DB_PW": "EnvSecret55", "PROBE_URL": "ftp://user:EnvSecret66@host/x"}
    with pytest.raises(ConfigFileError) as caught:
        parse_config(yaml_text, environ=environ)
    message = str(caught.value)
    assert "***" in message and secret not in message
    # The CLI prints the same problems, in text and JSON.
    path = tmp_path / "opscope.yaml"
    path.write_text(yaml_text)
    for extra in ([], ["--json"]):
        result = subprocess.run(
            [sys.executable, "-m", "opscope", "validate", "-c", str(path), *extra],
            check=False,
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, **environ},
        )
        assert result.returncode == 2
        assert "***" in result.stdout + result.stderr
        assert secret not in result.stdout + result.stderr


def test_python_warnings_are_logged_with_secrets_masked(capsys: pytest.CaptureFixture[str]) -> None:
    """A library's warning that quotes a connection URL reaches stderr through the log
    handlers, so the masking filter of ``opscope serve`` applies to it too."""
    from opscope.cli import _setup_logging

    secret = SECRETS["DB_PASSWORD"]
    _setup_logging("warning")
    log_filter = Redactor([secret]).install()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.warn(
                f"cannot reach postgresql://ops:{secret}@db/crm", UserWarning, stacklevel=1
            )
    finally:
        Redactor.uninstall(log_filter)
        logging.captureWarnings(False)
    written = capsys.readouterr().err
    assert "cannot reach postgresql://ops:***@db/crm" in written
    assert secret not in written


def test_escaped_and_partly_quoted_secrets_are_masked() -> None:
    redact = Redactor(['KEY\\val"bbb222', "PWaaa111 zzzPWTAIL"])
    # repr() doubles the backslash; a syntax error quotes the text after a space.
    assert redact("row 1: value 'KEY\\\\val\"bbb222' is not a number") == (
        "row 1: value '***' is not a number"
    )
    assert redact('{"k": "KEY\\\\val\\"bbb222"}') == '{"k": "***"}'
    assert redact('near "zzzPWTAIL": syntax error') == 'near "***": syntax error'
    assert redact("the word PWaaa111 alone") == "the word *** alone"


def test_secrets_cut_at_quotes_or_url_delimiters_are_masked() -> None:
    redact = Redactor(["Pw0rd'TAILsecret99", "Sec@ret/Tail99"])
    assert redact('near "TAILsecret99": syntax error') == 'near "***": syntax error'
    assert "Tail99" not in redact("postgresql+psycopg://ops:Sec@ret/Tail99@db/crm")


def test_a_sql_target_url_with_an_unencoded_secret_shows_no_part_of_it(tmp_path: Path) -> None:
    """The URL shown for a SQL target is masked before its password is parsed out: a password
    with "@" or "/" (invalid in a URL unless percent-encoded) is not cut in two."""
    from opscope.monitor.collectors.sql import SqlCollector, SqlEngines

    secret = "Sec@ret/Tail99"
    loaded = parse_config(
        "monitor:\n  sql:\n    - name: q\n"
        '      url: "postgresql+psycopg://ops:${DB_PASSWORD}@db/crm"\n'
        '      query: "SELECT 1 AS value"\n',
        environ={"DB_PASSWORD": secret},
    )
    collector = SqlCollector(
        query=loaded.config.monitor.sql[0],
        engines=SqlEngines(),
        executor=None,  # type: ignore[arg-type]  # never run here
        interval=10.0,
        timeout=1.0,
        resolve=lambda name, labels: 0,
        redact=Redactor(config_secrets(loaded)),
    )
    shown = collector.health.url
    assert "ret" not in shown and "Tail99" not in shown and "***" in shown
