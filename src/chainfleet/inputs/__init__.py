"""Inputs: the items a pipeline runs over, streamed from a file or given in Python.

:func:`open_input` opens a text, JSON Lines or CSV file; :func:`items_from` wraps Python values.
Either gives an :class:`InputSource`, a re-iterable stream of :class:`Item` objects, each with a
stable ``id``. The modules behind these names, lowest first: :mod:`~chainfleet.inputs.item` (an
item and its id), :mod:`~chainfleet.inputs.lines` (reading a file safely, within limits),
:mod:`~chainfleet.inputs.formats` (a reader per format), :mod:`~chainfleet.inputs.source` (the
source, and checking a whole input up front)::

    from chainfleet.inputs import open_input

    source = open_input("topics.txt", input_field="topic")
    source.scan(required={"topic"})
"""

from chainfleet.inputs.item import Item
from chainfleet.inputs.source import InputSource, items_from, open_input

__all__ = ["InputSource", "Item", "items_from", "open_input"]
