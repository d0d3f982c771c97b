"""The credential store: the proxy's auth directory of ``*.json`` files (``host.auth.*``).

Every call re-reads the directory. Reads never leave it: a symlink is followed only when
it resolves inside the directory, and the file actually opened is checked again after
``open`` (``/proc/self/fd``) so a swap between the check and the open is caught.

A save never loses data and never touches anything outside the directory: the bytes go
to a fresh temp file created in the directory itself (``O_CREAT|O_EXCL|O_NOFOLLOW``,
mode 0600, ``fchmod`` on the descriptor, never ``chmod`` by path), are fsynced, and the
temp file is renamed over the target (a symlink there is replaced, never written
through); then the directory is fsynced. A crash leaves the old file or the new one.

Everything here is blocking and meant to run in a worker thread. Parsing follows Go's
``encoding/json`` and ``strconv`` where the proxy relies on them (number ranges,
``ParseBool``, ``Atoi``, ``TrimSpace``, RFC 3339), so indexes and entries agree with
the proxy's. Nothing here knows the wire format; errors carry the Go texts of PROTOCOL.md.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import secrets
import stat
from dataclasses import dataclass
from typing import Any

import msgspec

__all__ = [
    "ZERO_TIME",
    "Credential",
    "CredentialError",
    "CredentialStore",
    "auth_index",
    "check_weight",
    "decode_object",
    "format_time",
    "go_error",
    "go_lower",
    "go_trim",
    "parse_go_bool",
    "parse_priority",
    "parse_rfc3339",
    "validate_save",
]

ZERO_TIME = "0001-01-01T00:00:00Z"
MAX_WEIGHT = 1_000_000
INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1

# unicode.IsSpace, which strings.TrimSpace uses (Python's str.strip also drops \x1c-\x1f).
GO_SPACE = "\t\n\v\f\r \x85\xa0\u1680" + "".join(map(chr, range(0x2000, 0x200B))) + "\u2028\u2029\u202f\u205f\u3000"

_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_TEMP_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC

_DRIVE = re.compile(r"[A-Za-z]:")
_GO_INT = re.compile(r"[+-]?[0-9]+", re.ASCII)  # strconv.ParseInt(s, 10, 64) syntax
# time.Parse(time.RFC3339, s): its slow path also takes a one-digit hour and a comma.
_RFC3339 = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{1,2}):([0-9]{2}):([0-9]{2})"
    r"(?:[.,]([0-9]+))?(?:(Z)|([+-])([0-9]{2}):([0-9]{2}))",
    re.ASCII,
)
_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})

_decoder = msgspec.json.Decoder()


class CredentialError(Exception):
    """A failed credential operation; the message is the Go text plugins match on."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


# Go string and number semantics ------------------------------------------------------


def go_trim(s: str) -> str:
    """``strings.TrimSpace``."""
    return s.strip(GO_SPACE)


def go_lower(s: str) -> str:
    """``strings.ToLower``: simple per-rune mapping (no final sigma, U+0130 becomes ``i``)."""
    if s.isascii():
        return s.lower()
    return "".join(c.lower()[0] for c in s)


def parse_go_bool(s: str) -> bool | None:
    """``strconv.ParseBool``: the value, or None when Go would refuse the text."""
    if s in _TRUE:
        return True
    if s in _FALSE:
        return False
    return None


def _go_int(s: str) -> int | None:
    """``strconv.ParseInt(s, 10, 64)`` / ``Atoi``: None on a syntax or range error."""
    if not _GO_INT.fullmatch(s):
        return None
    value = int(s)
    return value if INT64_MIN <= value <= INT64_MAX else None


def parse_priority(value: Any) -> int | None:
    """A JSON number truncated toward zero, or a string holding an integer (trimmed)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        number = float(value)  # Go decodes every JSON number as a float64
        if not INT64_MIN <= number < -float(INT64_MIN):
            return None  # Go's int(f) is undefined here; leave the priority unset
        return int(number)
    if isinstance(value, str):
        return _go_int(go_trim(value))
    return None


def check_weight(value: Any) -> str:
    """Why ``weight`` is refused (credentialweight.ParseValue), or '' when it is valid."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return "weight must be an integer"
    if isinstance(value, str):
        text = go_trim(value)
        if not text:
            return ""  # the default weight
        parsed = _go_int(text)
        if parsed is None:
            return "weight must be an integer"
        number = float(parsed)
    else:
        try:
            number = float(value)
        except OverflowError:
            return f"weight must not exceed {MAX_WEIGHT}"
        if not number.is_integer():
            return "weight must be an integer"
    if number > MAX_WEIGHT:
        return f"weight must not exceed {MAX_WEIGHT}"
    return ""


def decode_object(data: bytes) -> tuple[dict[str, Any] | None, str]:
    """The JSON object in ``data``, or None and why not.

    Go's decoder reads every number as a float64 and refuses one that overflows it;
    msgspec keeps huge integers exact, so they are refused here the same way.
    """
    try:
        value = _decoder.decode(data)
    except (msgspec.DecodeError, ValueError) as e:
        return None, str(e)
    if not isinstance(value, dict):
        return None, f"expected a JSON object, got {_kind(value)}"
    stack: list[Any] = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, int) and not isinstance(item, bool):
            try:
                float(item)
            except OverflowError:
                return None, "number out of range"
    return value, ""


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array"


# Times: integer nanoseconds since the Unix epoch, UTC --------------------------------


def _days_from_civil(y: int, m: int, d: int) -> int:
    y -= m <= 2
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def _civil_from_days(z: int) -> tuple[int, int, int]:
    z += 719468
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + 3 if mp < 10 else mp - 9
    return yoe + era * 400 + (m <= 2), m, d


def _days_in(m: int, y: int) -> int:
    if m == 2:
        return 29 if y % 4 == 0 and (y % 100 != 0 or y % 400 == 0) else 28
    return 30 if m in (4, 6, 9, 11) else 31


def parse_rfc3339(text: str) -> int | None:
    """``time.Parse(time.RFC3339, text)`` as nanoseconds since the epoch, or None."""
    match = _RFC3339.fullmatch(text)
    if match is None:
        return None
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    if not (1 <= month <= 12 and 1 <= day <= _days_in(month, year) and hour < 24 and minute < 60 and second < 60):
        return None
    fraction = match.group(7) or ""
    nanos = int(fraction[:9].ljust(9, "0")) if fraction else 0
    offset = 0
    if match.group(8) is None:
        oh, om = int(match.group(10)), int(match.group(11))
        if oh > 24 or om > 60:
            return None
        offset = (oh * 60 + om) * 60 * (-1 if match.group(9) == "-" else 1)
    seconds = _days_from_civil(year, month, day) * 86400 + hour * 3600 + minute * 60 + second - offset
    return seconds * 1_000_000_000 + nanos


def format_time(ns: int | None) -> str:
    """UTC RFC 3339 with nanoseconds, trailing zeros trimmed; unset is Go's zero time.

    A time whose UTC year falls outside 0..9999 cannot be written by Go either: zero.
    """
    if ns is None:
        return ZERO_TIME
    seconds, nanos = divmod(ns, 1_000_000_000)
    days, in_day = divmod(seconds, 86400)
    y, m, d = _civil_from_days(days)
    if not 0 <= y <= 9999:
        return ZERO_TIME
    hh, rest = divmod(in_day, 3600)
    mm, ss = divmod(rest, 60)
    text = f"{y:04d}-{m:02d}-{d:02d}T{hh:02d}:{mm:02d}:{ss:02d}"
    if nanos:
        text += "." + f"{nanos:09d}".rstrip("0")
    return text + "Z"


# Index and entries ----------------------------------------------------------------------


def auth_index(type_: str, path: str | bytes) -> str:
    """First 8 bytes of SHA-256 of ``<type>:<absolute clean path>``, as lowercase hex.

    ``type_`` is the file's ``type`` field as read; it is trimmed and lowercased here,
    and ``unknown`` stands in for an empty one. The path's bytes are hashed as they are
    on disk (a name that is not UTF-8 hashes as the proxy hashes it).
    """
    kind = go_lower(go_trim(type_)) or "unknown"
    raw = path if isinstance(path, bytes) else os.fsencode(path)
    return hashlib.sha256(kind.encode("utf-8", "surrogateescape") + b":" + raw).digest()[:8].hex()


def _text(value: Any) -> str:
    return go_trim(value) if isinstance(value, str) else ""


@dataclass(frozen=True, slots=True)
class Credential:
    """One ``*.json`` entry of the directory as it was when scanned."""

    name: str  # shown as valid UTF-8 (undecodable bytes become U+FFFD, as Go writes them)
    path: str
    auth_index: str
    size: int = 0
    mtime_ns: int | None = None
    data: bytes | None = None  # None when the file could not be read
    read_error: OSError | None = None
    meta: dict[str, Any] | None = None  # None when the file is not a JSON object
    problem: str = ""  # why ``meta`` is None

    @property
    def type(self) -> str:
        return _text(self.meta.get("type")) if self.meta is not None else ""

    @property
    def email(self) -> str:
        return _text(self.meta.get("email")) if self.meta is not None else ""

    @property
    def project_id(self) -> str:
        return _text(self.meta.get("project_id")) if self.meta is not None else ""

    @property
    def note(self) -> str:
        return _text(self.meta.get("note")) if self.meta is not None else ""

    @property
    def disabled(self) -> bool:
        return self.meta is not None and self.meta.get("disabled") is True

    @property
    def priority(self) -> int:
        if self.meta is None or "priority" not in self.meta:
            return 0
        return parse_priority(self.meta["priority"]) or 0

    @property
    def websockets(self) -> bool:
        value = self.meta.get("websockets") if self.meta is not None else None
        if isinstance(value, bool):
            return value
        if isinstance(value, str):
            return parse_go_bool(go_trim(value)) is True
        return False

    @property
    def last_refresh_ns(self) -> int | None:
        value = self.meta.get("last_refresh") if self.meta is not None else None
        return parse_rfc3339(value) if isinstance(value, str) else None

    def is_empty(self) -> bool:
        """Nothing but whitespace (``bytes.TrimSpace`` semantics)."""
        return self.data is not None and not go_trim(self.data.decode("utf-8", "replace"))


# Save validation -----------------------------------------------------------------------


def validate_save(name: str, raw: bytes) -> str:
    """Check a save request in the spec's order; returns the trimmed name."""
    name = go_trim(name)
    if not name or "/" in name or "\\" in name or _DRIVE.match(name):
        raise CredentialError("invalid auth file name")
    if not go_lower(name).endswith(".json"):
        raise CredentialError("auth file name must end with .json")
    if not raw:
        raise CredentialError("json is required")
    meta, problem = decode_object(raw)
    if meta is None:
        raise CredentialError(f"invalid auth json: {problem}")
    if "weight" in meta:
        reason = check_weight(meta["weight"])
        if reason:
            raise CredentialError(f"invalid auth weight: invalid metadata weight: {reason}")
    return name


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


def _unreadable(name: str, path: str, e: OSError, size: int = 0, mtime_ns: int | None = None) -> Credential:
    """An entry whose content could not be read: listed, with the seed type ``unknown``."""
    return Credential(
        name=_shown(name),
        path=_shown(path),
        auth_index=auth_index("", path),
        size=size,
        mtime_ns=mtime_ns,
        read_error=e,
    )


class _Outside(Exception):
    """The entry resolves outside the directory: it is not a credential."""


class CredentialStore:
    """The auth directory ``dir`` (absolute, lexically clean). Blocking: use a worker thread."""

    def __init__(self, dir: str) -> None:
        self.dir = os.path.abspath(dir)

    def path_of(self, name: str) -> str:
        return os.path.join(self.dir, name)

    # Reading -----------------------------------------------------------------------

    def scan(self) -> list[Credential]:
        """Every credential, sorted by lowercased name, then by exact name."""
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
            for name in names:
                if not go_lower(name).endswith(".json"):
                    continue
                credential = self._load(dfd, real, name)
                if credential is not None:
                    found.append(credential)
        finally:
            os.close(dfd)
        found.sort(key=lambda c: (go_lower(c.name), c.name))
        return found

    def find(self, index: str) -> Credential | None:
        for credential in self.scan():
            if credential.auth_index == index:
                return credential
        return None

    def _load(self, dfd: int, real: str, name: str) -> Credential | None:
        path = self.path_of(name)
        try:
            fd = self._open(dfd, real, name)
        except _Outside:
            return None
        except OSError as e:
            if e.errno == errno.ENOENT:  # gone since listdir, or a dangling link
                return _unreadable(name, path, e)
            return _unreadable(name, path, e, *self._lstat_regular(dfd, name))
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                return None  # directories, FIFOs, devices are not credential files
            data = _read_all(fd, info.st_size)
        except OSError as e:
            return _unreadable(name, path, e)
        finally:
            os.close(fd)
        meta, problem = decode_object(data)
        type_ = meta.get("type") if meta is not None else None
        return Credential(
            name=_shown(name),
            path=_shown(path),
            auth_index=auth_index(type_ if isinstance(type_, str) else "", path),
            size=len(data),
            mtime_ns=info.st_mtime_ns,
            data=data,
            meta=meta,
            problem=problem,
        )

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

    @staticmethod
    def _lstat_regular(dfd: int, name: str) -> tuple[int, int | None]:
        try:
            info = os.stat(name, dir_fd=dfd, follow_symlinks=False)
        except OSError:
            return 0, None
        if not stat.S_ISREG(info.st_mode):
            return 0, None
        return info.st_size, info.st_mtime_ns

    # Saving ------------------------------------------------------------------------

    def save(self, name: str, data: bytes) -> str:
        """Replace ``name`` atomically with ``data`` (mode 0600); returns the file's path.

        ``name`` must already have passed :func:`validate_save`.
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
