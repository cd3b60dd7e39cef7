"""Several decide calls as one script call: the batch script, its arguments, its replies.

The batch script is built at load time from the decide script's own text, wrapped
mechanically in ``local function decide_one(KEYS, ARGV) ... end``, and a loop that runs
it once per request, in arrival order. The state codec's functions (``state.lua`` and the
files after it, which never read ``KEYS`` or ``ARGV``) stay outside the wrapper, so a
batch creates them once rather than once per request. Each request keeps its own keys (one hash tag)
and its own arguments; the loop hands them over through flat ``KEYS``/``ARGV``:

    ARGV = [n, keys_1, args_1, <args of 1>..., keys_2, args_2, <args of 2>..., ...]
    KEYS = [<keys of 1>..., <keys of 2>..., ...]

Each request runs under ``pcall``: a request whose script fails gets its own error
reply, the others their decisions, exactly as n separate calls would. The script is
flagged ``allow-cross-slot-keys`` (Redis 7), so on a cluster one call decides for every
customer whose slot is on that node.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from redis.exceptions import ResponseError

from .codec import ScriptCall
from .scripts import script_parts

BATCH = "decide_batch"
"""The name the backends register the batch script under."""

_LOOP = """
local replies = {}
for i = 1, #ARGV do
  local request = cmsgpack.unpack(ARGV[i])
  local nk = request[1]
  local keys, args = {}, {}
  for j = 1, nk do keys[j] = request[1 + j] end
  for j = nk + 2, #request do args[j - nk - 1] = request[j] end
  local ok, reply = pcall(decide_one, keys, args)
  if ok then
    replies[i] = reply
  elseif type(reply) == 'table' and reply.err then
    replies[i] = reply
  else
    replies[i] = {err = tostring(reply)}
  end
end
return replies
"""


def batch_source(decide: str, library: str = "") -> str:
    """The batch script for the decide script whose Lua text is ``decide``.

    ``library``: Lua text put before the wrapper, run once per batch (functions that read
    neither ``KEYS`` nor ``ARGV``). A shebang line of ``decide`` (``#!lua flags=...``)
    moves to the top, its flags kept.
    """
    flags = ["allow-cross-slot-keys"]
    if decide.startswith("#!"):
        shebang, _, decide = decide.partition("\n")
        for word in shebang.split()[1:]:
            if word.startswith("flags="):
                flags += [flag for flag in word[6:].split(",") if flag and flag not in flags]
    return (
        f"#!lua flags={','.join(flags)}\n"
        f"{library}"
        "local function decide_one(KEYS, ARGV)\n"
        f"{decide}\nend\n{_LOOP}"
    )


_LIBRARY, _DECIDE = script_parts("decide")
BATCH_SOURCE = batch_source(_DECIDE, _LIBRARY)
"""The Lua source of the batch script."""


def _item(value: str | bytes) -> bytes:
    """``value`` as a MessagePack str (cmsgpack gives Lua the very bytes back)."""
    raw = value.encode("utf-8") if isinstance(value, str) else value
    size = len(raw)
    if size < 32:
        return bytes((0xA0 | size,)) + raw
    if size < 0x100:
        return bytes((0xD9, size)) + raw
    if size < 0x10000:
        return b"\xda" + size.to_bytes(2, "big") + raw
    return b"\xdb" + size.to_bytes(4, "big") + raw


def pack_request(call: ScriptCall) -> bytes:
    """One request of a batch: ``[#keys, keys..., args...]`` as a MessagePack array."""
    items = len(call.keys) + len(call.args) + 1
    head = bytes((0x90 | items,)) if items < 16 else b"\xdc" + items.to_bytes(2, "big")
    count = len(call.keys)  # a positive fixint: a decide call names at most three keys
    return b"".join((head, bytes((count,)), *map(_item, call.keys), *map(_item, call.args)))


def batch_call(calls: Sequence[ScriptCall]) -> ScriptCall:
    """One call of the batch script that makes every one of ``calls``, in order."""
    return ScriptCall(BATCH, calls[0].keys, [pack_request(call) for call in calls])


def replies_of(raw: Any, count: int) -> list[Any]:
    """The batch script's reply as one reply (or `ResponseError`) per request."""
    if not isinstance(raw, list) or len(raw) != count:
        raise ResponseError(f"the batch script answered {raw!r} for {count} requests")
    return [
        reply
        if isinstance(reply, list | Exception)
        else ResponseError(f"the batch script answered {reply!r} for one request")
        for reply in raw
    ]
