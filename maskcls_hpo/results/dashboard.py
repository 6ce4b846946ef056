"""`dashboard`: optuna-dashboard on the project's storage and artifact store.

The storage URL is resolved like every other verb's (problem C7: no `--storage`, a path, or `sqlite:///path`
open the same database) and must already exist: a reader never creates an empty database. The schema is
checked first (C5), and every printed URL has its password masked (C6). The artifact store is the folder
that the workers upload to (:func:`maskcls_hpo.hpo.store.artifact_dir`), so each trial's confusion matrix,
per-class F1 and config are listed on its page.

The app is optuna-dashboard's own WSGI app (:func:`optuna_dashboard.wsgi`), served the way
``optuna-dashboard``'s command line serves it by default: the standard library's ``wsgiref`` with one
thread per request (a page load issues several API calls at once). It binds to 127.0.0.1 unless told
otherwise; the dashboard has no login, so a non-loopback host is a deliberate choice.

Read-only by default: optuna-dashboard lets any visitor delete a study, upload or delete artifacts, edit
notes, rename studies and tell trials, all through POST/PUT/PATCH/DELETE requests of its JSON API (every read
is a GET). :class:`ReadOnly` wraps the app and answers every request that is not GET or HEAD with HTTP 403
and ``{"reason": ...}`` (the field the dashboard's pages show in their error message), so nothing in the
storage or the artifact folder changes; `maskcls-hpo dashboard --allow-writes` serves the app unwrapped.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import socket
import socketserver
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import optuna

from maskcls_hpo.errors import DashboardError, StorageError
from maskcls_hpo.hpo.store import display_url, first_line, mask_password, open_storage, read_only_url
from maskcls_hpo.hpo.trial import open_artifact_store

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

__all__ = [
    "DashboardError",
    "Dashboard",
    "ReadOnly",
    "READ_METHODS",
    "dashboard_app",
    "serve_dashboard",
    "dashboard_address",
    "is_loopback",
    "check_host",
]

log = logging.getLogger(__name__)

READ_METHODS = frozenset({"GET", "HEAD"})
"""HTTP methods a read-only dashboard serves; optuna-dashboard's reads are all GET."""

READ_ONLY_REASON = (
    "this dashboard is read-only: nothing was changed; restart it with `maskcls-hpo dashboard --allow-writes` "
    "to delete studies, upload artifacts, edit notes or tell trials"
)


class ReadOnly:
    """WSGI middleware: pass GET/HEAD to `app`, answer every other method with 403 and a JSON reason.

    The refused request never reaches `app`, so neither the storage nor the artifact store sees it. Each
    refusal is logged at WARNING (method and path), so whoever runs the dashboard sees the attempt.

    Args:
        app: any WSGI application (here optuna-dashboard's Bottle app).
    """

    def __init__(self, app: WSGIApplication) -> None:
        self.app = app

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        method = str(environ.get("REQUEST_METHOD", "GET")).upper()
        if method in READ_METHODS:
            return self.app(environ, start_response)
        path = environ.get("PATH_INFO", "")
        log.warning("refused %s %s: the dashboard is read-only (--allow-writes to permit changes)", method, path)
        body = json.dumps({"reason": READ_ONLY_REASON}).encode("utf-8")
        start_response(
            "403 Forbidden",
            [("Content-Type", "application/json"), ("Content-Length", str(len(body))), ("Allow", "GET, HEAD")],
        )
        return [body]


@dataclass
class Dashboard:
    """A ready optuna-dashboard WSGI app and what it shows.

    Attributes:
        app: the WSGI application (a Bottle app).
        storage_url: the resolved storage URL (print it with :func:`maskcls_hpo.hpo.store.display_url`).
        studies: names of the studies in the storage when the app was made (new ones appear live).
        artifact_dir: folder of the ``FileSystemArtifactStore``.
        writable: False when every write is refused (:class:`ReadOnly`), True with `allow_writes`.
        study_id: Optuna's id of the study asked for (its page is ``/dashboard/studies/<id>``), else None.
    """

    app: WSGIApplication
    storage_url: str
    studies: list[str]
    artifact_dir: Path
    writable: bool = False
    study_id: int | None = None


class _ThreadingWSGIServer(socketserver.ThreadingMixIn, WSGIServer):
    """wsgiref with a thread per request (as ``optuna-dashboard --server wsgiref`` runs it)."""

    daemon_threads = True
    allow_reuse_address = True


class _ThreadingWSGIServer6(_ThreadingWSGIServer):
    """The same on an IPv6 address (a host with a colon, e.g. ``::1``)."""

    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    """No access log per request (the browser polls every few seconds); server errors are logged."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        if str(code).isdigit() and int(code) >= 500:
            log.warning("%s -> HTTP %s", mask_password(self.requestline), code)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        log.debug(mask_password(format % args))


def dashboard_app(
    storage_url: str,
    artifact_root: str | Path | None = None,
    *,
    allow_writes: bool = False,
    study: str | None = None,
) -> Dashboard:
    """Open the storage (no table creation), check it, and build optuna-dashboard's app.

    Args:
        storage_url: a resolved URL (:func:`maskcls_hpo.hpo.store.resolve_storage_url` with `must_exist`).
        artifact_root: artifact folder; default :func:`maskcls_hpo.hpo.store.artifact_dir` of the URL.
        allow_writes: serve optuna-dashboard's write requests (delete study, upload artifact, edit note, tell
            trial, ...); default False: they are answered 403 by :class:`ReadOnly`.
        study: a study that must exist (its id goes to :attr:`Dashboard.study_id`).

    Raises:
        StorageSchemaError: the database was made by another Optuna schema version (C5).
        StorageError: the database cannot be reached (message with the password masked).
        DashboardError: the database has no Optuna tables, or `study` is not in it (the studies named).
    """
    import optuna_dashboard  # lazy: optuna-dashboard (3 s)

    read_only = read_only_url(storage_url) != storage_url  # an SQLite file that cannot be written
    try:
        storage = open_storage(read_only_url(storage_url), create=False)
        studies = optuna.get_all_study_names(storage)  # summaries would load every trial
    except StorageError:
        raise
    except Exception as err:  # noqa: BLE001 - e.g. "no such table: studies" (Optuna's StorageInternalError)
        raise DashboardError(
            f"{display_url(storage_url)} is not an Optuna study database ({mask_password(first_line(err))}); "
            "pass the --storage that `launch` used"
        ) from None
    study_id = None
    if study is not None:
        if study not in studies:
            raise DashboardError(
                f"no study '{study}' in {display_url(storage_url)} (studies: {', '.join(studies) or 'none'}); "
                "pass one of them to --study or leave it out"
            )
        study_id = storage.get_study_id_from_name(study)
    store, folder = open_artifact_store(storage_url, artifact_root, create=not read_only)
    app = optuna_dashboard.wsgi(storage, artifact_store=store)
    if not allow_writes:
        app = ReadOnly(app)
    return Dashboard(
        app=app, storage_url=storage_url, studies=studies, artifact_dir=folder, writable=allow_writes, study_id=study_id
    )


def check_host(host: str) -> str:
    """`--host` as given, refused when it is no address to listen on (empty, blank, spaces or control characters).

    An empty host would make the server listen on every interface (``bind(("", port))``) although nobody
    asked for that: the dashboard has no login, so every interface must be asked for by name (``0.0.0.0``).

    Raises:
        DashboardError: one line naming `--host` and what to give.
    """
    if not host.strip() or any(c.isspace() or not c.isprintable() for c in host):
        raise DashboardError(
            f"--host {host!r} is not an address to listen on; give 127.0.0.1 (this machine only, the default) or "
            "0.0.0.0 (every interface: anyone who can reach this machine can open the dashboard, it has no login)"
        )
    return host


def is_loopback(host: str) -> bool:
    """True for `localhost` and loopback addresses (127.0.0.0/8, ::1): not reachable from other machines."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def dashboard_address(host: str, port: int, study_id: int | None = None) -> str:
    """The browser address of the dashboard, e.g. ``http://127.0.0.1:8080/dashboard``, or of one study's page
    (``.../dashboard/studies/<study_id>``).

    A wildcard bind (0.0.0.0 / ::) is shown as 127.0.0.1 / [::1], the address that works on this machine.
    """
    shown = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    if ":" in shown:
        shown = f"[{shown}]"
    page = f"/studies/{study_id}" if study_id is not None else ""
    return f"http://{shown}:{port}/dashboard{page}"


def serve_dashboard(
    dashboard: Dashboard, host: str = "127.0.0.1", port: int = 8080, on_ready: Callable[[str], None] | None = None
) -> None:
    """Serve the dashboard until interrupted (Ctrl-C raises KeyboardInterrupt out of this function).

    Args:
        on_ready: called with the browser address once the socket listens.

    Raises:
        DashboardError: `host` is empty or blank (:func:`check_host`).
        OSError: the address cannot be bound (port in use, unknown host).
    """
    check_host(host)
    server_class = _ThreadingWSGIServer6 if ":" in host else _ThreadingWSGIServer
    httpd = make_server(host, port, dashboard.app, server_class=server_class, handler_class=_QuietHandler)
    try:
        if on_ready is not None:
            on_ready(dashboard_address(host, httpd.server_port, dashboard.study_id))
        httpd.serve_forever(poll_interval=0.5)
    finally:
        httpd.server_close()
