"""The MLflow side of a study: reachability checks and the parent run's params under concurrent starts."""

from __future__ import annotations

import http.server
import threading
from pathlib import Path

import optuna

from sweep.config import TrackingSection
from sweep.tracking import Tracker, check_tracking


def test_tracking_check_accepts_credentials_in_the_url() -> None:
    """An http tracking URI with user:password@ is checked against the host, not a host named 'user:...'."""
    server = http.server.HTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        check_tracking(f"http://user:s3cret@127.0.0.1:{server.server_address[1]}")  # answered (501): reachable
    finally:
        server.shutdown()


def test_study_params_written_by_a_concurrent_start_are_not_an_error(tmp_path: Path) -> None:
    """Two processes starting the same study both find the parent's params missing and both write them;
    the loser's write fails (params are immutable) and it re-reads instead of crashing (seen in review)."""
    from mlflow.exceptions import MlflowException

    study = optuna.create_study(study_name="twice")
    tracker = Tracker(TrackingSection(uri=f"sqlite:///{tmp_path / 'm.db'}"), study)
    real = tracker.client.log_batch
    raced: list[bool] = []

    def other_process_first(run_id: str, **kwargs: object) -> None:
        if not raced:
            raced.append(True)
            real(run_id, **kwargs)  # the other process's write lands first ...
            raise MlflowException("UNIQUE constraint failed: params.key")  # ... so ours fails
        real(run_id, **kwargs)

    tracker.client.log_batch = other_process_first  # type: ignore[method-assign]
    tracker.log_study_params({"seed": 0, "loop": "dual_loss"})
    assert raced and tracker.client.get_run(tracker.parent_id).data.params == {"seed": "0", "loop": "dual_loss"}
