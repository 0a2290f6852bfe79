"""The surfaces of chainfleet.store and chainfleet.limits: every name in __all__ imports, and
__all__ stays sorted (as tests/test_exported_members.py checks for chainfleet itself)."""

import importlib

import pytest


@pytest.mark.parametrize("package", ["chainfleet.store", "chainfleet.limits"])
def test_package_members_are_importable_and_sorted(package: str) -> None:
    module = importlib.import_module(package)
    assert module.__all__ == sorted(module.__all__)
    for name in module.__all__:
        assert hasattr(module, name), name
