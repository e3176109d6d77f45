"""URL helpers: never print or record a password, token or other credential.

Two ways a secret is found. By pattern (:func:`redact`): the password of a URL, a ``password=``/``token=``
parameter, a bearer token, wherever they appear. By value: every value a study file took from the
environment (:func:`sweep.studyfile.studyyaml.expand_env`) and every credential found in it once loaded
(:func:`remember_credentials`: a URL's password, a ``password=`` in a DSN, the value of a key named like a
password, passphrase, secret, api_key or token) is remembered, and :func:`redact` masks it wherever it
appears, whole, even where no pattern would find it (a password holding a space or a quote, the part of
one after an '@' that a driver reports as the host name, a value echoed in an error). What sweep stores
in the Optuna database goes through :func:`seal` (each known secret replaced by its ``${NAME}``
reference) and comes back through :func:`unseal`.
"""

from __future__ import annotations

import contextlib
import os
import re
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

MASK = "***"
MIN_SECRET = 4  # shorter values are not masked by value: masking "ab" would garble every message

# A URL in free text: a scheme, "://" (or a scheme-relative "//"), and everything up to whitespace or a quote.
_URL = re.compile(r"(?<![A-Za-z0-9+.\-/:])(?P<scheme>(?:[A-Za-z][A-Za-z0-9+.\-]*:)?//)(?P<rest>[^\s'\"]*)")

# '?' or '#' that starts a real query (``?name=``) after the host: an '@' after it is not userinfo.
_QUERY_START = re.compile(r"[?#][A-Za-z0-9_.\-%\[\]]*=")

# Names of parameters (URL query, libpq/ODBC ``key=value`` strings, environment variables) whose value
# is a credential: SQLAlchemy's and the drivers' ``password``/``sslpassword``, ``token``/
# ``access_token``, ``secret``, ``api_key``, S3/Azure signatures, MLFLOW_TRACKING_TOKEN/PASSWORD, ...
_SECRET_NAME = re.compile(
    r"passw(?:or)?d|passphrase|pwd|token|secret|credential|signature|api_?key|apikey|access_?key|private_?key|auth"
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


def _redact_url(scheme: str, rest: str, hide: Callable[[str], str]) -> str:
    """One URL (``rest`` follows ``scheme://``) with the password of its userinfo replaced by ``hide(it)``.

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
    return f"{scheme}{user}:{hide(password)}{host}"


def _patterns(text: str, hide: Callable[[str], str]) -> str:
    """``text`` with each credential the patterns find (see :func:`redact`) replaced by ``hide(it)``."""
    out = _URL.sub(lambda m: _redact_url(m["scheme"], m["rest"], hide), text)

    def param(m: re.Match[str]) -> str:
        if not _SECRET_NAME.search(m["name"]):
            return m[0]
        head = m["name"] + m["eq"]
        if m.groupdict().get("quote"):
            return f"{head}{m['quote']}{hide(m['quoted'])}{m['quote']}"
        return head + hide(m["value"])

    out = _PARAM.sub(param, out)
    out = _ENCODED_PARAM.sub(param, out)
    return _BEARER.sub(lambda m: m["head"] + hide(m["value"]), out)


def redact(text: str, mask: str = MASK, keep_references: bool = False) -> str:
    """``text`` (a URL, or a message or file that contains URLs) with every credential masked.

    Masked: every secret known by value (:func:`remember_secret`), the password of a URL's userinfo
    (``postgresql://u:secret@h/db`` → ``postgresql://u:***@h/db``; the password may contain '@', ':',
    '/' — it ends at the last '@' before the host), the value of any ``name=value`` whose name looks like
    a credential (``?password=``, ``sslpassword``, ``token``, ``access_token``, ``secret``, ``api_key``,
    ``key``, ``sig``, ``auth``...: URL query parameters, libpq and ODBC connection strings,
    ``MLFLOW_TRACKING_TOKEN=...``), percent-encoded ones included, and ``Bearer``/``Authorization:``
    tokens. User names, hosts, ports, databases and other parameters stay.

    Args:
        text: Any text.
        mask: What replaces each secret.
        keep_references: Leave a secret written with a ``${NAME}`` reference as it is (for files that
            are written back out: the reference is not the secret).
    """

    def hide(value: str) -> str:
        return value if not value or (keep_references and _REFERENCE.search(value)) else mask

    return _patterns(mask_known(text, mask), hide)


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


# --- secrets known by value ------------------------------------------------------------------------

# A whole field that is a URL: its password may hold spaces and quotes (the pattern in text stops there).
_WHOLE_URL = re.compile(r"(?P<scheme>(?:[A-Za-z][A-Za-z0-9+.\-]*:)?//)")


def _alternation(words: list[str]) -> str:
    """A regex matching any of ``words``, longest first (so a secret is masked whole, not a part of it)."""
    return "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True)) or "(?!)"


class _Known:
    """The secrets this process knows by value: each with the reference :func:`seal` stores instead
    (``None``: a form of a secret that is masked, never given back), and each reference's value."""

    def __init__(self) -> None:
        self.references: dict[str, str | None] = {}
        self.values: dict[str, str] = {}
        self._patterns: dict[str, re.Pattern[str]] = {}

    def add(self, text: str, reference: str | None) -> None:
        if len(text) < MIN_SECRET or self.references.get(text) is not None:
            return
        self.references[text] = reference
        if reference is not None:
            self.values.setdefault(reference, text)
        self._patterns.clear()

    def pattern(self, kind: str) -> re.Pattern[str]:
        """``secret``: any known secret; ``reference``: any reference; ``seal``: either, references first."""
        if kind not in self._patterns:
            secret, reference = _alternation(list(self.references)), _alternation(list(self.values))
            text = {"secret": secret, "reference": reference, "seal": f"(?P<ref>{reference})|(?P<secret>{secret})"}
            self._patterns[kind] = re.compile(text[kind])
        return self._patterns[kind]


_KNOWN = _Known()


def remember_secret(value: str, reference: str | None = None) -> None:
    """Mask ``value`` from now on wherever :func:`redact` runs (values under :data:`MIN_SECRET` characters
    excepted), with the forms a message may show it in: percent-encoded or decoded, and each part of it
    between '@'s (a driver reports what follows an unencoded '@' as the host name). ``reference``: what
    :func:`seal` stores in its place (``${NAME}``), given back by :func:`unseal`; ``None``: masked."""
    _KNOWN.add(value, reference)
    for form in {urllib.parse.unquote(value), urllib.parse.quote(value, safe=""), *value.split("@")} - {value}:
        _KNOWN.add(form, None)


def forget_secrets() -> None:
    """Forget every secret known by value (a new study file is being loaded:
    :func:`sweep.studyfile.config.parse_study`)."""
    global _KNOWN
    _KNOWN = _Known()


def mask_known(text: str, mask: str = MASK) -> str:
    """``text`` with every secret known by value masked (the longest first); patterns are not applied."""
    return _KNOWN.pattern("secret").sub(lambda _: mask, text) if _KNOWN.references else text


def credentials_in(text: str) -> list[str]:
    """The credentials :func:`redact` would mask in ``text`` by its patterns; when the whole of ``text`` is
    a URL, its password and credential parameters whole (spaces and quotes included)."""
    found: list[str] = []

    def collect(value: str) -> str:
        if value:
            found.append(value)
        return value

    _patterns(text, collect)
    whole = _WHOLE_URL.match(text)
    if whole:
        _redact_url(whole["scheme"], text[whole.end() :], collect)
        query = text.partition("?")[2].partition("#")[0]
        for name, value in urllib.parse.parse_qsl(query, keep_blank_values=True):
            if _SECRET_NAME.search(name):
                collect(value)
    return found


def remember_credentials(tree: Any, path: str = "", name: str = "") -> None:
    """Remember (:func:`remember_secret`) the credentials in a study file's tree: a string under a key named
    like a credential (``passphrase``, ``api_key``, ``token``...) whole, and in any other string what
    :func:`credentials_in` finds (a URL's password, ``password=`` in a DSN). Each is stored by :func:`seal`
    as ``${secret:<key>}``. Numbers are left alone (``max_tokens: 2048`` is no secret)."""
    if isinstance(tree, dict):
        for key, value in tree.items():
            remember_credentials(value, f"{path}.{key}" if path else str(key), str(key))
    elif isinstance(tree, list):
        for i, value in enumerate(tree):
            remember_credentials(value, f"{path}.{i}", name)
    elif isinstance(tree, str) and _SECRET_NAME.search(name):
        remember_secret(tree, f"${{secret:{path}}}")
    elif isinstance(tree, str):
        for i, found in enumerate(credentials_in(tree)):
            remember_secret(found, f"${{secret:{path}}}" if i == 0 else f"${{secret:{path}#{i + 1}}}")


def seal(value: Any) -> Any:
    """``value`` (a JSON-like tree) as it may be stored: each known secret in its strings replaced by its
    reference (``${PGPASSWORD}``, ``${secret:objective.problem.options.token}``), or masked."""
    if not _KNOWN.references:
        return value
    if isinstance(value, str):
        return _KNOWN.pattern("seal").sub(lambda m: m["ref"] or _KNOWN.references[m["secret"]] or MASK, value)
    if isinstance(value, dict):
        return {k: seal(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [seal(v) for v in value]
    return value


def unseal(value: Any) -> Any:
    """A tree :func:`seal` stored, each reference known to this process given back as its value."""
    if not _KNOWN.values:
        return value
    if isinstance(value, str):
        return _KNOWN.pattern("reference").sub(lambda m: _KNOWN.values[m[0]], value) if "${" in value else value
    if isinstance(value, dict):
        return {k: unseal(v) for k, v in value.items()}
    if isinstance(value, list):
        return [unseal(v) for v in value]
    return value


# MLflow's artifact repositories read their credentials from these (a location is copied into every run).
_STORE_CREDENTIALS = {
    "s3": "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_SESSION_TOKEN)",
    "gs": "GOOGLE_APPLICATION_CREDENTIALS",
    "wasbs": "AZURE_STORAGE_CONNECTION_STRING (or AZURE_STORAGE_ACCESS_KEY)",
    "abfss": "AZURE_STORAGE_CONNECTION_STRING (or AZURE_STORAGE_ACCESS_KEY)",
    "http": "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN)",
    "https": "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN)",
    "mlflow-artifacts": "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN)",
    "sftp": "an SSH key (~/.ssh)",
}


def stored_credential(location: str) -> str | None:
    """Why an artifact location may not be used (``None``: it may): it holds a password or token, which
    MLflow would copy into the experiment and every run's ``artifact_uri``. Names what the store reads."""
    if not credentials_in(location):
        return None
    scheme = location.partition("://")[0].lower() if "://" in location else ""
    where = _STORE_CREDENTIALS.get(scheme, "the environment variables its artifact store reads")
    return (
        f"{redact(location)} holds a credential, and MLflow stores the location in every run's artifact_uri: "
        f"remove it and set {where} instead"
    )


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
    from sweep.core.sqlite import private_dir

    private_dir(path.parent)
    with os.fdopen(os.open(path.with_name(path.name + ".lock"), os.O_WRONLY | os.O_CREAT, 0o600), "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
