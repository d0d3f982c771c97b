"""hostd-bridge.so's JSON scanner (hostd/bridge/json_scan.h) against Python's json, under ASan.

The bridge reads every line hostd sends and every envelope the proxy returns with this scanner;
it must agree with a strict JSON parser on what is valid and never read out of bounds, whatever
the input (truncated, mutated, deeply nested).
"""

from __future__ import annotations

import json
import random
import subprocess
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "tests" / "bridge" / "scan_check.c"
MAX_DEPTH = 512  # JSCAN_MAX_DEPTH


@pytest.fixture(scope="module")
def scan(tmp_path_factory: pytest.TempPathFactory) -> Path:
    exe = tmp_path_factory.mktemp("scan") / "scan_check"
    flags = ["-std=c11", "-Wall", "-Wextra", "-Werror", "-g", "-O1", "-fsanitize=address,undefined"]
    proc = subprocess.run(["cc", *flags, "-o", str(exe), str(SRC)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    return exe


def run(exe: Path, inputs: list[bytes]) -> list[tuple[bool, bool, bytes | None]]:
    data = b"".join(b"%d\n%s" % (len(i), i) for i in inputs)
    proc = subprocess.run(
        [str(exe)], input=data, capture_output=True, check=False, env={"ASAN_OPTIONS": "detect_leaks=1"}
    )
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    assert b"runtime error" not in proc.stderr, proc.stderr.decode(errors="replace")
    out = []
    for line in proc.stdout.decode().splitlines():
        valid, found, text = line.split(" ")
        out.append((valid == "1", found == "1", None if text == "-" else bytes.fromhex(text)))
    assert len(out) == len(inputs)
    return out


def strict_valid(data: bytes) -> bool:
    def refuse(name: str) -> Any:
        raise ValueError(name)

    try:
        json.loads(data.decode("utf-8"), parse_constant=refuse)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return False
    return True


def value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(8 if depth < 4 else 5)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice([True, False])
    if kind == 2:
        return rng.choice([0, -1, 7, 2**62, -(2**40), 0.5, -1.25e-7, 3e300])
    if kind in (3, 4):
        alphabet = 'ab"\\/\b\f\n\r\t\x01\x1f é€😀\u2028'
        return "".join(rng.choice(alphabet) for _ in range(rng.randrange(6)))
    if kind in (5, 6):
        keys = ["k", "K", "ok", "result", "k\\", 'k"', "é"]
        return {rng.choice(keys): value(rng, depth + 1) for _ in range(rng.randrange(4))}
    return [value(rng, depth + 1) for _ in range(rng.randrange(4))]


def encode(rng: random.Random, v: Any) -> bytes:
    text = json.dumps(v, ensure_ascii=rng.random() < 0.5, indent=rng.choice([None, None, 1]))
    return text.encode()


def test_valid_documents_are_valid_and_keys_unescape_as_python_reads_them(scan: Path) -> None:
    rng = random.Random(15)
    docs = [value(rng) for _ in range(3000)] + [{"k": "\\u0041 \\ud83d\\ude00 plain"}, {"\\u006b": "escaped key"}]
    inputs = [encode(rng, d) for d in docs]
    inputs.append(b'{"\\u006b": "escaped key"}')
    inputs.append(b' \r\n\t{"k" : "x" , "k":"last"}\n')
    docs += [{"k": "escaped key"}, {"k": "last"}]
    for doc, data, (valid, found, text) in zip(docs, inputs, run(scan, inputs), strict=True):
        assert valid, data
        has_k = isinstance(doc, dict) and "k" in doc
        assert found == has_k, data
        if has_k and isinstance(doc["k"], str) and "\x00" not in doc["k"]:
            assert text == doc["k"].encode("utf-8"), data


def test_truncated_and_mutated_documents_agree_with_a_strict_parser(scan: Path) -> None:
    rng = random.Random(1515)
    inputs: list[bytes] = []
    for _ in range(2000):
        data = bytearray(encode(rng, value(rng)))
        op = rng.randrange(4)
        if op == 0 and data:
            del data[rng.randrange(len(data)) :]
        elif op == 1 and data:
            data[rng.randrange(len(data))] = rng.choice(b'{}[]",:\\u0-eE.+ \x00\x7fnt')
        elif op == 2 and data:
            del data[rng.randrange(len(data))]
        else:
            data.insert(rng.randrange(len(data) + 1), rng.randrange(256))
        inputs.append(bytes(data))
    inputs += [b"", b" ", b'"', b'"\\', b'"\\u12', b'"\\ud800\\u"', b"-", b"01", b"1.", b".5", b"1e", b"tru", b"nul"]
    inputs += [b'{"k":"\\u0000"}', b'{"k"}', b'{"k":}', b'{,"k":1}', b'{"k":1,}', b"[1,]", b"[,1]", b"NaN"]
    for data, (valid, _found, text) in zip(inputs, run(scan, inputs), strict=True):
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            continue  # the scanner passes bytes through; UTF-8 is the peer's concern
        assert valid == strict_valid(data), data
        if data == b'{"k":"\\u0000"}':
            assert text is None  # a NUL never becomes part of a C string


def test_nesting_is_bounded_and_never_exhausts_the_stack(scan: Path) -> None:
    inputs = [
        b"[" * (MAX_DEPTH) + b"]" * (MAX_DEPTH),
        b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1),
        b"[" * 1_000_000,
        b'{"k":' * 200_000,
        b'{"k":' + b"[" * 100 + b"]" * 100 + b',"k":"deep ok"}',
    ]
    results = run(scan, inputs)
    assert [r[0] for r in results] == [True, False, False, False, True]
    assert results[4][2] == b"deep ok"
