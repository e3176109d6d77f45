"""URL helpers: no password is ever printed or recorded."""

from __future__ import annotations

import time

import pytest

from sweep.urls import redact


@pytest.mark.parametrize(
    "url", ["postgresql://sweep:pa/ss@db:5432/optuna", "postgresql://u:p:q/r@h/db", "mysql+pymysql://root:a/b@h/d"]
)
def test_redact_passwords_with_slashes(url: str) -> None:
    """Passwords with '/' or ':' are masked too (SQLAlchemy accepts them)."""
    out = redact(url)
    assert ":***@" in out and "pa/ss" not in out and "p:q/r" not in out and "a/b" not in out


# (text, what redact() must return): every credential form SQLAlchemy, the drivers and MLflow accept is
# masked; user names, hosts, ports, databases and harmless parameters stay readable.
REDACTED = {
    # userinfo
    "password": ("postgresql://u:hunter2@h:5432/db", "postgresql://u:***@h:5432/db"),
    "driver in the scheme": ("postgresql+psycopg://u:hunter2@h/db", "postgresql+psycopg://u:***@h/db"),
    "'@' in the password": ("postgresql://u:p@ss@h/db", "postgresql://u:***@h/db"),
    "'@', ':' and '/' in the password": ("mysql+pymysql://root:a@b:c/d@h:3306/x", "mysql+pymysql://root:***@h:3306/x"),
    "'?' in the password": ("postgresql://u:p@q?r@h/db", "postgresql://u:***@h/db"),
    "percent-encoded password": ("postgresql://u:p%40ss%2Fw@h/db", "postgresql://u:***@h/db"),
    "empty user (redis)": ("redis://:hunter2@h:6379/0", "redis://:***@h:6379/0"),
    "no password": ("postgresql://postgres@127.0.0.1:5432/test", "postgresql://postgres@127.0.0.1:5432/test"),
    "http tracking server": ("http://alice:hunter2@mlflow.internal:5000", "http://alice:***@mlflow.internal:5000"),
    "https with a path": ("https://alice:hunter2@h/mlflow/", "https://alice:***@h/mlflow/"),
    "scheme-relative": ("//u:hunter2@h/db", "//u:***@h/db"),
    "'@' in a query value is not userinfo": (
        "mysql://u:hunter2@h/db?application_name=a@b",
        "mysql://u:***@h/db?application_name=a@b",
    ),
    "'@' in a query, no userinfo": ("postgresql://h/db?application_name=x@y", "postgresql://h/db?application_name=x@y"),
    # query parameters
    "?password=": ("postgresql://u@h/db?password=hunter2", "postgresql://u@h/db?password=***"),
    "?password=${PW}": ("postgresql://u@h/db?password=${PW}", "postgresql://u@h/db?password=***"),
    "password among others": (
        "postgresql://u@h/db?sslmode=require&password=hunter2&connect_timeout=3",
        "postgresql://u@h/db?sslmode=require&password=***&connect_timeout=3",
    ),
    "raw '&' inside a password": (
        "postgresql://u@h/db?password=a&b&sslmode=x",
        "postgresql://u@h/db?password=***&sslmode=x",
    ),
    "sslpassword": ("postgresql://u@h/db?sslpassword=hunter2", "postgresql://u@h/db?sslpassword=***"),
    "PASSWORD upper case": ("mssql://h/db?PASSWORD=hunter2", "mssql://h/db?PASSWORD=***"),
    "passwd": ("mysql://h/db?passwd=hunter2", "mysql://h/db?passwd=***"),
    "pwd": ("mysql://h/db?pwd=hunter2", "mysql://h/db?pwd=***"),
    "token": ("https://h/api?token=hunter2", "https://h/api?token=***"),
    "access_token": ("https://h/api?access_token=hunter2&x=1", "https://h/api?access_token=***&x=1"),
    "secret": ("https://h/api?client_secret=hunter2", "https://h/api?client_secret=***"),
    "api_key": ("https://h/api?api_key=hunter2", "https://h/api?api_key=***"),
    "apikey": ("https://h/api?apiKey=hunter2", "https://h/api?apiKey=***"),
    "key": ("https://h/api?key=hunter2", "https://h/api?key=***"),
    "auth": ("https://h/api?auth=hunter2", "https://h/api?auth=***"),
    "credential": ("https://h/api?credentials=hunter2", "https://h/api?credentials=***"),
    "S3 presigned URL": (
        "https://b.s3.amazonaws.com/o?X-Amz-Credential=AKIA1&X-Amz-Signature=hunter2&X-Amz-Expires=60",
        "https://b.s3.amazonaws.com/o?X-Amz-Credential=***&X-Amz-Signature=***&X-Amz-Expires=60",
    ),
    "Azure SAS": (
        "https://a.blob.core.windows.net/c?sv=2020&sig=hunter2",
        "https://a.blob.core.windows.net/c?sv=2020&sig=***",
    ),
    "harmless parameters stay": ("sqlite:///x.db?timeout=10&uri=true", "sqlite:///x.db?timeout=10&uri=true"),
    "MLflow UI link stays": (
        "http://127.0.0.1:5000/#/experiments/1/runs?viewStateShareKey=cf41",
        "http://127.0.0.1:5000/#/experiments/1/runs?viewStateShareKey=cf41",
    ),
    # connection strings and environment-style settings in messages
    "libpq keyword string": ("host=h user=u password=hunter2 dbname=db", "host=h user=u password=*** dbname=db"),
    "ODBC string": ("Driver={ODBC 18};Server=h;UID=u;PWD=hunter2;", "Driver={ODBC 18};Server=h;UID=u;PWD=***;"),
    "percent-encoded ODBC string": (
        "mssql+pyodbc:///?odbc_connect=DRIVER%3Dx%3BUID%3Du%3BPWD%3Dhunter2%3BServer%3Dh",
        "mssql+pyodbc:///?odbc_connect=DRIVER%3Dx%3BUID%3Du%3BPWD%3D***%3BServer%3Dh",
    ),
    "MLFLOW_TRACKING_TOKEN": ("MLFLOW_TRACKING_TOKEN=hunter2 python -m x", "MLFLOW_TRACKING_TOKEN=*** python -m x"),
    "MLFLOW_TRACKING_PASSWORD": ("env MLFLOW_TRACKING_PASSWORD=hunter2", "env MLFLOW_TRACKING_PASSWORD=***"),
    "AWS secret": ("AWS_SECRET_ACCESS_KEY=hunter2", "AWS_SECRET_ACCESS_KEY=***"),
    "quoted keyword argument": ("connect(password='hunter2', host='h')", "connect(password='***', host='h')"),
    "bearer token": ("Authorization: Bearer hunter2", "Authorization: Bearer ***"),
    # URLs inside other text
    "quoted in YAML": (
        "storage: 'postgresql://u:hunter2@h/db'  # mail a@b.c",
        "storage: 'postgresql://u:***@h/db'  # mail a@b.c",
    ),
    "in a flow mapping": ("{storage: postgresql://u:hunter2@h/db, n: 1}", "{storage: postgresql://u:***@h/db, n: 1}"),
    "two URLs in a message": (
        "cannot open postgresql://u:p1@h/a (tried mysql://v:p2@h/b)",
        "cannot open postgresql://u:***@h/a (tried mysql://v:***@h/b)",
    ),
    "no URL at all": ("plain text, a@b.c, key: value", "plain text, a@b.c, key: value"),
}


@pytest.mark.parametrize(("text", "expected"), REDACTED.values(), ids=REDACTED.keys())
def test_redact_masks_every_credential_form(text: str, expected: str) -> None:
    """redact() masks each credential form and keeps the rest of the text as it was."""
    assert redact(text) == expected


def test_export_keeps_references_and_replaces_literal_secrets() -> None:
    """keep_references: a ``${VAR}`` reference is not the secret and stays; a literal one is replaced."""
    keep = {"mask": "${SWEEP_PASSWORD}", "keep_references": True}
    assert redact("postgresql://u:${PW}@h/db?password=${PW}", **keep) == "postgresql://u:${PW}@h/db?password=${PW}"
    assert redact("postgresql://u:lit@h/db?token=lit", **keep) == (
        "postgresql://u:${SWEEP_PASSWORD}@h/db?token=${SWEEP_PASSWORD}"
    )


@pytest.mark.parametrize(
    "text", ["x" + "token" * 20_000, "a=&" * 50_000, "https://" + "@" * 50_000, "Bearer " * 50_000, "ab:" * 50_000]
)
def test_redact_takes_linear_time(text: str) -> None:
    """Redaction runs on whole files and error messages: no pattern may backtrack quadratically."""
    started = time.perf_counter()
    redact(text)
    assert time.perf_counter() - started < 3


def test_settings_named_like_credentials_are_masked_whole() -> None:
    """A user problem's ``options: {api_token: ...}`` never reaches MLflow params or config.yaml."""
    from sweep.urls import redact_setting, redact_tree

    assert redact_setting("problem.options.api_token", "abc123") == "***"
    assert redact_setting("problem.options.password", 1234) == "***"
    assert redact_setting("problem.options.path", "/data/x") == "/data/x"
    assert redact_setting("study.storage", "postgresql://u:pw@h/db") == "postgresql://u:***@h/db"
    tree = {"problem": {"options": {"token": "t0k", "n": 3, "urls": ["https://u:p@h/x"]}}, "lr": 0.1}
    assert redact_tree(tree) == {
        "problem": {"options": {"token": "***", "n": 3, "urls": ["https://u:***@h/x"]}},
        "lr": 0.1,
    }
