"""The claim lock (sweep/storage/claimlock.py) on a SQLite file, the local PostgreSQL and MariaDB: one holder
at a time per study name, given up after ``wait`` saying who holds it, ``kept`` false once a server lock died
with its connection, and work put off until no lock of this process is held."""

from __future__ import annotations

import os
import socket
import stat
import threading
import uuid
from pathlib import Path

import pytest
from sqlalchemy import create_engine

from sweep.core.interrupts import Interrupts
from sweep.storage.claimlock import Held, after_release, run_after_release, study_lock
from sweep.storage.storage import open_storage
from tests.conftest import PG_URL, postgres_error
from tests.support.pausing import until


def _until_a_lock_is_awaited() -> None:
    """Until some session of the local PostgreSQL waits for an advisory lock."""
    from tests.support.pgtools import _admin

    admin = _admin()
    try:
        query = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"

        def awaited() -> bool:
            cur = admin.cursor()
            cur.execute(query)
            return bool(cur.fetchone()[0])

        until(awaited, "session waiting for the lock")
    finally:
        admin.close()


@pytest.mark.skipif(bool(postgres_error()), reason=postgres_error() or "")
def test_the_postgres_lock_excludes_a_second_holder() -> None:
    """Two connections: the second waits until the first releases (an advisory lock, per study name)."""
    rdb = open_storage(PG_URL)
    name = f"lock-{uuid.uuid4().hex[:8]}"
    order: list[str] = []

    def second() -> None:
        with study_lock(rdb.engine, PG_URL, name):
            order.append("second")

    with study_lock(rdb.engine, PG_URL, name):
        t = threading.Thread(target=second)
        t.start()
        _until_a_lock_is_awaited()  # the second holder is blocked on the lock, not merely late
        order.append("first")
    t.join(10)
    assert order == ["first", "second"]


def _mariadb_error() -> str | None:
    try:
        import pymysql

        pymysql.connect(host="127.0.0.1", port=3306, user="root", database="test", connect_timeout=3).close()
    except Exception as e:  # ImportError, or no server answers
        return f"no MariaDB/MySQL at 127.0.0.1:3306/test ({type(e).__name__})"
    return None


LOCK_URLS = [
    "sqlite",
    pytest.param(PG_URL, marks=pytest.mark.skipif(bool(postgres_error()), reason=postgres_error() or "")),
    pytest.param(
        "mysql+pymysql://root@127.0.0.1:3306/test",
        marks=pytest.mark.skipif(bool(_mariadb_error()), reason=_mariadb_error() or ""),
    ),
]


@pytest.mark.parametrize("url", LOCK_URLS)
def test_a_lock_held_elsewhere_is_given_up_after_wait_saying_who_holds_it(url: str, tmp_path: Path) -> None:
    """``wait`` seconds for a lock another connection holds: the block runs without it (``taken`` false) and
    ``holder`` names the holder; a requested interrupt ends an endless wait (KeyboardInterrupt)."""
    url = f"sqlite:///{tmp_path / 'o.db'}" if url == "sqlite" else url
    engine = open_storage(url).engine
    name = f"held-{uuid.uuid4().hex[:8]}"
    with study_lock(engine, url, name) as mine:
        with study_lock(engine, url, name, wait=0.2) as other:
            assert not other.taken and not other.kept
        assert f"pid {os.getpid()} " in other.holder if "mysql" not in url else "MySQL connection" in other.holder
        with study_lock(engine, url, f"{name} [other]", wait=0) as unrelated:  # another name: another lock
            assert unrelated.taken
        interrupts = Interrupts()
        interrupts.requested = True  # SIGTERM arrived while waiting
        with pytest.raises(KeyboardInterrupt), study_lock(engine, url, name, interrupts=interrupts):
            pass
    assert mine.taken and mine.kept
    engine.dispose()


def _sqlite(tmp_path: Path) -> tuple[object, str]:
    url = f"sqlite:///{tmp_path / 'o.db'}"
    return create_engine(url), url


def test_work_is_put_off_until_no_lock_of_this_process_is_held(tmp_path: Path) -> None:
    """Outside a lock, work runs at once; inside two nested ones (two names), after the outer one is let go."""
    engine, url = _sqlite(tmp_path)
    done: list[str] = []
    after_release(lambda: done.append("now"))
    assert done == ["now"]
    with study_lock(engine, url, "a"):
        with study_lock(engine, url, "b"):
            after_release(lambda: done.append("later"))
        assert done == ["now"]  # "a" is still held
        after_release(lambda: done.append("last"))
    assert done == ["now", "later", "last"]


def test_with_run_after_false_the_caller_runs_the_work(tmp_path: Path) -> None:
    engine, url = _sqlite(tmp_path)
    done: list[int] = []
    with study_lock(engine, url, "a", run_after=False):
        after_release(lambda: done.append(1))
    assert done == []
    run_after_release()
    assert done == [1]
    run_after_release()  # nothing left: nothing runs twice
    assert done == [1]


def test_an_error_in_the_block_lets_the_lock_go(tmp_path: Path) -> None:
    """The block raises: the lock is free for another holder at once, and this process holds none (work runs
    at once)."""
    engine, url = _sqlite(tmp_path)
    with pytest.raises(ValueError, match="in the block"), study_lock(engine, url, "a"):
        raise ValueError("in the block")
    with study_lock(engine, url, "a", wait=0) as again:
        assert again.taken
    done: list[int] = []
    after_release(lambda: done.append(1))
    assert done == [1]


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:", "oracle+oracledb://u@h/db", "mssql+pyodbc://u@dsn"])
def test_a_storage_without_a_shared_lock_runs_the_block_at_once(
    url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An in-memory SQLite (one process) or a database with no lock of ours: the block runs, said ``taken``,
    and nothing is created."""
    monkeypatch.chdir(tmp_path)  # a relative lock file would land here
    with study_lock(None, url, "a", wait=0) as held:
        assert isinstance(held, Held) and held.taken and held.kept and held.holder == ""
    assert list(tmp_path.iterdir()) == []


def test_the_sqlite_lock_file_is_private_and_names_its_holder(tmp_path: Path) -> None:
    """One file per study name beside the database, readable by its owner only (it names a pid and a host)."""
    engine, url = _sqlite(tmp_path / "new")
    with study_lock(engine, url, "a"), study_lock(engine, url, "b"):
        files = sorted(p.name for p in (tmp_path / "new").iterdir())
        assert len(files) == 2 and all(f.startswith("o.db.") and f.endswith(".lock") for f in files), files
        text = (tmp_path / "new" / files[0]).read_text()
    assert text == f"pid {os.getpid()} on {socket.gethostname()}"
    assert stat.S_IMODE((tmp_path / "new").stat().st_mode) == 0o700
    assert {stat.S_IMODE((tmp_path / "new" / f).stat().st_mode) for f in files} == {0o600}


def test_the_sqlite_lock_excludes_a_second_holder_until_released(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A second holder (another thread with its own file handle, as another process) waits while the first
    holds the lock (it reaches the ``lock_wait`` point), then takes it, within its ``wait``."""
    engine, url = _sqlite(tmp_path)
    order: list[str] = []
    outcome: list[Held] = []
    blocked = threading.Event()
    monkeypatch.setattr("sweep.storage.claimlock.pause", lambda point: point == "lock_wait" and blocked.set())

    def second() -> None:
        with study_lock(engine, url, "a", wait=600) as held:
            order.append("second")
            outcome.append(held)
        blocked.set()  # (had it not waited)

    with study_lock(engine, url, "a"):
        t = threading.Thread(target=second)
        t.start()
        assert blocked.wait(60)
        order.append("first")
    t.join(60)
    assert order == ["first", "second"] and outcome[0].taken and outcome[0].kept


def test_an_interrupt_ends_a_wait_on_a_lock_with_no_time_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``wait=None`` waits as long as it takes, but a signal that comes during the wait (flagged on
    ``interrupts`` as the first slice runs out) ends it: KeyboardInterrupt, the block not run."""
    engine, url = _sqlite(tmp_path)
    interrupts = Interrupts()
    monkeypatch.setattr("sweep.storage.claimlock.pause", lambda point: setattr(interrupts, "requested", True))
    ran: list[int] = []
    with (
        study_lock(engine, url, "a"),
        pytest.raises(KeyboardInterrupt),
        study_lock(engine, url, "a", interrupts=interrupts),
    ):
        ran.append(1)
    assert ran == [] and interrupts.requested


def _kill_pg_holder() -> None:
    """End the PostgreSQL session that holds this process's advisory lock (a blip on its connection)."""
    from tests.support.pgtools import _admin

    admin = _admin()
    try:
        admin.cursor().execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
            (f"sweep: pid {os.getpid()} on {socket.gethostname()}"[:63],),
        )
    finally:
        admin.close()


def _kill_mysql_holder(name: str) -> None:
    """End the MariaDB connection that holds the named lock of study ``name``."""
    import hashlib

    import pymysql

    admin = pymysql.connect(host="127.0.0.1", port=3306, user="root", database="test", autocommit=True)
    try:
        with admin.cursor() as cur:
            cur.execute("SELECT IS_USED_LOCK(%s)", (f"sweep:{hashlib.sha256(name.encode()).hexdigest()[:40]}",))
            (holder,) = cur.fetchone()
            assert holder, "nobody holds the lock"
            cur.execute(f"KILL {int(holder)}")
    finally:
        admin.close()


@pytest.mark.parametrize("url", LOCK_URLS[1:])
def test_a_server_lock_that_died_with_its_connection_is_not_kept(url: str) -> None:
    """The holder's connection is dropped while it holds the lock: another connection can take it meanwhile,
    and the holder learns at the end that it was not held throughout (``kept`` false)."""
    engine = open_storage(url).engine
    name = f"died-{uuid.uuid4().hex[:8]}"
    try:
        with study_lock(engine, url, name) as held:
            _kill_pg_holder() if url.startswith("postgresql") else _kill_mysql_holder(name)
            with study_lock(engine, url, name, wait=5) as other:
                assert other.taken  # the lock died with its connection
        assert held.taken and not held.kept
    finally:
        engine.dispose()
