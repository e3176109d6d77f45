"""URL helpers: no password is ever printed or recorded."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sweep.core.urls import (
    credentials_in,
    forget_secrets,
    mask_known,
    redact,
    remember_credentials,
    remember_secret,
    seal,
    stored_credential,
    unseal,
)


@pytest.fixture(autouse=True)
def _no_known_secrets() -> Iterator[None]:
    """Each test starts and ends knowing no secret by value (a study file loaded before would add its own)."""
    forget_secrets()
    yield
    forget_secrets()


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
    from sweep.core.urls import redact_setting, redact_tree

    assert redact_setting("problem.options.api_token", "abc123") == "***"
    assert redact_setting("problem.options.password", 1234) == "***"
    assert redact_setting("problem.options.path", "/data/x") == "/data/x"
    assert redact_setting("study.storage", "postgresql://u:pw@h/db") == "postgresql://u:***@h/db"
    tree = {"problem": {"options": {"token": "t0k", "n": 3, "urls": ["https://u:p@h/x"]}}, "lr": 0.1}
    assert redact_tree(tree) == {
        "problem": {"options": {"token": "***", "n": 3, "urls": ["https://u:***@h/x"]}},
        "lr": 0.1,
    }


def test_known_secrets_are_masked_whole_wherever_they_appear() -> None:
    """A secret known by value is masked in any text, where no pattern finds it: with a space and a quote
    (the URL pattern stops there), echoed in a message, or cut at an '@' by a driver (its parts masked)."""
    remember_secret('p@ssw0rd w"rd-x', "${PW}")
    assert redact('sqlite:///x.db?password=p@ssw0rd w"rd-x') == "sqlite:///x.db?password=***"
    assert redact("unknown metric 'val_p@ssw0rd w\"rd-x'") == "unknown metric 'val_***'"
    assert redact('could not translate host name "ssw0rd w"rd-x@127.0.0.1"') == (
        'could not translate host name "***@127.0.0.1"'
    )
    assert redact("postgresql://u:p%40ssw0rd%20w%22rd-x@h/db and p%40ssw0rd%20w%22rd-x") == (
        "postgresql://u:***@h/db and ***"
    )
    remember_secret("abcdefgh")
    remember_secret("abcd")  # a secret inside a longer one: the longer is masked whole, first
    assert mask_known("abcdefgh abcd", "#") == "# #"
    remember_secret("abc")  # too short to tell from any other text: not masked by value
    assert redact("abc") == "abc"


def test_sealed_values_hold_references_and_unseal_to_the_values() -> None:
    """What the Optuna database stores: each known secret as its reference (a mask where it has none);
    read back, the references this process knows are the values again; sealing twice changes nothing."""
    remember_secret("s3cr3t-value", "${PW}")
    remember_secret("lit-token-123", "${secret:objective.problem.options.token}")
    tree = {"dsn": "postgresql://u:s3cr3t-value@h/x", "token": "lit-token-123", "n": [3, "ssw0rd"], "f": 0.5}
    sealed = seal(tree)
    assert sealed == {
        "dsn": "postgresql://u:${PW}@h/x",
        "token": "${secret:objective.problem.options.token}",
        "n": [3, "ssw0rd"],
        "f": 0.5,
    }
    assert seal(sealed) == sealed and unseal(sealed) == tree
    remember_secret("ab@cdefgh", "${AT}")  # 'cdefgh' is masked, has no reference: stored masked
    assert seal("host cdefgh") == "host ***" and unseal("host ***") == "host ***"
    forget_secrets()
    assert unseal(sealed) == sealed  # a process that does not know them leaves the references


def test_credentials_in_a_study_file_are_known_by_value_once_loaded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Loading a study file makes its secrets known: values from the environment (numbers and booleans
    excepted: ``n_trials: ${N}`` still reads as a number), a URL's password (whole, spaces included, when the
    field is the URL), a DSN's ``password=``, and a string under a key named like a credential."""
    from sweep.studyfile.config import load_study

    monkeypatch.setenv("SWEEP_TEST_N", "1234")
    monkeypatch.setenv("SWEEP_TEST_DEVICE", "cpu")
    monkeypatch.setenv("SWEEP_TEST_TOKEN", "env-token-value")
    path = tmp_path / "s.yaml"
    path.write_text(
        "study: {name: s, n_trials: '${SWEEP_TEST_N}', storage: 'sqlite:///x.db?password=lit pass word'}\n"
        "objective: {problem: linear_pair, device: '${SWEEP_TEST_DEVICE}'}\n"
    )
    sf = load_study(path)
    assert sf.study.n_trials == 1234 and redact("1234 trials") == "1234 trials"
    assert redact("sqlite:///x.db?password=lit pass word") == "sqlite:///x.db?password=***"
    assert redact("cpu") == "cpu"  # three characters: too short to mask
    remember_credentials({"options": {"passphrase": "correct horse", "conn": "host=h password=pw-in-dsn", "n": 5}})
    assert redact("correct horse, pw-in-dsn") == "***, ***"
    assert credentials_in("https://u:a b@h/x?token=t 1") == ["t", "a b", "t 1"]  # in text; the whole field


def test_a_credential_in_an_artifact_location_is_refused_naming_where_the_store_reads_one() -> None:
    assert stored_credential("s3://bucket/mlflow") is None and stored_credential("file:///data/a") is None
    why = stored_credential("s3://bucket/x?token=tk-1") or ""
    assert "AWS_SECRET_ACCESS_KEY" in why and "tk-1" not in why and "artifact_uri" in why
    assert "GOOGLE_APPLICATION_CREDENTIALS" in (stored_credential("gs://u:pw@bucket/x") or "")
