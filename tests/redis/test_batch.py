"""The batch script's text and arguments, and how a batch's failure is read."""

from __future__ import annotations

from typing import Any

import pytest
from redis.exceptions import (
    AskError,
    ClusterCrossSlotError,
    ConnectionError,
    NoScriptError,
    ResponseError,
    TimeoutError,
    TryAgainError,
)

from quotaguard.backends.redis.batch import batch_call, batch_source, pack_request
from quotaguard.backends.redis.codec import ScriptCall
from quotaguard.backends.redis.lanes import SINGLE, answers, failed


def test_the_batch_script_keeps_the_decide_scripts_own_flags() -> None:
    source = batch_source("#!lua flags=no-writes,allow-cross-slot-keys\nreturn 1")
    first, second, *_ = source.splitlines()
    assert first == "#!lua flags=allow-cross-slot-keys,no-writes"
    assert second == "local function decide_one(KEYS, ARGV)"
    assert batch_source("return 1").startswith("#!lua flags=allow-cross-slot-keys\n")


@pytest.mark.parametrize("size", [0, 1, 31, 32, 255, 256, 65_535, 65_536, 100_000])
def test_a_packed_request_reads_back_in_lua_byte_for_byte(server: Any, size: int) -> None:
    payload = bytes(index % 256 for index in range(size))
    args = [f"k{index}" for index in range(14)]
    call = ScriptCall("decide", ["qg:{ü}:m", "qg:{ü}:s"], ["d", "", payload, *args])
    with server.client() as client:
        unpacked = client.eval("return cmsgpack.unpack(ARGV[1])", 0, pack_request(call))
    assert unpacked == [2, "qg:{ü}:m".encode(), b"qg:{\xc3\xbc}:s", b"d", b"", payload] + [
        arg.encode() for arg in args
    ]


def test_a_batch_declares_only_its_first_requests_keys() -> None:
    first = ScriptCall("decide", ["a:{1}:m", "a:{1}:s"], ["d"])
    second = ScriptCall("decide", ["a:{2}:m", "a:{2}:s"], ["p"])
    call = batch_call([first, second])
    assert call.keys == first.keys
    assert list(call.args) == [pack_request(first), pack_request(second)]


@pytest.mark.parametrize(
    ("error", "outcome"),
    [
        (TimeoutError("Timeout reading from socket"), "error"),
        (ConnectionError("Error while reading from 127.0.0.1:1"), "error"),
        (ConnectionError("Error 111 connecting to 127.0.0.1:1. Connection refused."), SINGLE),
        (TimeoutError("Timeout connecting to server"), SINGLE),
        (TryAgainError("Multiple keys request during rehashing of slot"), SINGLE),
        (AskError("3999 127.0.0.1:6381"), SINGLE),
        (ClusterCrossSlotError(), SINGLE),
        (NoScriptError("No matching script"), SINGLE),
        (ResponseError("ERR unknown command"), SINGLE),
    ],
)
def test_a_batch_that_may_have_run_is_never_sent_again(error: Exception, outcome: Any) -> None:
    """Each request of a failed batch gets the error when the batch may have run, else
    `SINGLE` (made again alone); a lone request always gets its own error."""
    expected = error if outcome == "error" else SINGLE
    assert failed(error, 3) == [expected] * 3
    assert failed(error, 1) == [error]


def test_a_request_that_met_a_key_elsewhere_is_made_again_alone() -> None:
    elsewhere = ResponseError("Script attempted to access a non local key in a cluster node")
    wrong = ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value")
    assert answers([[1, 2], elsewhere, wrong], 3) == [[1, 2], SINGLE, wrong]
    nonsense = answers([[1]], 2)
    assert len(nonsense) == 2 and all(isinstance(e, ResponseError) for e in nonsense)
    assert answers("lone reply", 1) == ["lone reply"]
