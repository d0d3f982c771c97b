# hostd/_logline.c: the log writer's C half and host.log's written line (see the C source).
from typing import final

class Bucket:
    rate_per_s: float
    burst: float
    dropped: int
    warning_interval_s: float
    def __init__(self, rate_per_s: float, burst: float) -> None: ...
    def take(self) -> bool: ...
    def warning_due(self) -> int: ...
    def configure(self, rate_per_s: float, burst: float, /) -> None: ...

@final
class Writer:
    max_queue_bytes: int
    max_lines: int
    @property
    def queued_bytes(self) -> int: ...
    def __init__(self, fd: int, max_queue_bytes: int, max_lines: int) -> None: ...
    def write(self, line: bytes, /) -> bool: ...
    def plugin_line(
        self,
        bucket: Bucket,
        level_msg: bytes,
        message: str,
        members: bytes,
        request_id: str | None,
        fields: bytes | memoryview | object,
        max_line_bytes: int,
        /,
    ) -> int: ...
    def flush(self, timeout: float, /) -> None: ...
