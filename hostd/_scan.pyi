# hostd/_scan.c: one GIL-free pass over a long JSON-RPC line (see the C source and hostd/rpc/scan.py).
def scan(
    line: bytes,
    top_names: tuple[bytes, ...],
    params_index: int,
    param_names: tuple[bytes, ...],
    max_members: int,
    big_min: int,
    max_elems: int,
    /,
) -> tuple[
    int,
    int,
    tuple[tuple[int, ...], ...] | None,
    tuple[tuple[int, ...], ...] | None,
    tuple[tuple[int, ...], ...] | None,
    int,
]: ...
