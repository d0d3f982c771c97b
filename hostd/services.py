"""Everything a handler may use, built once by the server and shared by all sessions.

``end_hooks`` run when a session's input ends (EOF, disconnect, shutdown, a crash of its
own code), one by one under the cleanup boundary: the stream table, the scopes, the emit
links and the HTTP operations each drop what that session held.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from hostd.config import Config
from hostd.logs import Logger
from hostd.operations import OperationRegistry
from hostd.rpc.outbox import OutputBudget
from hostd.rpc.registry import SessionRegistry
from hostd.rpc.session import InputBudget
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
    http: HttpUpstream
    emit: EmitRegistry
    output_budget: OutputBudget
    input_budget: InputBudget
    # Filled by the families that need them; None means the family is turned off.
    model: ModelBackend | None = None
    auth: CredentialStore | None = None
    sessions: SessionRegistry = field(default_factory=SessionRegistry)
    end_hooks: list[Callable[[Session], None]] = field(default_factory=list)
    operations: OperationRegistry = field(default_factory=OperationRegistry)  # host.http.operation_*
    started_at: float = field(default_factory=time.monotonic)
    # What hostd.status reports about how this daemon was started (set by the server).
    listen: list[str] = field(default_factory=list)
    config_file: str | None = None
