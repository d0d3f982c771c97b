"""Everything a handler may use, built once by the server and shared by all sessions."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from hostd.config import Config
from hostd.logs import Logger
from hostd.scopes import ScopeRegistry
from hostd.streams import Counters, StreamTable

if TYPE_CHECKING:
    from hostd.rpc.session import Session
    from hostd.upstream.credentials import CredentialStore
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
    # Filled by the families that need them; None means the family is turned off.
    model: ModelBackend | None = None
    auth: CredentialStore | None = None
    sessions: dict[str, Session] = field(default_factory=dict)
    started_at: float = field(default_factory=time.monotonic)
    session_seq: int = 0

    def next_session_id(self) -> str:
        self.session_seq += 1
        return f"session-{self.session_seq}"
