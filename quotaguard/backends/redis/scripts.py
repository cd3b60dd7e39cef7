"""The Lua scripts, as loaded: one ``<name>.lua`` file each beside this module.

The state codec (``state.lua``, ``ring.lua``, ``store.lua``, ``meaning.lua``) goes in front
of every script that reads or writes the state string, so each is still one ``EVALSHA``.
"""

from __future__ import annotations

from importlib import resources

SCRIPT_NAMES = ("decide", "settle", "meta", "audit", "reset")
"""The Lua scripts, one ``<name>.lua`` file each beside this module."""


_STATE_CODEC = ("state", "ring", "store", "meaning")
"""The files of the state string's codec, in the order they are concatenated."""

_WITH_STATE = ("decide", "settle", "reset")
"""The scripts that read or write the state string: ``state.lua`` goes in front of them."""


def script_source(name: str) -> str:
    """The text of the Lua script ``name`` (with the state codec in front where it is used)."""
    files = resources.files(__package__)
    parts = [*_STATE_CODEC, name] if name in _WITH_STATE else [name]
    return "".join(files.joinpath(f"{part}.lua").read_text(encoding="utf-8") for part in parts)


SCRIPTS = {name: script_source(name) for name in SCRIPT_NAMES}
"""Script name -> Lua source."""
