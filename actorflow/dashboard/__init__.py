"""The web dashboard (the `dashboard` extra): runs, timelines, what each run waits on, and actions.

`actorflow dashboard --data-dir DIR` serves a data directory beside the engine that holds it;
`engine.dashboard()` serves an open engine from inside the service.
"""

from ._app import EngineActions, InboxActions, create_app
from ._model import Census, RunFilter, RunPage, list_runs
from ._server import Dashboard, serve_data_dir, serve_engine
from ._timeline import Timeline, build_timeline

__all__ = [
    "Dashboard",
    "serve_data_dir",
    "serve_engine",
    "create_app",
    "EngineActions",
    "InboxActions",
    "RunFilter",
    "RunPage",
    "Census",
    "list_runs",
    "Timeline",
    "build_timeline",
]
