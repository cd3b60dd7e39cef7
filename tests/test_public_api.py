"""The public API: ``__all__`` is complete, sorted and documented."""

from __future__ import annotations

import inspect

import quotaguard
import quotaguard.testing


def test_all_is_sorted_and_complete():
    assert quotaguard.__all__ == sorted(quotaguard.__all__)
    for name in quotaguard.__all__:
        assert hasattr(quotaguard, name), name
    public = {
        name
        for name, value in vars(quotaguard).items()
        if not name.startswith("_") and (inspect.isclass(value) or inspect.isfunction(value))
    }
    assert public <= set(quotaguard.__all__)


def test_every_public_name_has_a_docstring():
    for module in (quotaguard, quotaguard.testing):
        for name in module.__all__:
            value = getattr(module, name)
            if inspect.isclass(value) or inspect.isfunction(value):
                assert inspect.getdoc(value), name
                for attribute, member in vars(value).items():
                    if attribute.startswith("_") or not callable(member):
                        continue
                    assert inspect.getdoc(member), f"{name}.{attribute}"


def test_the_package_is_typed():
    from importlib.resources import files

    assert files("quotaguard").joinpath("py.typed").is_file()
