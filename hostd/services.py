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
from dataclasses import dataclass, field
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


@dataclass(eq=False)
class Services:
    config: Config
    logger: Logger
    streams: StreamTable
    scopes: ScopeRegistry
    counters: Counters
    emit: EmitRegistry
    output_budget: Budget
    input_budget: Budget
    request_budget: Budget
    sessions: SessionRegistry = field(default_factory=SessionRegistry)
    end_hooks: list[Callable[[Session], None]] = field(default_factory=list)
    operations: OperationRegistry = field(default_factory=OperationRegistry)  # host.http.operation_*
    started_at: float = field(default_factory=time.monotonic)
    # What hostd.status reports about how this daemon was started (set by the server).
    listen: list[str] = field(default_factory=list)
    config_file: str | None = None
    # Under ``hostd bridge``: the bridge's end (hostd.bridge.host.BridgeHost), else None.
    bridge: Any = None
    _http: HttpUpstream | None = None
    _model: ModelBackend | None = None
    _auth: CredentialStore | None = None
    _retired: list[HttpUpstream | ModelBackend] = field(default_factory=list)

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
