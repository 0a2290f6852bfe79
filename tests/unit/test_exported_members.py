"""The public surface: everything in __all__ imports, and __all__ stays sorted."""

import chainfleet


def test_all_members_are_importable_and_sorted() -> None:
    assert chainfleet.__all__ == sorted(chainfleet.__all__)
    for name in chainfleet.__all__:
        assert hasattr(chainfleet, name), name


def test_version_comes_from_package_metadata() -> None:
    assert chainfleet.__version__ == "0.1.0"
