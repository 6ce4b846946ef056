"""Where a study lives: one resolution of `--storage` (or nothing) into a SQLAlchemy URL (problem C7).

`launch`, `worker`, `status`, `export`, `dashboard` and `report` all resolve the storage here, so they open the
same study, and every message says where the URL came from.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from maskcls_hpo.errors import StorageError
from maskcls_hpo.hpo.store._secrets import (
    _QUERY_PASSWORD_KEYS,
    _remember_secret,
    display_url,
    first_line,
    mask_password,
)

DEFAULT_STORAGE = "sqlite:///storage/maskcls_hpo.db"


ENV_STORAGE = "MASKCLS_HPO_STORAGE"


ENV_OPTUNA_STORAGE = "OPTUNA_STORAGE"  # Optuna's own CLI reads it (`optuna trials` without --storage)


ENV_PASSWORD_FILE = "MASKCLS_HPO_PASSWORD_FILE"


# `key=value` pairs separated by blanks, values bare or in single quotes (libpq's "Keyword/Value Connection Strings")
_KEYWORD_STRING = re.compile(r"\s*(?:\w+\s*=\s*(?:'(?:[^'\\]|\\.)*'|[^\s']*)\s*)+")

# keywords that make a `key=value` text a libpq connection string rather than an odd SQLite file name
_LIBPQ_KEYS = frozenset({"host", "hostaddr", "port", "dbname", "user", "password", "passfile", "service", "sslmode"})


def is_keyword_string(raw: str) -> bool:
    """True when `raw` is written as a libpq keyword/value string (``host=h user=u dbname=d``), not a URL or path.

    It starts with ``key=`` and either its first key is libpq's (``host``, ``user``, ``dbname``, ...), a key
    holds ``pass``, or it is several ``key=value`` pairs: so a typo in a key or an unclosed quote is refused as a
    keyword string (its password masked) rather than taken for an SQLite file name; ``a=b.db`` stays a path.
    """
    keys = [k.lower() for k in re.findall(r"(?:^|\s)(\w+)\s*=", raw.strip())]
    if "://" in raw or not keys or not re.match(r"\s*\w+\s*=", raw):
        return False
    several = len(keys) > 1 and _KEYWORD_STRING.fullmatch(raw) is not None
    return keys[0] in _LIBPQ_KEYS or any("pass" in k for k in keys) or several


def keyword_string_url(raw: str, where: str) -> str:
    """A libpq keyword/value string (``host=h port=5432 user=u password=pw dbname=d``) as a SQLAlchemy URL.

    Parsed by libpq itself (psycopg's ``conninfo_to_dict``); ``user``, ``password``, ``host``,
    ``port`` and ``dbname`` become the URL's parts, every other keyword (``sslmode``, a socket folder as
    ``host``, several hosts) its query string, which psycopg hands back to libpq unchanged. The password is
    remembered as a secret, so no message shows it.

    Raises:
        StorageError: libpq cannot parse it (an unknown keyword, an unclosed quote); the message masks the
            password.
    """
    import psycopg  # lazy: start-up of the CLI (only a libpq keyword string needs it)

    for password in re.findall(r"pass(?:word)?\s*=\s*('(?:[^'\\]|\\.)*'|'.*|[^\s']*)", raw, flags=re.I):
        _remember_secret(password.strip("'"))
    try:
        parts: dict[str, Any] = psycopg.conninfo.conninfo_to_dict(raw)
    except psycopg.Error as err:
        raise StorageError(
            f"cannot parse storage {mask_password(raw)!r} ({where}) as a libpq keyword string: "
            f"{mask_password(first_line(err))}; use host=HOST user=USER dbname=DB (the password in --password-file "
            "or PGPASSWORD), or postgresql+psycopg://USER@HOST:PORT/DB"
        ) from None
    _remember_secret(parts.get("password"))
    host, port = parts.pop("host", None), parts.pop("port", None)
    simple = host is not None and "," not in host and not host.startswith("/")
    if port is not None and (not simple or not str(port).isdigit()):
        parts["port"] = port  # several hosts, or a socket folder: libpq reads them from the query string
        port = None
    if host is not None and not simple:
        parts["host"] = host
        host = None
    url = URL.create(
        "postgresql+psycopg",
        username=parts.pop("user", None),
        password=parts.pop("password", None),
        host=host,
        port=int(port) if port is not None else None,
        database=parts.pop("dbname", None),
        query={k: str(v) for k, v in sorted(parts.items())},
    )
    return url.render_as_string(hide_password=False)


def _read_password_file(path: str | os.PathLike[str]) -> str:
    p = Path(path).expanduser()
    try:
        return p.read_text(encoding="utf-8").strip()
    except OSError as err:
        raise StorageError(f"cannot read the password file {p}: {err.strerror}") from None


def storage_source(value: str | os.PathLike[str] | None = None, given_as: str = "--storage") -> tuple[str, str]:
    """Which storage a verb uses and where that came from, before any parsing.

    Order: `value` (the option), env ``MASKCLS_HPO_STORAGE``, env ``OPTUNA_STORAGE`` (the variable Optuna's
    own CLI reads), else :data:`DEFAULT_STORAGE`. An empty variable counts as unset.

    Args:
        given_as: how `value` was given, for messages: ``--storage`` (the CLI) or ``storage=`` (the API).

    Returns:
        (raw value, source): source is `given_as`, ``env MASKCLS_HPO_STORAGE``, ``env OPTUNA_STORAGE`` or
        ``default``.
    """
    if value is not None:
        return os.fspath(value), given_as
    for env in (ENV_STORAGE, ENV_OPTUNA_STORAGE):
        raw = os.environ.get(env, "").strip()
        if raw:
            return raw, f"env {env}"
    return DEFAULT_STORAGE, "default"


@dataclass(frozen=True)
class ResolvedStorage:
    """A resolved storage: the full SQLAlchemy `url` (password included: print :attr:`shown`) and its `source`.

    `source` is one of ``--storage`` (or the API's ``storage=``), ``env MASKCLS_HPO_STORAGE``,
    ``env OPTUNA_STORAGE``, ``default``.
    """

    url: str
    source: str

    @property
    def shown(self) -> str:
        """The URL, password masked, and where it came from: ``sqlite:///x.db (from env OPTUNA_STORAGE)``."""
        return f"{display_url(self.url)} ({describe_source(self.source)})"


def describe_source(source: str) -> str:
    """``from --storage``, ``from env OPTUNA_STORAGE``, ... or ``default`` (the words messages use)."""
    return "default" if source == "default" else f"from {source}"


def resolve_storage(
    value: str | os.PathLike[str] | None = None,
    *,
    must_exist: bool = False,
    password_file: str | os.PathLike[str] | None = None,
    given_as: str = "--storage",
) -> ResolvedStorage:
    """Turn `--storage` (or nothing) into a full SQLAlchemy URL and say where it came from.

    Order: `value`, else env `MASKCLS_HPO_STORAGE`, else env `OPTUNA_STORAGE`, else
    ``sqlite:///storage/maskcls_hpo.db`` (:func:`storage_source`). A value without `://` is a path to an
    SQLite file. `postgres://` and `postgresql://` become `postgresql+psycopg://`. A PostgreSQL URL without a
    password takes one from `password_file` (or env `MASKCLS_HPO_PASSWORD_FILE`); otherwise libpq itself
    reads `PGPASSWORD` / `~/.pgpass`, so the password need not be on the command line (where `ps` would
    show it). Every error names the source (``from env OPTUNA_STORAGE``, ...).

    Args:
        must_exist: for SQLite, refuse a database file that does not exist (readers such as `status`,
            `export`, `dashboard` must never create an empty database).
        given_as: the name of `value` in messages (``--storage`` for the CLI, ``storage=`` for the API).

    Raises:
        StorageError: unparsable URL or keyword string, unsupported dialect, missing SQLite file when
            `must_exist`.
    """
    raw, source = storage_source(value, given_as)
    where = describe_source(source)
    raw = raw.strip()
    if is_keyword_string(raw):
        raw = keyword_string_url(raw, where)
    elif "://" not in raw:
        raw = "sqlite:///" + raw
    try:
        url = make_url(raw)
    except (ArgumentError, ValueError) as err:
        why = "the port must be a number" if isinstance(err, ValueError) and "int()" in str(err) else "unparsable"
        raise StorageError(
            f"cannot parse storage URL {mask_password(raw)!r} ({where}; {why}): use sqlite:///PATH, a path to an "
            "SQLite file, or postgresql+psycopg://USER@HOST:PORT/DB"
        ) from None
    _remember_secret(url.password if isinstance(url.password, str) else None)
    for key in _QUERY_PASSWORD_KEYS:
        query_value = url.query.get(key)
        _remember_secret(query_value if isinstance(query_value, str) else None)
    backend = url.get_backend_name()
    if backend in ("postgres", "postgresql"):
        url = url.set(drivername="postgresql+psycopg")
        if url.password is None:
            pw_file = password_file or os.environ.get(ENV_PASSWORD_FILE)
            if pw_file:
                password = _read_password_file(pw_file)
                _remember_secret(password)
                url = url.set(password=password)
    elif backend == "sqlite":
        db = url.database or ""
        if db in ("", ":memory:"):
            raise StorageError(
                f"storage {display_url(url)!r} ({where}) is an in-memory database: workers could not share it; "
                "give a file, e.g. sqlite:///storage/maskcls_hpo.db"
            )
        path = Path(db)
        if path.is_dir():
            found = sorted(str(f) for pattern in ("*.db", "*.sqlite", "*.sqlite3") for f in path.glob(pattern))
            hint = f"the database files in it: {', '.join(found)}" if found else "e.g. sqlite:///storage/maskcls_hpo.db"
            raise StorageError(
                f"storage {path} ({where} {display_url(url)!r}) is a folder, not an SQLite database file; "
                f"pass the file, {hint}"
            )
        if must_exist and not path.is_file():
            raise StorageError(
                f"no study database at {path} ({where} {display_url(url)!r}); "
                "run `maskcls-hpo launch SWEEP` first or pass the right --storage"
            )
    else:  # NOTE MySQL would need a driver the project does not install; the design names SQLite and PostgreSQL
        raise StorageError(
            f"unsupported storage {display_url(url)!r} ({where}): use sqlite:///PATH or "
            "postgresql+psycopg://USER@HOST/DB"
        )
    return ResolvedStorage(url=url.render_as_string(hide_password=False), source=source)


def resolve_storage_url(
    value: str | os.PathLike[str] | None = None,
    *,
    must_exist: bool = False,
    password_file: str | os.PathLike[str] | None = None,
    given_as: str = "--storage",
) -> str:
    """:func:`resolve_storage` without the source: the full SQLAlchemy URL (str, password included).

    Raises:
        StorageError: see :func:`resolve_storage`.
    """
    return resolve_storage(value, must_exist=must_exist, password_file=password_file, given_as=given_as).url


def storage_folder(url: str, name: str, root: str | os.PathLike[str] | None = None) -> Path:
    """Folder `name` (artifacts, checkpoints, logs) that belongs to a storage.

    SQLite: `<database folder>/<name>`, so two studies of the same name in different database files never
    share checkpoints; otherwise `root` or `storage/<name>` (on several machines: a shared mount).
    """
    if root is not None:
        return Path(root)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return Path(parsed.database or ".").resolve().parent / name
    return Path("storage") / name


def artifact_dir(url: str, root: str | os.PathLike[str] | None = None) -> Path:
    """Folder of the study artifacts (Optuna ``FileSystemArtifactStore``): :func:`storage_folder` "artifacts".

    Every worker and the dashboard must see the same folder.
    """
    return storage_folder(url, "artifacts", root)
