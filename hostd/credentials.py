"""The credential store: the proxy's auth directory of ``*.json`` files (``host.auth.*``).

Reads never leave the directory: a symlink is followed only when it resolves inside it,
and the file actually opened is checked again after ``open`` (``/proc/self/fd``) so a
swap between the check and the open is caught. Each scan lists the directory and opens
every ``*.json`` entry, but reads and parses only the files that changed since the last
scan (keyed by device, inode, size, mtime and ctime); a file larger than the store's byte
limit is never read at all (one warning per file version).

A save never loses data and never touches anything outside the directory: the bytes go
to a fresh temp file created in the directory itself (``O_CREAT|O_EXCL|O_NOFOLLOW``,
mode 0600, ``fchmod`` on the descriptor, never ``chmod`` by path), are fsynced, and the
temp file is renamed over the target (a symlink there is replaced, never written
through); then the directory is fsynced. A crash leaves the old file or the new one.

Everything here is blocking and meant to run in a worker thread; the work per call is
bounded by the byte limit. Nothing here knows the wire format; errors carry the Go
texts of PROTOCOL.md §8.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import secrets
import stat
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgspec

from hostd.gocompat import go_lower, go_trim, overflows_float64

__all__ = [
    "DEFAULT_MAX_FILE_BYTES",
    "Credential",
    "CredentialError",
    "CredentialStore",
    "Meta",
    "auth_index",
    "go_error",
    "read_meta",
]

DEFAULT_MAX_FILE_BYTES = 1 << 20

_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_TEMP_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


class CredentialError(Exception):
    """A failed credential operation; the message is the Go text plugins match on."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


# The metadata the proxy reads from a credential -----------------------------------------


class Meta(msgspec.Struct):
    """The keys of a credential the entry uses; every other key is skipped unread (but
    checked to be valid JSON), so a large credential costs one pass and no objects."""

    type: Any = None
    email: Any = None
    project_id: Any = None
    note: Any = None
    disabled: Any = None
    priority: Any = msgspec.UNSET
    websockets: Any = None
    last_refresh: Any = None
    weight: Any = msgspec.UNSET


_meta_decoder = msgspec.json.Decoder(Meta)


def read_meta(data: bytes) -> tuple[Meta | None, str]:
    """The credential's metadata, or None and why ``data`` is not a JSON object as Go's
    decoder reads one (invalid, not an object, ``null``, a number beyond ``float64``)."""
    try:
        meta = _meta_decoder.decode(data)
    except msgspec.DecodeError as e:
        return None, str(e)
    except RecursionError:
        return None, "nesting too deep"
    if overflows_float64(data):
        return None, "number out of range"
    return meta, ""


def auth_index(type_: str, path: str | bytes) -> str:
    """First 8 bytes of SHA-256 of ``<type>:<absolute clean path>``, as lowercase hex.

    ``type_`` is the file's ``type`` field as read; it is trimmed and lowercased here,
    and ``unknown`` stands in for an empty one. The path's bytes are hashed as they are
    on disk (a name that is not UTF-8 hashes as the proxy hashes it).
    """
    kind = go_lower(go_trim(type_)) or "unknown"
    raw = path if isinstance(path, bytes) else os.fsencode(path)
    return hashlib.sha256(kind.encode("utf-8", "surrogateescape") + b":" + raw).digest()[:8].hex()


@dataclass(frozen=True, slots=True)
class Credential:
    """One ``*.json`` entry of the directory as it was when scanned.

    Only the metadata is kept; :meth:`CredentialStore.read` reads the bytes when a
    caller needs them (``host.auth.get``).
    """

    name: str  # shown as valid UTF-8 (undecodable bytes become U+FFFD, as Go writes them)
    path: str
    auth_index: str
    file: str  # the name as the directory holds it (undecodable bytes kept)
    size: int = 0
    mtime_ns: int | None = None
    read_error: OSError | None = None  # the file could not be opened or read
    meta: Meta | None = None  # None when the file is not a JSON object
    problem: str = ""  # why ``meta`` is None

    @property
    def listed(self) -> bool:
        """A credential the proxy's manager lists: a JSON object with a non-empty type."""
        return self.meta is not None and bool(self.type)

    @property
    def type(self) -> str:
        """The ``type`` as the manager keeps it: trimmed and lowercased."""
        value = self.meta.type if self.meta is not None else None
        return go_lower(go_trim(value)) if isinstance(value, str) else ""


# The store --------------------------------------------------------------------------


def go_error(op: str, path: str, e: OSError) -> str:
    """An ``*os.PathError`` text: ``open /dir: no such file or directory``."""
    reason = e.strerror or str(e)
    return f"{op} {path}: {reason[:1].lower()}{reason[1:]}"


def _shown(s: str) -> str:
    """A name from disk as Go's encoder writes it: undecodable bytes become U+FFFD."""
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return os.fsencode(s).decode("utf-8", "replace")
    return s


def _fd_path(fd: int) -> str | None:
    """What ``fd`` is open on, from /proc; None where /proc is not mounted."""
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return None


def _inside(directory: str, path: str) -> bool:
    prefix = directory if directory.endswith("/") else directory + "/"
    return path.startswith(prefix) and len(path) > len(prefix)


def _read_all(fd: int, size: int) -> bytes:
    chunks: list[bytes] = []
    while True:
        chunk = os.read(fd, max(size, 65536))
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


class _Outside(Exception):
    """The entry resolves outside the directory: it is not a credential."""


_Key = tuple[int, int, int, int, int]  # st_dev, st_ino, st_size, st_mtime_ns, st_ctime_ns
Warn = Callable[..., None]


class CredentialStore:
    """The auth directory ``dir`` (absolute, lexically clean). Blocking: use a worker thread.

    Reads take ``max_bytes`` (the ``auth.max_file_bytes`` limit) and ``warn``, which
    receives ``warn(message, **fields)`` once per version of a file over the limit.
    """

    def __init__(self, dir: str) -> None:
        self.dir = os.path.abspath(dir)
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[_Key, Credential]] = {}  # by name, as parsed
        self._too_large: set[tuple[str, _Key]] = set()  # file versions already warned about

    def path_of(self, name: str) -> str:
        return os.path.join(self.dir, name)

    # Reading -----------------------------------------------------------------------

    def scan(self, max_bytes: int = DEFAULT_MAX_FILE_BYTES, warn: Warn | None = None) -> list[Credential]:
        """Every ``*.json`` file, sorted by lowercased name, then by exact name.

        Files over ``max_bytes`` are left out. ``listed`` tells which ones the proxy's
        credential manager would list.
        """
        try:
            dfd = os.open(self.dir, _DIR_FLAGS)
        except OSError as e:
            raise CredentialError(f"failed to read auth dir: {go_error('open', self.dir, e)}") from None
        try:
            real = _fd_path(dfd) or os.path.realpath(self.dir)
            try:
                names = os.listdir(dfd)
            except OSError as e:
                raise CredentialError(f"failed to read auth dir: {go_error('readdirent', self.dir, e)}") from None
            found = []
            seen = set()
            for name in names:
                if not go_lower(name).endswith(".json"):
                    continue
                seen.add(name)
                credential = self._load(dfd, real, name, max_bytes, warn)
                if credential is not None:
                    found.append(credential)
        finally:
            os.close(dfd)
        with self._lock:
            for name in [n for n in self._cache if n not in seen]:
                del self._cache[name]
            self._too_large = {k for k in self._too_large if k[0] in seen}
        found.sort(key=lambda c: (go_lower(c.name), c.name))
        return found

    def read(self, credential: Credential, max_bytes: int = DEFAULT_MAX_FILE_BYTES) -> bytes:
        """The bytes of ``credential``'s file now (opened as a scan opens it)."""
        dfd = os.open(self.dir, _DIR_FLAGS)
        try:
            real = _fd_path(dfd) or os.path.realpath(self.dir)
            try:
                fd = self._open(dfd, real, credential.file)
            except _Outside:
                raise FileNotFoundError(errno.ENOENT, "no such file or directory") from None
            try:
                return _read_all(fd, min(os.fstat(fd).st_size, max_bytes) + 1)[: max_bytes + 1]
            finally:
                os.close(fd)
        finally:
            os.close(dfd)

    def _load(self, dfd: int, real: str, name: str, max_bytes: int, warn: Warn | None) -> Credential | None:
        path = self.path_of(name)
        try:
            fd = self._open(dfd, real, name)
        except _Outside:
            return None
        except OSError as e:
            return self._unreadable(name, path, e)  # e.g. a dangling link (ENOENT)
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                return None  # directories, FIFOs, devices are not credential files
            key: _Key = (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)
            if info.st_size > max_bytes:
                self._skip_too_large(name, key, max_bytes, warn)
                return None
            with self._lock:
                cached = self._cache.get(name)
            if cached is not None and cached[0] == key:
                return cached[1]  # unchanged since it was parsed
            data = _read_all(fd, info.st_size)
        except OSError as e:
            return self._unreadable(name, path, e)
        finally:
            os.close(fd)
        if len(data) > max_bytes:  # grew while being read
            self._skip_too_large(name, key, max_bytes, warn)
            return None
        meta, problem = read_meta(data)
        credential = Credential(
            name=_shown(name),
            path=_shown(path),
            auth_index=auth_index(meta.type if meta is not None and isinstance(meta.type, str) else "", path),
            file=name,
            size=len(data),
            mtime_ns=info.st_mtime_ns,
            meta=meta,
            problem=problem,
        )
        with self._lock:
            self._cache[name] = (key, credential)
        return credential

    def _skip_too_large(self, name: str, key: _Key, max_bytes: int, warn: Warn | None) -> None:
        with self._lock:
            if (name, key) in self._too_large:
                return
            self._too_large.add((name, key))
            self._cache.pop(name, None)
        if warn is not None:
            warn(
                "auth file is too large; skipped",
                file=_shown(name),
                size=key[2],
                max_file_bytes=max_bytes,
            )

    @staticmethod
    def _unreadable(name: str, path: str, e: OSError) -> Credential:
        """An entry whose content could not be read: found by ``get`` (seed type
        ``unknown``), never listed."""
        index = auth_index("", path)
        return Credential(name=_shown(name), path=_shown(path), auth_index=index, file=name, read_error=e)

    @staticmethod
    def _open(dfd: int, real: str, name: str) -> int:
        """Open ``name`` for reading without ever leaving the directory ``real``."""
        try:
            return os.open(name, _READ_FLAGS, dir_fd=dfd)
        except OSError as e:
            if e.errno != errno.ELOOP:
                raise
        # A symlink: follow it only when it lands inside the directory.
        target = os.path.realpath(os.path.join(real, name))
        if not _inside(real, target):
            raise _Outside
        fd = os.open(target, _READ_FLAGS)
        opened = _fd_path(fd)
        if opened is not None and not _inside(real, opened):
            os.close(fd)
            raise _Outside
        return fd

    # Saving ------------------------------------------------------------------------

    def save(self, name: str, data: bytes) -> str:
        """Replace ``name`` atomically with ``data`` (mode 0600); returns the file's path.

        ``name`` and ``data`` must already have been validated (``host.auth.save``).
        """
        if not name or "/" in name or "\\" in name or name in (".", ".."):
            raise CredentialError("invalid auth file name")
        path = self.path_of(name)
        try:
            dfd = os.open(self.dir, _DIR_FLAGS)
        except OSError as e:
            raise CredentialError(f"failed to write auth file: {go_error('open', self.dir, e)}") from None
        temp = ""
        try:
            temp, fd = self._create_temp(dfd)
            try:
                os.fchmod(fd, 0o600)  # the umask may have taken bits away; never chmod by path
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(temp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
            temp = ""
            try:
                os.fsync(dfd)  # makes the rename itself durable
            except OSError as e:
                if e.errno not in (errno.EINVAL, errno.EOPNOTSUPP):
                    raise
                # This filesystem cannot sync a directory; the rename is done all the same.
        except OSError as e:
            raise CredentialError(f"failed to write auth file: {go_error('replace', path, e)}") from None
        except ValueError:  # a NUL in the name
            raise CredentialError(f"failed to write auth file: open {path}: invalid argument") from None
        finally:
            if temp:
                with contextlib.suppress(OSError):
                    os.unlink(temp, dir_fd=dfd)
            os.close(dfd)
        return path

    @staticmethod
    def _create_temp(dfd: int) -> tuple[str, int]:
        """A new file in the directory; its name never ends in ``.json``, so scans skip it."""
        for _ in range(8):
            temp = f".hostd-save-{secrets.token_hex(8)}.tmp"
            try:
                return temp, os.open(temp, _TEMP_FLAGS, 0o600, dir_fd=dfd)
            except FileExistsError:
                continue
        raise FileExistsError(errno.EEXIST, "could not create a unique temp file")
