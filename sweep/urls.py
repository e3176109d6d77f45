"""URL helpers: never print or record a password, token or other credential."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from pathlib import Path

MASK = "***"

# A URL in free text: a scheme, "://" (or a scheme-relative "//"), and everything up to whitespace or a quote.
_URL = re.compile(r"(?<![A-Za-z0-9+.\-/:])(?P<scheme>(?:[A-Za-z][A-Za-z0-9+.\-]*:)?//)(?P<rest>[^\s'\"]*)")

# '?' or '#' that starts a real query (``?name=``) after the host: an '@' after it is not userinfo.
_QUERY_START = re.compile(r"[?#][A-Za-z0-9_.\-%\[\]]*=")

# Names of parameters (URL query, libpq/ODBC ``key=value`` strings, environment variables) whose value
# is a credential: SQLAlchemy's and the drivers' ``password``/``sslpassword``, ``token``/
# ``access_token``, ``secret``, ``api_key``, S3/Azure signatures, MLFLOW_TRACKING_TOKEN/PASSWORD, ...
_SECRET_NAME = re.compile(
    r"passw(?:or)?d|pwd|token|secret|credential|signature|api_?key|apikey|access_?key|private_?key|auth"
    r"|^(?:pass|key|sig|sas)$",
    re.IGNORECASE,
)
# ``name=value``, the name not the tail of a longer one (it follows '?', '&', ';', a quote, a space...);
# the value quoted, or up to whitespace, a quote, ';' or the next ``&name=`` (a raw '&' inside a password
# stays masked). The name is matched as a plain run and checked by :data:`_SECRET_NAME` afterwards, so
# the scan is linear on any text.
_PARAM = re.compile(
    r"(?<![A-Za-z0-9_.\-])(?P<name>[A-Za-z0-9_.\-]+)(?P<eq>\s*=\s*)"
    r"(?:(?P<quote>['\"])(?P<quoted>[^'\"\n]*)(?P=quote)|(?P<value>(?:[^\s'\"&;]|&(?![A-Za-z0-9_.\-]+=))*))"
)
# The same inside a percent-encoded value (``odbc_connect=...%3BPWD%3Dsecret%3B...``).
_ENCODED_PARAM = re.compile(
    r"(?:^|(?<=%3[bB])|(?<=[?&;=]))(?P<name>[A-Za-z0-9_.\-]+)(?P<eq>%3[dD])(?P<value>(?:[^%&\s'\"]|%(?!3[bB]))*)"
)
# An HTTP ``Authorization`` value or a bearer token in a message.
_BEARER = re.compile(
    r"(?P<head>\b(?:Bearer|Authorization:\s*(?:Basic|Bearer|Token)?)\s+)(?P<value>[A-Za-z0-9._~+/=\-]+)", re.IGNORECASE
)
_REFERENCE = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*\}")


def _masked(value: str, mask: str, keep_references: bool) -> str:
    if keep_references and _REFERENCE.search(value):
        return value
    return mask if value else value


def _redact_url(scheme: str, rest: str, mask: str, keep_references: bool) -> str:
    """One URL (``rest`` follows ``scheme://``) with the password of its userinfo masked.

    The userinfo ends at the last '@' before the query, so a password may contain '@', ':', '/' and
    '?'; the user name stays readable.
    """
    first = rest.find("@")
    if first < 0:
        return scheme + rest
    query = _QUERY_START.search(rest, first)
    end = rest.rfind("@", 0, query.start() if query else len(rest))
    userinfo, host = rest[:end], rest[end:]
    user, colon, password = userinfo.partition(":")
    if not colon:
        return scheme + rest  # a user name only
    return f"{scheme}{user}:{_masked(password, mask, keep_references)}{host}"


def redact(text: str, mask: str = MASK, keep_references: bool = False) -> str:
    """``text`` (a URL, or a message or file that contains URLs) with every credential masked.

    Masked: the password of a URL's userinfo (``postgresql://u:secret@h/db`` → ``postgresql://u:***@h/db``;
    the password may contain '@', ':', '/' — it ends at the last '@' before the host), the value of any
    ``name=value`` whose name looks like a credential (``?password=``, ``sslpassword``, ``token``,
    ``access_token``, ``secret``, ``api_key``, ``key``, ``sig``, ``auth``...: URL query parameters, libpq
    and ODBC connection strings, ``MLFLOW_TRACKING_TOKEN=...``), percent-encoded ones included, and
    ``Bearer``/``Authorization:`` tokens. User names, hosts, ports, databases and other parameters stay.

    Args:
        text: Any text.
        mask: What replaces each secret.
        keep_references: Leave a secret written with a ``${NAME}`` reference as it is (for files that
            are written back out: the reference is not the secret).
    """
    out = _URL.sub(lambda m: _redact_url(m["scheme"], m["rest"], mask, keep_references), text)

    def param(m: re.Match[str]) -> str:
        if not _SECRET_NAME.search(m["name"]):
            return m[0]
        head = m["name"] + m["eq"]
        if m.groupdict().get("quote"):
            return f"{head}{m['quote']}{_masked(m['quoted'], mask, keep_references)}{m['quote']}"
        return head + _masked(m["value"], mask, keep_references)

    out = _PARAM.sub(param, out)
    out = _ENCODED_PARAM.sub(param, out)
    return _BEARER.sub(lambda m: m["head"] + _masked(m["value"], mask, keep_references), out)


def redact_setting(key: str, value: object) -> str:
    """A setting's value as it may be recorded: masked whole when its name (the last part of a dotted
    key, e.g. ``problem.options.api_token``) names a credential, else with any URL credential masked."""
    if _SECRET_NAME.search(key.rsplit(".", 1)[-1]):
        return MASK
    return redact(str(value))


def redact_tree(tree: object, key: str = "") -> object:
    """A nested config with :func:`redact_setting` applied to every leaf (strings only; numbers kept)."""
    if isinstance(tree, dict):
        return {k: redact_tree(v, str(k)) for k, v in tree.items()}
    if isinstance(tree, list):
        return [redact_tree(v, key) for v in tree]
    if isinstance(tree, str) or (key and _SECRET_NAME.search(key)):
        return redact_setting(key, tree)
    return tree


def sqlite_path(url: str) -> Path | None:
    """The file of a ``sqlite:///`` URL (relative to the working directory), or ``None``."""
    if not url.startswith("sqlite:///"):
        return None
    path = url[len("sqlite:///") :].split("?", 1)[0]
    return None if path in ("", ":memory:") else Path(path)


def absolute_sqlite(url: str) -> str:
    """A ``sqlite:///relative.db`` URL made absolute (against the working directory now); others unchanged.

    MLflow caches its store per URI string within a process, so a relative path would keep pointing at
    the first directory it was opened from.
    """
    path = sqlite_path(url)
    if path is None or path.is_absolute():
        return url
    query = url.split("?", 1)[1] if "?" in url else ""
    return f"sqlite:///{path.resolve()}" + (f"?{query}" if query else "")


@contextlib.contextmanager
def sqlite_init_lock(url: str) -> Iterator[None]:
    """Hold an exclusive lock beside a SQLite file while its schema may be created or migrated.

    Optuna and MLflow both create (and MLflow migrates) their tables on first open; two processes
    doing it at once on one file break each other. Server URLs need no lock (nothing happens).
    """
    path = sqlite_path(url)
    if path is None:
        yield
        return
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
