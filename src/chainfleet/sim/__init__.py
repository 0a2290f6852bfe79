"""The simulated model: deterministic text offline, and a server that speaks the providers' APIs.

The model (used in-process by the ``sim`` provider, and by the server):

- :mod:`~chainfleet.sim.text`: prose from (seed, model, system, prompt), and token counts;
- :mod:`~chainfleet.sim.jsonvalue`: a JSON value for a schema;
- :mod:`~chainfleet.sim.structured`: how a request asks for JSON, and the reply it gets;
- :mod:`~chainfleet.sim.agent`: the model playing agent (which tools it calls, then its answer).

``chainfleet sim-server`` (:mod:`~chainfleet.sim.server`, which maps its parts): the wire formats
(:mod:`~chainfleet.sim.wire`, :mod:`~chainfleet.sim.responses`; conversations read by
:mod:`~chainfleet.sim.messages`, streams cut by :mod:`~chainfleet.sim.stream`), one request
(:mod:`~chainfleet.sim.call`), rate limits (:mod:`~chainfleet.sim.limits`,
:mod:`~chainfleet.sim.bucket`, :mod:`~chainfleet.sim.window`), faults
(:mod:`~chainfleet.sim.faults`), the slot queue (:mod:`~chainfleet.sim.queue`), settings and
counts (:mod:`~chainfleet.sim.settings`, :mod:`~chainfleet.sim.stats`), the batch APIs
(:mod:`~chainfleet.sim.batch`) and the admin routes (:mod:`~chainfleet.sim.admin`).

Imports go one way, down this list; nothing imports the server but the CLI, tests and
benchmarks::

    server > responses > wire > messages, stream, limits > window > bucket
    server > batch > wire
    server, batch > faults, settings, stats > call > structured > jsonvalue > text
    messages > call > agent > jsonvalue, text
"""
