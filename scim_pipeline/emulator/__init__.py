"""A local SCIM service provider that behaves as Delinea documents its SCIM Cloud Connector.

It is the embedded default of the demo and ``dagster dev``, the target of the integration tests and a
staging stand-in (``scim-pipeline emulator`` or ``python -m scim_pipeline.emulator``)::

    from scim_pipeline.emulator import EmulatorConfig, EmulatorServer, create_app

    app = create_app(EmulatorConfig())        # ASGI: httpx.ASGITransport(app=app), no sockets
    with EmulatorServer(EmulatorConfig(db_path="demo.db")) as server:
        server.base_url, server.token_url     # uvicorn on 127.0.0.1, ephemeral port
        server.emulator.store                 # read or seed resources directly
        server.emulator.requests              # every request: method, path, query, status, latency
        server.emulator.force("drop-after")   # stage the next request's failure exactly

What it enforces: the OAuth client-credentials endpoint ``/identity/api/oauth2/token/xpmplatform``;
Users, Groups, Containers, ContainerPermissions and PrivilegedData with Delinea's capability matrix
(operations not offered answer 405); the seed's filter matrix joined by ``and`` only (anything else
answers 400 ``invalidFilter``, as does an unfiltered ContainerPermissions list); 409 ``uniqueness`` on a
duplicate userName (case-insensitive) or group displayName; PATCH add/replace/remove including
members (a member remove that matches nothing answers 400 ``noTarget``); ``active=false`` as a soft
delete and a PUT without ``active`` suspending the user (Delinea's documented behaviour); DELETE of a
user cascading to its memberships, container permissions and privileged data; a page-size cap; no
/Bulk. A PATCH of a group answers 204 unless ``attributes``/``excludedAttributes`` ask for a body, so a
large group is never echoed back. Test endpoints without a token: ``GET``/``DELETE /emulator/requests``,
``GET /emulator/state``, ``GET /emulator/counters``.

Knobs (``EmulatorConfig``, or the command line): latency and jitter on every request; a token-bucket
rate limit on SCIM requests answering 429 with ``Retry-After``; a share of 500/503 answers (before any
write); a share of dropped connections, half of them after the write was applied -- over a socket the
client sees ``httpx.RemoteProtocolError("Server disconnected without sending a response.")``, through
``httpx.ASGITransport`` it sees ``ConnectionDropped``; the token lifetime. Random knobs draw from
``random.Random(seed)``. A dropped request is recorded with status 0 and a note saying whether the
write happened.

Design choice: a focused Starlette application over stdlib SQLite, rather than scim2-server.
scim2-server (0.8.3) validates every resource through pydantic models; measured in-process it served
about 620 creates/s, 370 PATCHes/s and 80 ms per page of 100 users -- before adding persistence, the
three PAM resource types, the capability matrix and the filter matrix, each of which would mean
overriding its service and storage. The benchmarks push 100,000 users and 300,000 memberships through
the emulator, which must not be their bottleneck. Here a resource is a JSON body in one SQLite row
(plus the columns uniqueness, filters and the cascade need) and memberships are rows of their own;
scim2-models still parses filters and PATCH paths, so the grammar is the field's, not ours. The
emulator's own CPU cost per request (``benchmarks/emulator_throughput.py``, SQLite file, 2-core VM
shared with other jobs): about 0.45-0.65 ms per create or PATCH and 0.25-0.4 ms per GET or ``userName
eq`` lookup -- 1,500 to 4,000 requests/s on one core -- and 2-4 ms per page of 100 users.

State: several processes may share one SQLite file (WAL, ``BEGIN IMMEDIATE`` per write, a 30 s busy
timeout); ``synchronous=OFF`` because a test server must survive its process crashing, not a power cut.
Bearer tokens are kept only as SHA-256 hashes, in the file too, so a restart or another process on the
same file accepts them.
"""

from ._app import ConnectionDropped, Emulator, EmulatorApp, RequestRecord, create_app
from ._config import DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, EmulatorConfig
from ._errors import ScimError
from ._server import EmulatorServer
from ._store import ResourceStore, SearchResult

__all__ = [
    "DEMO_CLIENT_ID",
    "DEMO_CLIENT_SECRET",
    "ConnectionDropped",
    "Emulator",
    "EmulatorApp",
    "EmulatorConfig",
    "EmulatorServer",
    "RequestRecord",
    "ResourceStore",
    "ScimError",
    "SearchResult",
    "create_app",
]
