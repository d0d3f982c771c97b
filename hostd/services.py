"""Everything a handler may use, built once by the server and shared by all sessions.

The upstream clients (``http``, ``model``) and the credential store (``auth``) are built on
first use: a plugin that never calls ``host.http.*`` never pays for importing httpx and
TLS (the per-plugin start-up cost matters: the proxy runs one hostd per plugin). A reload
that changes their configuration drops them (:meth:`Services.reset_upstreams`); the next
call builds them anew, and calls in flight finish on the old ones.

``end_hooks`` run when a session's input ends (EOF, disconnect, shutdown, a crash of its
own code), one by one under the cleanup boundary: the stream table, the scopes, the emit
links and the HTTP operations each drop what that session held.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from hostd.config import Config
from hostd.logs import Logger
from hostd.operations import OperationRegistry
from hostd.rpc.budget import Budget
from hostd.rpc.registry import SessionRegistry
from hostd.scopes import ScopeRegistry
from hostd.streams import Counters, StreamTable

if TYPE_CHECKING:
    from hostd.credentials import CredentialStore
    from hostd.emit import EmitRegistry
    from hostd.rpc.session import Session
    from hostd.upstream.http_client import HttpUpstream
    from hostd.upstream.model_backend import ModelBackend


class Services:
    """Built once by the server (keywords). A plain class: a dataclass compiles its methods
    at every start; compared by identity; the default repr (the config holds secrets)."""

    __slots__ = (
        "_auth",
        "_http",
        "_model",
        "_retired",
        "bridge",
        "config",
        "config_file",
        "counters",
        "emit",
        "end_hooks",
        "input_budget",
        "listen",
        "logger",
        "operations",
        "output_budget",
        "request_budget",
        "scan_budget",
        "scopes",
        "sessions",
        "started_at",
        "streams",
    )

    def __init__(
        self,
        *,
        config: Config,
        logger: Logger,
        streams: StreamTable,
        scopes: ScopeRegistry,
        counters: Counters,
        emit: EmitRegistry,
        output_budget: Budget,
        input_budget: Budget,
        request_budget: Budget,
        scan_budget: Budget,
        sessions: SessionRegistry | None = None,
        end_hooks: list[Callable[[Session], None]] | None = None,
        operations: OperationRegistry | None = None,
        started_at: float | None = None,
        listen: list[str] | None = None,
        config_file: str | None = None,
        bridge: Any = None,
    ) -> None:
        self.config = config
        self.logger = logger
        self.streams = streams
        self.scopes = scopes
        self.counters = counters
        self.emit = emit
        self.output_budget = output_budget
        self.input_budget = input_budget
        self.request_budget = request_budget
        self.scan_budget = scan_budget  # long lines waiting for the scanner (hostd.rpc.long_lines)
        self.sessions = SessionRegistry() if sessions is None else sessions
        self.end_hooks: list[Callable[[Session], None]] = [] if end_hooks is None else end_hooks
        self.operations = OperationRegistry() if operations is None else operations  # host.http.operation_*
        self.started_at = time.monotonic() if started_at is None else started_at
        # What hostd.status reports about how this daemon was started (set by the server).
        self.listen: list[str] = [] if listen is None else listen
        self.config_file = config_file
        # Under ``hostd bridge``: the bridge's end (hostd.bridge.host.BridgeHost), else None.
        self.bridge = bridge
        self._http: HttpUpstream | None = None
        self._model: ModelBackend | None = None
        self._auth: CredentialStore | None = None
        self._retired: list[HttpUpstream | ModelBackend] = []

    @property
    def http(self) -> HttpUpstream:
        if self._http is None:
            from hostd.upstream.http_client import HttpUpstream  # lazy: httpx and TLS on first use

            self._http = HttpUpstream(self.config.http, self.logger)
        return self._http

    @property
    def model(self) -> ModelBackend | None:
        """The model backend, or None when ``model.base_url`` is empty (the family is off)."""
        if self._model is None and self.config.model.base_url:
            from hostd.upstream.model_backend import ModelBackend  # lazy: on the first host.model.*

            self._model = ModelBackend(self.config, self.logger)
        return self._model

    @property
    def auth(self) -> CredentialStore | None:
        """The credential store, or None when ``auth.dir`` is empty (the family is off)."""
        if self._auth is None and self.config.auth_dir:
            from hostd.credentials import CredentialStore  # lazy: on the first host.auth.*

            self._auth = CredentialStore(self.config.auth_dir)
        return self._auth

    def body_bytes(self) -> int:
        """``host.http.do`` bodies held now (``[http] max_total_body_bytes``); 0 before the first."""
        return 0 if self._http is None else self._http.budget.buffered

    def reset_upstreams(self, http: bool, model: bool, auth: bool) -> None:
        """Drop clients whose configuration changed; open connections close at shutdown."""
        if http and self._http is not None:
            self._retired.append(self._http)
            self._http = None
        if model and self._model is not None:
            self._retired.append(self._model)
            self._model = None
        if auth:
            self._auth = None

    async def aclose(self) -> None:
        for client in [*self._retired, self._http, self._model]:
            if client is not None:
                await client.aclose()
        self._retired.clear()
