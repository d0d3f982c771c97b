"""JSON-RPC batches: one array line, its elements answered one by one (JSON-RPC 2.0 with
``limits.max_batch``: an empty or longer batch is one error and nothing in it runs), their
answers collected and written as one array when the last element ends."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING

import msgspec

from hostd.errors import InvalidRequest, ParseError, WireError
from hostd.rpc.messages import Envelope, PeerAnswer, decode_envelope, encode_error, raw_list_decoder

if TYPE_CHECKING:
    from hostd.rpc.dispatch import Dispatcher, Reply
    from hostd.rpc.outbox import Outbox

# One decoded element: what decode_envelope made of it (or the scanner: params typed already), its size.
Element = tuple[Envelope | WireError | PeerAnswer, int, bool]


def answer_batch(dispatcher: Dispatcher, data: bytes, reply: Reply) -> None:
    """A batch line, read the usual way: its elements decoded one at a time as they are served."""
    try:
        items = raw_list_decoder.decode(data)
    except RecursionError:
        dispatcher.fail(reply, ParseError("parse error: nesting too deep"))
        return
    except msgspec.DecodeError as e:
        dispatcher.fail(reply, ParseError(f"parse error: {e}"))
        return
    for _ in serve_batch(dispatcher, reply, len(items), ((decode_envelope(raw), len(raw), False) for raw in items)):
        pass  # read on the loop already: served in one go


STEP = 64  # elements served between two yields of serve_batch


def serve_batch(dispatcher: Dispatcher, reply: Reply, count: int, elements: Iterable[Element]) -> Iterator[None]:
    """Serve a batch of ``count`` elements, in order, each counting against ``max_in_flight``;
    yields after every ``STEP`` elements, so a caller that can wait may let the loop serve
    other sessions between them (``hostd.rpc.long_lines`` does; the answer array is written
    when the last element ends either way)."""
    if not count:
        dispatcher.fail(reply, InvalidRequest("invalid request: empty batch"))
        return
    limit = dispatcher.session.services.config.limits.max_batch
    if count > limit:
        dispatcher.fail(reply, InvalidRequest(f"batch too large (max {limit} elements)"))
        return
    # Written with a flush of its own: its last element may end long after this line.
    batch = Batch(dispatcher.session.outbox, count + 1)  # +1 until every element is dispatched
    for i, (env, size, typed) in enumerate(elements, 1):
        if isinstance(env, PeerAnswer):
            dispatcher.session.peer.answer_unreadable()
            batch.done_one()
        elif isinstance(env, WireError):
            batch.add(encode_error(None, env))
            batch.done_one()
        else:
            dispatcher.envelope(env, batch.add, batch, size, typed)
        if i % STEP == 0 and i < count:
            yield
    batch.done_one()


class Batch:
    __slots__ = ("_held", "_outbox", "parts", "pending")

    def __init__(self, outbox: Outbox, pending: int) -> None:
        self.pending = pending
        self.parts: list[bytes] = []
        self._outbox = outbox  # written with a flush of its own: the last element may end late
        self._held: list[Callable[[], None]] = []

    def add(self, answer: bytes) -> None:
        self.parts.append(answer)

    def hold(self, release: Callable[[], None]) -> None:
        """``release`` once the array holding this element's answer has been written."""
        self._held.append(release)

    def done_one(self) -> None:
        self.pending -= 1
        if self.pending == 0:
            if self.parts:
                self._outbox.write(b"[" + b",".join(self.parts) + b"]")
            for release in self._held:
                self._outbox.after_written(release)
