"""``scim-pipeline emulator``: serve the Delinea-compatible emulator on loopback until interrupted."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from types import FrameType

from ._config import DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, RATE_LIMIT_ANNOUNCEMENTS, EmulatorConfig
from ._server import EmulatorServer, is_loopback


def _client(text: str) -> tuple[str, str]:
    client_id, separator, secret = text.partition(":")
    if not separator or not client_id or not secret:
        raise argparse.ArgumentTypeError("expected ID:SECRET")
    return client_id, secret


def _attribute_list(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the emulator's options to ``parser`` (used by ``scim-pipeline emulator`` and ``-m``)."""
    parser.add_argument("--port", type=int, default=8765, help="port to listen on (0 = any free port)")
    parser.add_argument("--host", default="127.0.0.1", help="loopback address to bind (default 127.0.0.1)")
    parser.add_argument("--allow-remote", action="store_true", help="allow a non-loopback --host (a test server!)")
    parser.add_argument("--db", metavar="FILE", help="persist the state to this SQLite file")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="latency added to each request")
    parser.add_argument("--jitter-ms", type=float, default=0.0, help="random extra latency, up to N ms")
    parser.add_argument("--rate-limit", type=float, metavar="R", help="requests/s before answering 429")
    parser.add_argument("--retry-after", type=int, default=1, metavar="S", help="Retry-After of 429/503")
    parser.add_argument(
        "--announce-rate-limit",
        choices=RATE_LIMIT_ANNOUNCEMENTS,
        default="none",
        help="announce --rate-limit in the answers' headers (X-RateLimit-* or the IETF RateLimit fields)",
    )
    parser.add_argument("--fault-rate", type=float, default=0.0, help="share of transient 500/503 answers")
    parser.add_argument("--unavailable-rate", type=float, default=0.0, help="share of 503 answers (Retry-After)")
    parser.add_argument("--throttle-rate", type=float, default=0.0, help="share of 429 answers (Retry-After)")
    parser.add_argument("--drop-rate", type=float, default=0.0, help="share of dropped connections")
    parser.add_argument(
        "--fault-scope",
        type=_attribute_list,
        default=(),
        metavar="CALLS",
        help="comma-separated calls the four shares above hit (default: all), e.g. 'POST ContainerPermissions,Users'",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the random knobs")
    parser.add_argument(
        "--client",
        type=_client,
        action="append",
        metavar="ID:SECRET",
        help=f"an accepted OAuth client (repeatable; default {DEMO_CLIENT_ID}:{DEMO_CLIENT_SECRET})",
    )
    parser.add_argument("--page-size-cap", type=int, default=100, help="most resources per list page")
    parser.add_argument("--token-lifetime", type=float, default=3600.0, metavar="S", help="token lifetime")
    parser.add_argument("--request-log", metavar="FILE", help="append every request as a JSON line")
    interop = parser.add_argument_group("interoperability knobs (behave like other SCIM servers)")
    interop.add_argument(
        "--absolute-endpoints", action="store_true", help="announce /scim/v2/Users (not /Users) in /ResourceTypes"
    )
    interop.add_argument(
        "--refuse-attribute-path-patch", action="store_true", help="answer 501 to PATCH with an attribute path"
    )
    interop.add_argument(
        "--refuse-member-filter-removal", action="store_true", help='answer 501 to removing members[value eq "…"]'
    )
    interop.add_argument(
        "--allow-duplicate-names",
        action="store_true",
        help="accept Users with an existing userName and Groups with an existing displayName (no 409)",
    )
    interop.add_argument(
        "--drop-attributes",
        type=_attribute_list,
        default=(),
        metavar="PATHS",
        help="comma-separated attributes never stored nor in /Schemas (title,urn:…:User:department)",
    )
    interop.add_argument(
        "--strict-literal-filters",
        action="store_true",
        help="read filter values literally: no \\uXXXX decoding, quotes and backslashes cannot be matched",
    )
    parser.add_argument(
        "--no-owner-rights",
        dest="owner_rights",
        action="store_false",
        help="the service client lacks Owner on containers: PAM requests (but creating a container) answer 403",
    )


def config_from_args(args: argparse.Namespace) -> EmulatorConfig:
    clients = dict(args.client) if args.client else {DEMO_CLIENT_ID: DEMO_CLIENT_SECRET}
    return EmulatorConfig(
        db_path=args.db,
        clients=clients,
        token_lifetime_s=args.token_lifetime,
        page_size_cap=args.page_size_cap,
        latency_ms=args.latency_ms,
        latency_jitter_ms=args.jitter_ms,
        rate_limit_per_s=args.rate_limit,
        retry_after_s=args.retry_after,
        announce_rate_limit=args.announce_rate_limit,
        fault_rate=args.fault_rate,
        unavailable_rate=args.unavailable_rate,
        throttle_rate=args.throttle_rate,
        drop_rate=args.drop_rate,
        fault_scope=args.fault_scope,
        seed=args.seed,
        request_log_path=args.request_log,
        absolute_endpoints=args.absolute_endpoints,
        refuse_attribute_path_patch=args.refuse_attribute_path_patch,
        refuse_member_filter_removal=args.refuse_member_filter_removal,
        drop_attributes=args.drop_attributes,
        allow_duplicate_names=args.allow_duplicate_names,
        strict_literal_filters=args.strict_literal_filters,
        owner_rights=args.owner_rights,
    )


def run(args: argparse.Namespace) -> int:
    """Serve until interrupted (Ctrl-C or SIGTERM); returns the process exit code."""
    if not args.allow_remote and not is_loopback(args.host):
        print(f"error: --host {args.host} is not a loopback address; add --allow-remote", file=sys.stderr)
        return 2
    try:
        config = config_from_args(args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    server = EmulatorServer(config, host=args.host, port=args.port, allow_remote=args.allow_remote)
    try:
        server.start()
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1

    def stop(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    # The handler goes in before the "Press Ctrl-C" line: whoever reads that line may stop us at once.
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, stop) if in_main_thread else None
    try:
        _print_connection(config, server, args.db)
        server.wait()
    except KeyboardInterrupt:
        pass
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)
        server.stop()
    return 0


def _print_connection(config: EmulatorConfig, server: EmulatorServer, db: str | None) -> None:
    client_id, secret = next(iter(config.clients.items()))
    shown_secret = secret if (client_id, secret) == (DEMO_CLIENT_ID, DEMO_CLIENT_SECRET) else "<your secret>"
    where = f"state in {db}" if db else "state in memory"
    print(f"Delinea SCIM emulator listening ({where})")
    print(f"  SCIM base URL: {server.base_url}")
    print(f"  token URL:     {server.token_url}")
    print("Point scim-pipeline at it with:")
    print(f"  export SCIM_BASE_URL={server.base_url}")
    print(f"  export SCIM_TOKEN_URL={server.token_url}")
    print(f"  export SCIM_CLIENT_ID={client_id}")
    print(f"  export SCIM_CLIENT_SECRET={shown_secret}")
    print("Press Ctrl-C to stop.", flush=True)
