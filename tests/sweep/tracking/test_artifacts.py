"""Where a study's files go and what a full disk does (sweep/tracking/artifacts.py), in process: the artifact
root a tracking section gives, the space check before anything is created, the errors that mean a full or
read-only disk, the watch that stops the study, and atomic writes. Real full disks: tests/test_artifact_faults.py."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from sweep.core.errors import SweepError
from sweep.studyfile.sections import TrackingSection
from sweep.tracking.artifacts import (
    MARGIN,
    STOP_AFTER,
    ArtifactWatch,
    artifact_root,
    check_artifact_space,
    unwritable,
    write_atomically,
)


def test_artifact_root_follows_the_tracking_settings(tmp_path: Path) -> None:
    assert artifact_root(TrackingSection(uri="sqlite:///sub/mlflow.db")) == Path("sub/mlartifacts")
    assert artifact_root(TrackingSection(uri="http://127.0.0.1:5000")) is None  # the server decides
    assert artifact_root(TrackingSection(artifact_location=(tmp_path / "a b").as_uri())) == tmp_path / "a b"
    assert artifact_root(TrackingSection(artifact_location="s3://bucket/x")) is None
    assert artifact_root(TrackingSection(artifact_location="rel/dir")) == Path("rel/dir")


def test_check_artifact_space_refuses_a_file_and_accepts_a_new_directory(tmp_path: Path) -> None:
    check_artifact_space(tmp_path / "new" / "deeper", 1000)  # made later: its parent is checked
    assert not (tmp_path / "new").exists()  # the check creates nothing
    (tmp_path / "blocker").write_text("x")
    with pytest.raises(SweepError, match=r"blocker is not a directory"):
        check_artifact_space(tmp_path / "blocker" / "mlartifacts", 1000)
    with pytest.raises(SweepError, match=r"free; one trial's files need about"):
        check_artifact_space(tmp_path, 1 << 62)  # more than any disk has
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocker"]


def test_unwritable_errors_are_recognised_through_their_chain() -> None:
    full = OSError(28, "No space left on device")
    wrapped = RuntimeError("log_batch failed")
    wrapped.__cause__ = full
    assert unwritable(full) == unwritable(wrapped) == "No space left on device"
    note = Exception("(Query-invoked autoflush)\n(sqlite3.OperationalError) database or disk is full")
    assert unwritable(note) == "database or disk is full"
    assert unwritable(ValueError("loss is nan")) == unwritable(FileNotFoundError(2, "gone")) == ""


def test_the_watch_stops_after_trials_in_a_row_without_a_file() -> None:
    watch = ArtifactWatch()
    for _ in range(STOP_AFTER - 1):
        watch.trial_files(0, ["weights.pt: No space left on device"])
    watch.trial_files(1, ["config.yaml: No space left on device"])  # one file got through: not "every write"
    assert watch.in_a_row == 0 and not watch.stop()
    for _ in range(STOP_AFTER):
        assert not watch.stop()
        watch.trial_files(0, ["weights.pt: No space left on device"])
    assert watch.stop() and "No space left on device" in watch.why() and f"last {STOP_AFTER} trials" in watch.why()
    store = ArtifactWatch()
    store.store_failed("database or disk is full")
    assert store.stop() and "tracking store cannot be written" in store.why()


@pytest.mark.parametrize(
    ("tracking", "root"),
    [
        ({"uri": "https://mlflow.example"}, None),
        ({"uri": "databricks"}, None),
        ({"uri": "sqlite:///mlflow.db"}, Path("mlartifacts")),
        ({"uri": "sqlite:////abs/dir/m.db"}, Path("/abs/dir/mlartifacts")),
        ({"artifact_location": "file:///data/a%20b/x"}, Path("/data/a b/x")),  # percent-decoded
        ({"artifact_location": "gs://bucket/x"}, None),
        ({"artifact_location": "/abs/arts"}, Path("/abs/arts")),
        ({"artifact_location": "C:/arts"}, Path("C:/arts")),  # a one-letter "scheme" is a drive, not a store
        ({"uri": "http://h:5000", "artifact_location": "/local"}, Path("/local")),  # the location wins
    ],
)
def test_artifact_root_of_each_kind_of_location(tracking: dict, root: Path | None) -> None:
    assert artifact_root(TrackingSection(**tracking)) == root


def test_check_artifact_space_counts_the_margin_at_its_boundary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Exactly one trial's files plus :data:`MARGIN` free is enough; a byte less is refused, in MiB."""
    import shutil

    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda _where: usage._replace(free=1000 + MARGIN))
    check_artifact_space(tmp_path, 1000)
    with pytest.raises(SweepError) as refused:
        check_artifact_space(tmp_path, 1001)
    assert str(refused.value) == f"artifact location {tmp_path} has 1.0 MiB free; one trial's files need about 1.0 MiB"


def test_check_artifact_space_refuses_a_location_it_cannot_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The probe is a real write (root passes ``os.access`` on a read-only mount): its error is the one line."""
    import tempfile

    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(tempfile, "TemporaryFile", refuse)
    with pytest.raises(SweepError, match=r"^artifact location .* cannot be written: Read-only file system$"):
        check_artifact_space(tmp_path / "arts", 1)


@pytest.mark.parametrize(
    "error",
    [
        OSError(errno.EROFS, "Read-only file system"),
        OSError(errno.EDQUOT, "Disk quota exceeded"),
        PermissionError(errno.EACCES, "Permission denied"),
        OSError(errno.EPERM, "Operation not permitted"),
    ],
)
def test_unwritable_knows_each_errno_of_a_disk_it_cannot_write(error: OSError) -> None:
    assert unwritable(error) == error.strerror


def test_unwritable_reads_the_phrase_anywhere_in_the_chain() -> None:
    """A phrase in any case, in an implicit ``__context__`` as well as a ``__cause__``; an errno without its text."""
    try:
        try:
            raise RuntimeError("attempt to write a READONLY DATABASE")
        except RuntimeError:
            raise ValueError("while committing") from None  # __cause__ suppressed: the context stays
    except ValueError as e:
        assert e.__cause__ is None and unwritable(e) == "readonly database"
    assert unwritable(OSError(errno.ENOSPC, None)) == "no space left on device"
    assert unwritable(Exception("Disk quota exceeded while writing")) == "disk quota exceeded"
    assert unwritable(Exception("")) == ""


class _Counted(Exception):
    """An exception whose text may be read a few times only: a loop over a cyclic chain reads it forever."""

    reads = 0

    def __str__(self) -> str:
        _Counted.reads += 1
        if _Counted.reads > 100:
            raise RecursionError("the chain was walked in a circle")
        return "a cause"


def test_unwritable_ends_on_a_cyclic_chain() -> None:
    a, b = _Counted(), _Counted()
    a.__cause__, b.__cause__ = b, a
    _Counted.reads = 0
    assert unwritable(a) == ""


def test_the_watch_counts_only_trials_that_wrote_nothing_and_failed() -> None:
    """A trial with nothing to write (no error, no file) neither counts nor resets; ``stop_after`` is the limit;
    once stopped, it stays stopped."""
    watch = ArtifactWatch(stop_after=2)
    watch.trial_files(0, ["weights.pt: Read-only file system"])
    watch.trial_files(0, [])
    assert watch.in_a_row == 1 and not watch.stop()
    watch.trial_files(0, ["config.yaml: x", "weights.pt: Read-only file system"])
    assert watch.in_a_row == 2 and watch.stop() and watch.last_error == "weights.pt: Read-only file system"
    assert "the last 2 trials could write no artifact (weights.pt: Read-only file system)" in watch.why()
    watch.trial_files(3, [])
    assert watch.in_a_row == 0 and watch.stop()  # said stop: the study is stopping
    assert not ArtifactWatch().stop() and ArtifactWatch().why().startswith("the last 0 trials")


def test_write_atomically_replaces_the_file_whole(tmp_path: Path) -> None:
    """Parents are made, an existing file is replaced, and no temporary file stays."""
    path = tmp_path / "a" / "b" / "report.md"
    write_atomically(path, "first")
    write_atomically(path, "second\n")
    assert path.read_text() == "second\n" and os.listdir(path.parent) == ["report.md"]
    write_atomically(path, "")
    assert path.read_text() == ""


def test_write_atomically_leaves_the_old_file_when_the_write_fails(tmp_path: Path) -> None:
    path = tmp_path / "report.md"
    path.write_text("old")
    with pytest.raises(TypeError):
        write_atomically(path, b"not text")  # type: ignore[arg-type]
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["report.md"]
