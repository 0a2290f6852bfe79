"""The request key: what resume and the response cache match a stage's input on. Its form must
never move (a store's earlier results would no longer be found), so its values are pinned."""

from __future__ import annotations

from chainfleet.chain.calls import request_key


class Odd:
    """A value JSON cannot hold: the key takes its ``str``."""

    def __str__(self) -> str:
        return "X!"


def test_request_keys_of_fixed_inputs_never_move() -> None:
    assert (
        request_key("draft", "sim", None, "Write about bees. ☃", 400, 0.0)
        == "f9929afcb35b8f214b8336e8db2ab79d"
    )
    assert (
        request_key(
            "edit", "openai:gpt-4o", "sys", "x", 10, 0.7, '{"b": 1}', True, ("revision", 2), ("repair", "bad")
        )
        == "4898544aec5d83cb94b77fd2a82c6fe8"
    )
    assert request_key("t", "sim", {"z": 1, "a": [1, 2]}, Odd(), 1, 0) == "32b6bf70a0c00692a6459c2192e82615"
