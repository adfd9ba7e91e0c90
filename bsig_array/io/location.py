"""Where an artifact lives: a local path or an fsspec URL, with the storage options that reach it.

Every reader and writer takes ``str | os.PathLike | Location`` and calls :func:`as_location` once.
A local path (or ``file://`` URL) stays a :class:`pathlib.Path` underneath, so local code paths are
unchanged; any other URL (``s3://bucket/pool.zarr``, ``gs://…``, ``memory://…``) is reached through
fsspec, and Zarr stores through zarr's :class:`~zarr.storage.FsspecStore`.

Storage options (endpoint, credentials, …) come from ``--storage-options JSON|@FILE`` or
``BSIG_STORAGE_OPTIONS``: a JSON object applied to every remote URL, or one object per protocol
(``{"s3": {...}, "gs": {...}}``).  A :class:`Location` captures them when it is made, so a task
pickled to a dask.distributed worker reaches the store with the same options.  They never appear
in ``str()``, ``repr()``, messages or provenance records: a location prints as its URL without
user, password, query or fragment.

Object stores that stop answering: an ``s3://`` request that does not connect or answer within
``BSIG_STORAGE_TIMEOUT`` seconds is retried up to ``BSIG_STORAGE_RETRIES`` times (s3fs's retry
loop; botocore's own retries are off, so the two do not multiply), with one ``bsig: warning:`` line
when the first retry starts; the last failure is one ``bsig: error:`` line naming the store, the
timeout and the settings to raise (:func:`storage_failure`).  Explicit ``config_kwargs`` in the
storage options win over these settings.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit, urlunsplit

from bsig_array.errors import BsigWarning, InputError, OptionError
from bsig_array.runtime.boundary import STORAGE_CLIENTS, storage_failure

#: Environment variable with the default storage options (JSON, or @FILE holding JSON).
STORAGE_OPTIONS_ENV = "BSIG_STORAGE_OPTIONS"
#: Protocols fsspec treats as the local file system.
LOCAL_PROTOCOLS = ("file", "local")

#: Object stores whose URLs start with a bucket (container) name.
BUCKET_PROTOCOLS = ("s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl")

_options: dict[str, Any] | None = None  # set by the CLI; None: read the environment when first needed


def is_url(text: str | os.PathLike) -> bool:
    """Whether ``text`` is a URL with a protocol (``s3://…``, ``file://…``), not a plain path."""
    return isinstance(text, str) and "://" in text and text.split("://", 1)[0].replace("+", "").isalnum()


def redact_url(url: str) -> str:
    """``url`` without user, password, query or fragment (what messages and records may show)."""
    if not is_url(url):
        return url
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def parse_storage_options(text: str, source: str = "--storage-options") -> dict[str, Any]:
    """The JSON object in ``text`` (or in the file ``@PATH``), checked; one-line :class:`OptionError` else."""
    raw = text.strip()
    if raw.startswith("@"):
        try:
            raw = Path(raw[1:]).expanduser().read_text()
        except OSError as exc:
            raise OptionError(f"{source}: cannot read {raw[1:]} ({exc.strerror}); pass JSON or @FILE with JSON") from None
    try:
        value = json.loads(raw) if raw else {}
    except json.JSONDecodeError as exc:
        # Never echo the text: it may hold credentials.
        raise OptionError(f"{source} is not valid JSON ({exc.msg} at character {exc.pos}); "
                          'pass e.g. \'{"endpoint_url": "http://127.0.0.1:9000"}\' or @FILE') from None
    if not isinstance(value, dict):
        raise OptionError(f"{source} must be a JSON object, got {type(value).__name__}; "
                          'pass e.g. \'{"anon": true}\' or @FILE')
    return value


def set_storage_options(options: str | Mapping[str, Any] | None, source: str = "--storage-options") -> None:
    """Set the process-wide storage options (``None``: back to ``BSIG_STORAGE_OPTIONS``)."""
    global _options
    if options is None:
        _options = None
    elif isinstance(options, str):
        _options = parse_storage_options(options, source)
    else:
        _options = dict(options)
    _fs.cache_clear()


def storage_options(protocol: str) -> dict[str, Any]:
    """The storage options for URLs of ``protocol`` (a per-protocol entry wins over the flat object)."""
    global _options
    if _options is None:
        env = os.environ.get(STORAGE_OPTIONS_ENV, "")
        _options = parse_storage_options(env, STORAGE_OPTIONS_ENV) if env.strip() else {}
    given = _options
    nested = {k: v for k, v in given.items() if isinstance(v, dict) and k.isalnum() and _is_protocol(k)}
    if protocol in nested:
        return dict(nested[protocol])
    return {k: v for k, v in given.items() if k not in nested}


def _is_protocol(name: str) -> bool:
    import fsspec

    return name in fsspec.available_protocols()


@lru_cache(maxsize=32)
def _fs(protocol: str, options_json: str) -> Any:
    import fsspec

    if not _is_protocol(protocol):
        raise InputError(f"unknown URL protocol {protocol}://; use a local path or a protocol fsspec knows "
                         "(s3://, gs://, az://, memory://, file://, …)")
    try:
        return _tuned(protocol, fsspec.filesystem(protocol, **json.loads(options_json)))
    except ImportError as exc:
        raise InputError(f"{protocol}:// URLs need an fsspec backend that is not installed ({exc}); "
                         f"pip install the package fsspec names for {protocol} (s3fs for s3://, gcsfs for gs://)") from None
    except (ValueError, TypeError) as exc:
        raise OptionError(f"storage options for {protocol}:// are not accepted ({_one_line(exc, json.loads(options_json))}); "
                          "fix --storage-options") from None


def remove_path(path: Path) -> None:
    """Delete a file or a directory tree if it exists."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


@dataclass(frozen=True)
class Location:
    """A local path or a remote URL, with the storage options that reach it.

    Build one with :func:`as_location`.  ``str()`` is the URL without credentials.
    """

    url: str
    options: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    # ------------------------------------------------------------------------------- identity

    @property
    def protocol(self) -> str:
        return self.url.split("://", 1)[0].lower() if is_url(self.url) else "file"

    @property
    def is_remote(self) -> bool:
        return self.protocol not in LOCAL_PROTOCOLS

    @property
    def is_local(self) -> bool:
        return not self.is_remote

    @property
    def path(self) -> Path:
        """The local path (a remote location has none: ``TypeError``, a bug in the caller)."""
        if self.is_remote:
            raise TypeError(f"{self} is not a local path")
        return Path(self.url.split("://", 1)[1]) if is_url(self.url) else Path(self.url)

    @property
    def name(self) -> str:
        return self.url.rstrip("/").rsplit("/", 1)[-1]

    @property
    def suffix(self) -> str:
        return Path(self.name).suffix

    def __str__(self) -> str:
        return str(self.path) if self.is_local else redact_url(self.url)

    def __repr__(self) -> str:
        return f"Location({str(self)!r})"

    def child(self, *names: str) -> Location:
        """The location ``names`` below this one (same options)."""
        if self.is_local:
            return Location(str(self.path.joinpath(*names)), self.options)
        return Location("/".join([self.url.rstrip("/"), *names]), self.options)

    def __truediv__(self, other: str | os.PathLike) -> Location:
        """``loc / "a/b"``: like :class:`pathlib.Path`, the location ``a/b`` below this one."""
        return self.child(*Path(other).parts)

    @property
    def parent(self) -> Location:
        if self.is_local:
            return Location(str(self.path.parent), self.options)
        head, _, tail = self.url.rstrip("/").rpartition("/")
        return Location(head if head and not head.endswith(":/") else self.url, self.options)

    def key(self) -> str:
        """Comparable identity (redacted URL without trailing slash; a resolved absolute path)."""
        if self.is_local:
            return str(Path(os.path.abspath(os.path.expanduser(self.path))).resolve())
        return redact_url(self.url).rstrip("/")

    # --------------------------------------------------------------------------- file system

    @property
    def fs(self) -> Any:
        """The fsspec file system (cached per protocol and options)."""
        return _fs(self.protocol, json.dumps(dict(self.options), sort_keys=True, default=str))

    @property
    def fs_path(self) -> str:
        """This location as a path of :attr:`fs` (no protocol)."""
        if self.is_local:
            return str(self.path)
        return self.fs._strip_protocol(self.url)

    def exists(self) -> bool:
        if self.is_local:
            return self.path.exists()
        self.fs.invalidate_cache(self.fs_path)  # another process (a worker, a killed run) may have written
        try:  # info, not exists: fsspec's exists() answers False for an unreachable endpoint too
            self._remote(self.fs.info, self.fs_path)
        except FileNotFoundError:
            return False
        return True

    def is_dir(self) -> bool:
        if self.is_local:
            return self.path.is_dir()
        self.fs.invalidate_cache(self.fs_path)
        return bool(self._remote(self.fs.isdir, self.fs_path))

    def names(self) -> set[str]:
        """Names of the entries directly below this location (empty when there are none)."""
        if self.is_local:
            return {p.name for p in self.path.iterdir()} if self.path.is_dir() else set()
        try:
            entries = self._remote(self.fs.ls, self.fs_path, detail=False, refresh=True)
        except FileNotFoundError:
            return set()
        base = self.fs_path.rstrip("/")
        return {str(e).rstrip("/").rsplit("/", 1)[-1] for e in entries if str(e).rstrip("/") != base}

    def stamp(self) -> str:
        """A token that changes when the file here is rewritten (mtime; on object stores ETag/mtime)."""
        if self.is_local:
            return str(os.stat(self.path).st_mtime_ns)
        info = self._remote(self.fs.info, self.fs_path)
        return str(info.get("ETag") or info.get("LastModified") or info.get("mtime") or info.get("created") or info.get("size"))

    def open(self, mode: str = "rb", **kwargs: Any) -> IO[Any]:
        if self.is_local:
            return open(self.path, mode, **kwargs)  # noqa: SIM115  # the caller closes it
        return self._remote(self.fs.open, self.fs_path, mode, **kwargs)

    def read_bytes(self) -> bytes:
        if self.is_local:
            return self.path.read_bytes()
        return bytes(self._remote(self.fs.cat_file, self.fs_path))

    def read_text(self) -> str:
        return self.read_bytes().decode()

    def remove(self) -> None:
        """Delete whatever is here (a file or a whole prefix); nothing there is fine."""
        if self.is_local:
            remove_path(self.path)
            return
        try:
            self._remote(self.fs.rm, self.fs_path, recursive=True)
        except FileNotFoundError:
            pass

    def walk_files(self) -> Iterator[str]:
        """Relative keys of every file below this location."""
        if self.is_local:
            root = self.path
            for p in sorted(root.rglob("*")):
                if p.is_file():
                    yield p.relative_to(root).as_posix()
            return
        base = self.fs_path.rstrip("/") + "/"
        for item in sorted(self._remote(self.fs.find, self.fs_path)):
            yield str(item)[len(base):]

    # ---------------------------------------------------------------------------------- zarr

    def zarr_store(self, *, read_only: bool = False) -> Any:
        """What zarr and xarray open: the local path, or an :class:`~zarr.storage.FsspecStore`."""
        if self.is_local:
            return self.path
        from zarr.storage import FsspecStore

        store = self._remote(FsspecStore.from_url, self.url, storage_options=dict(self.options) or None,
                             read_only=read_only)
        _tuned(self.protocol, store.fs)
        return store

    def _remote(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Call ``fn`` on the remote store; a refusal of the store is one :class:`InputError`."""
        try:
            return fn(*args, **kwargs)
        except (FileNotFoundError, InputError, OptionError):
            raise
        except PermissionError as exc:
            raise InputError(f"{self}: access denied ({exc}); check the credentials in --storage-options") from None
        except Exception as exc:  # botocore/aiohttp raise many types for an unreachable or refusing endpoint
            failed = storage_failure(exc, str(self), _one_line(exc, self.options))
            if failed is not None:  # stopped answering: timed out or lost the connection, after the retries
                raise failed from None
            if type(exc).__module__.split(".")[0] in _CLIENT_PACKAGES:
                raise InputError(f"{self}: the object store refused or cannot be reached ({type(exc).__name__}: "
                                 f"{_one_line(exc, self.options)}); check the URL, the endpoint and the credentials") from None
            if isinstance(exc, (TypeError, ValueError)) and _raised_in_client(exc):
                # The client is built lazily, at the first request: a bad option value or name surfaces here.
                raise OptionError(f"storage options for {self.protocol}:// are not accepted by the storage client "
                                  f"({type(exc).__name__}: {_one_line(exc, self.options)}); fix --storage-options "
                                  f"or {STORAGE_OPTIONS_ENV}") from None
            raise


#: Packages of the storage clients behind fsspec: their exceptions are refusals of the store.
_CLIENT_PACKAGES = STORAGE_CLIENTS

#: Protocols served by s3fs (botocore): the ones the timeout and retry settings apply to.
S3_PROTOCOLS = ("s3", "s3a")


def client_options(protocol: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """``options`` with the timeout settings (``BSIG_STORAGE_TIMEOUT``) as botocore ``config_kwargs``.

    Only for ``s3://``; an explicit ``config_kwargs`` entry wins.  Botocore's own retries are off:
    s3fs's retry loop (:func:`_tuned`) retries a whole read, a stalled body included.
    """
    if protocol not in S3_PROTOCOLS:
        return dict(options)
    from bsig_array.runtime.defaults import DEFAULTS

    config = dict(options.get("config_kwargs") or {})
    config.setdefault("connect_timeout", DEFAULTS.storage_timeout)
    config.setdefault("read_timeout", DEFAULTS.storage_timeout)
    config.setdefault("retries", {"total_max_attempts": 1})
    return {**options, "config_kwargs": config}


def _tuned(protocol: str, fs: Any) -> Any:
    """``fs`` retrying a failed request ``BSIG_STORAGE_RETRIES`` times, with a warning (s3fs only)."""
    if protocol in S3_PROTOCOLS and hasattr(fs, "retries"):
        from bsig_array.runtime.defaults import DEFAULTS

        fs.retries = DEFAULTS.storage_retries + 1  # attempts, the first included
        _RetryWarning.install()
    return fs


class _RetryWarning(logging.Filter):
    """On the ``s3fs`` logger: a retried request becomes a ``bsig: warning:`` line (once per store).

    s3fs logs each failed attempt at DEBUG; the logger is lowered to DEBUG so this filter sees them,
    and the filter drops every record below the level the logger had, so nothing else changes.
    """

    def __init__(self, level: int) -> None:
        super().__init__()
        self.level = level

    @classmethod
    def install(cls) -> None:
        logger = logging.getLogger("s3fs")
        if any(isinstance(f, cls) for f in logger.filters):
            return
        logger.addFilter(cls(logger.getEffectiveLevel()))
        logger.setLevel(logging.DEBUG)

    def filter(self, record: logging.LogRecord) -> bool:
        if str(record.msg).startswith("Retryable error") and record.args:
            try:
                self.warn(record.args[0] if isinstance(record.args, tuple) else record.args)
            except Exception:  # noqa: S110  # never break the client's retry loop over a message
                pass
        return record.levelno >= self.level

    @staticmethod
    def warn(exc: Any) -> None:
        from bsig_array.runtime.defaults import DEFAULTS

        found = re.search(r"https?://[^/\s\"']+", str(exc))
        store = f"the object store at {found.group(0)}" if found else "the object store"
        # No key or attempt in the text: the warnings registry prints it once, not once per chunk.
        warnings.warn(
            f"{store} did not answer ({type(exc).__name__}); retrying, up to BSIG_STORAGE_RETRIES="
            f"{DEFAULTS.storage_retries} times, each waiting up to BSIG_STORAGE_TIMEOUT={DEFAULTS.storage_timeout:g}s",
            BsigWarning, stacklevel=2,
        )


def _raised_in_client(exc: BaseException) -> bool:
    """Whether ``exc`` was raised inside a storage client (its innermost frame is in one)."""
    tb = exc.__traceback__
    name = ""
    while tb is not None:
        name = str(tb.tb_frame.f_globals.get("__name__", ""))
        tb = tb.tb_next
    return name.split(".")[0] in _CLIENT_PACKAGES


def _one_line(exc: BaseException, options: Mapping[str, Any]) -> str:
    """``exc`` as one short line, with every string storage option (a key, a secret, a token) masked."""
    text = " ".join(str(exc).split())
    for value in _strings(options):
        if len(value) >= 4:
            text = text.replace(value, "***")
    return text[:300]


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _strings(item)


def as_location(where: str | os.PathLike | Location) -> Location:
    """``where`` as a :class:`Location`, with the current storage options for its protocol."""
    if isinstance(where, Location):
        return where
    text = os.fspath(where)
    if not is_url(text):
        return Location(os.path.expanduser(text))
    parts = urlsplit(text)
    if parts.username is not None or parts.password is not None:
        # Never carried along: it would reach error messages of the storage client.
        raise OptionError(f"{redact_url(text)}: put credentials in --storage-options or BSIG_STORAGE_OPTIONS, "
                          "not in the URL")
    protocol = text.split("://", 1)[0].lower()
    if protocol in BUCKET_PROTOCOLS and not parts.netloc:
        raise OptionError(f"{redact_url(text)} names no bucket; write {protocol}://BUCKET/PATH")
    if protocol in LOCAL_PROTOCOLS:
        return Location(text.split("://", 1)[1])
    return Location(text, client_options(protocol, storage_options(protocol)))


@contextmanager
def local_copy(where: str | os.PathLike | Location | None) -> Iterator[str | None]:
    """A local path holding ``where``: itself when local, else a temporary download (file or folder).

    For readers of small inputs that only take local paths (leaderboard tables, lm-eval results,
    metadata CSVs).  An :class:`~bsig_array.errors.InputError` raised inside names the URL, not the
    temporary copy.  ``None`` passes through.
    """
    if where is None:
        yield None
        return
    loc = as_location(where)
    if loc.is_local:
        yield str(loc.path)
        return
    if not loc.exists():
        raise InputError(f"{loc} does not exist; check the URL and --storage-options")
    with tempfile.TemporaryDirectory(prefix="bsig-fetch-") as tmp:
        dest = Path(tmp) / (loc.name or "input")
        loc._remote(loc.fs.get, loc.fs_path, str(dest), recursive=loc.is_dir())
        try:
            yield str(dest)
        except InputError as exc:
            raise InputError(str(exc).replace(str(dest), str(loc))) from None
