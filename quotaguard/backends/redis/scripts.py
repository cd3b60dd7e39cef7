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


def script_parts(name: str) -> tuple[str, str]:
    """The Lua text of the state codec the script ``name`` needs ("" if none), and its own."""
    files = resources.files(__package__)
    codec = _STATE_CODEC if name in _WITH_STATE else ()
    library = "".join(files.joinpath(f"{part}.lua").read_text(encoding="utf-8") for part in codec)
    return library, files.joinpath(f"{name}.lua").read_text(encoding="utf-8")


def script_source(name: str) -> str:
    """The text of the Lua script ``name`` (with the state codec in front where it is used)."""
    return "".join(script_parts(name))


SCRIPTS = {name: script_source(name) for name in SCRIPT_NAMES}
"""Script name -> Lua source."""
