"""`scim-pipeline demo | sync | plan | check | verify-workflows | emulator` — the command line.

`demo`, `sync` and `plan` run the code location's own assets in-process against the Dagster instance in
$DAGSTER_HOME, so every run also shows in `dagster dev`. `check` proves the connection; `emulator` serves the bundled
Delinea emulator on loopback; `verify-workflows` runs the workflows Delinea asks to verify in staging on throwaway
objects.

Imports are deferred to the command that needs them: `--help` and `emulator` start without Dagster, pandas or the
SCIM client (well over a second of CPU), and `check` and `verify-workflows` without Dagster.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import os
import sys
import warnings
from collections.abc import Sequence
from typing import NoReturn

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
# The reader of our output went away (`| head`): the work itself is done; exit as a Unix tool killed by SIGPIPE
# would, without a traceback.
_READER_GONE = 128 + 13


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `scim-pipeline` command."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    parser = _build_parser(emulator_options=_command_of(arguments) == "emulator")
    args = parser.parse_args(arguments)
    if not getattr(args, "command", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        code: int = args.handler(args)
    except Exception as error:
        if not _expected(error):
            raise
        # Every expected failure is a one-line message naming the setting or row at fault, never a traceback.
        print(f"scim-pipeline {args.command}: {error}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return code


def run() -> NoReturn:
    """The `scim-pipeline` console script: `main`, then a quick exit."""
    try:
        code = main()
    except BrokenPipeError:
        code = _READER_GONE
    _exit_now(code)


def _exit_now(code: int) -> NoReturn:
    # Tearing down an interpreter that imported Dagster and pandas frees every object one by one: 0.5-0.9 s after the
    # summary is printed, a sixth of a no-change sync. The exit hooks still run (logging, temporary folders); only
    # the freeing is skipped, as the operating system reclaims the memory at once.
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BrokenPipeError:
            code = code or _READER_GONE
        except (OSError, ValueError):
            pass  # a stream closed by the caller: nothing more can be said there
    os._exit(code)


def _expected(error: Exception) -> bool:
    """A `ScimPipelineError` (a setting, a row, the target) or a `ValueError`: reported in one line."""
    # Looked up rather than imported: the SCIM package costs the emulator command most of its start-up, and an error
    # of that class can only have been raised once its module was loaded.
    errors = sys.modules.get("scim_pipeline.scim.errors")
    return isinstance(error, ValueError) or (errors is not None and isinstance(error, errors.ScimPipelineError))


def _command_of(arguments: Sequence[str]) -> str | None:
    """The sub-command named on the command line (the first word that is not an option), if any."""
    return next((word for word in arguments if not word.startswith("-")), None)


def _quiet_dagster_warnings() -> None:
    # Dagster marks some parameters we rely on as beta; that is for us to track, not for the person at the terminal.
    from dagster import BetaWarning, PreviewWarning

    warnings.filterwarnings("ignore", category=BetaWarning)
    warnings.filterwarnings("ignore", category=PreviewWarning)


def _build_parser(*, emulator_options: bool = True) -> argparse.ArgumentParser:
    """The argument parser; `emulator_options=False` leaves out the emulator's options (listing the command in
    `--help` needs only its name and help, and its options would import the emulator's web stack)."""
    parser = argparse.ArgumentParser(
        prog="scim-pipeline",
        description="Provision an IdP roster into the Delinea Platform (or any RFC 7644 SCIM service provider).",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = commands.add_parser("demo", help="run a full cycle on the embedded emulator and the sample roster")
    _add_output_options(demo)
    demo.set_defaults(handler=_run_demo)

    for name, help_text in (
        ("sync", "run a sync cycle (all shards, or those given) and print a summary"),
        (
            "plan",
            "compute and show the change sets without executing anything (same as sync --dry-run)",
        ),
    ):
        sub = commands.add_parser(name, help=help_text)
        sub.add_argument(
            "--shard",
            action="append",
            type=int,
            default=None,
            metavar="K",
            help="only this shard (repeatable)",
        )
        sub.add_argument(
            "--user",
            metavar="NAME",
            default=None,
            help="provision on demand: only this roster user (its userName) and its memberships, now; no one else "
            "is created, changed or deprovisioned",
        )
        if name == "sync":
            sub.add_argument(
                "--dry-run",
                action="store_true",
                help="materialize the change sets, execute nothing",
            )
        sub.add_argument(
            "--reconcile",
            action="store_true",
            help="also read the whole target and report and repair drift",
        )
        sub.add_argument(
            "--allow-mass-changes",
            action="store_true",
            help="let this one run pass the deletion, empty-roster, mass-change and removal guards",
        )
        _add_output_options(sub)
        sub.set_defaults(handler=_run_sync, dry_run=name == "plan")

    check = commands.add_parser("check", help="prove the token and each resource type answer; print a table")
    check.add_argument("--base-url", help="overrides SCIM_BASE_URL")
    check.add_argument("--token-url", help="overrides SCIM_TOKEN_URL")
    check.add_argument(
        "--client-id",
        help="overrides SCIM_CLIENT_ID (the secret only comes from SCIM_CLIENT_SECRET)",
    )
    check.add_argument("--scope", help="overrides SCIM_SCOPE")
    check.add_argument("--profile", choices=["delinea", "rfc7644"], help="overrides SCIM_PROFILE")
    check.add_argument("--ca-bundle", help="overrides SCIM_CA_BUNDLE")
    check.add_argument(
        "--probe-writes",
        action="store_true",
        help="also create, patch and delete a probe user (and group, where allowed) to learn which PATCH forms the "
        "target accepts",
    )
    check.set_defaults(handler=_run_check)

    verify = commands.add_parser(
        "verify-workflows",
        help="run the staging workflows (create, update, group assignment, membership change, disable, delete) on "
        "throwaway scim-pipeline-verify-* objects, each read back, then clean up; print a table",
    )
    verify.add_argument(
        "--with-containers",
        action="store_true",
        help="Delinea: also add and delete a permission on the container scim-pipeline-verify-container, created "
        "once and reused (SCIM cannot delete containers)",
    )
    verify.add_argument(
        "--user-domain",
        default="example.com",
        help="domain of the throwaway userName (default example.com; give one of your tenant's login suffixes if it "
        "accepts no other)",
    )
    verify.add_argument("--json", dest="as_json", action="store_true", help="print the report as JSON")
    verify.set_defaults(handler=_run_verify)

    pools = commands.add_parser(
        "pools",
        help="give each pool of the code location its limit in the Dagster instance ($DAGSTER_HOME) before the "
        "daemon first queues its runs (run once after `dagster instance migrate`)",
    )
    pools.add_argument(
        "--module",
        default=None,
        help="the code location's module, whose `defs` are read (default scim_pipeline.definitions)",
    )
    pools.set_defaults(handler=_run_pools)

    emulator = commands.add_parser("emulator", help="serve the Delinea-compatible emulator on loopback")
    if emulator_options:
        from scim_pipeline.emulator import cli as emulator_cli

        emulator_cli.add_arguments(emulator)
        emulator.set_defaults(handler=emulator_cli.run)
    return parser


def _add_output_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--all", dest="show_all", action="store_true", help="list everyone, not only the first 10")
    parser.add_argument("--json", dest="as_json", action="store_true", help="print the outcome as JSON")
    parser.add_argument("--verbose", action="store_true", help="also print retry and pacing lines")


def _run_check(args: argparse.Namespace) -> int:
    from scim_pipeline.scim import ConfigurationError, ConnectionSettings
    from scim_pipeline.scim.check import run_check

    overrides = {
        field: value
        for field, value in (
            ("base_url", args.base_url),
            ("token_url", args.token_url),
            ("client_id", args.client_id),
            ("scope", args.scope),
            ("profile", args.profile),
            ("ca_bundle", args.ca_bundle),
        )
        if value is not None
    }
    if not (overrides.get("base_url") or os.environ.get("SCIM_BASE_URL")):
        raise ConfigurationError(
            "SCIM_BASE_URL is not set: `check` tests a real target "
            "(start one with `scim-pipeline emulator` and export the variables it prints)"
        )
    settings = ConnectionSettings.from_env(**overrides)
    report = asyncio.run(run_check(settings, write_probes=args.probe_writes, containers=_access_containers()))
    print(report.render())
    return EXIT_OK if report.passed else EXIT_FAILED


def _run_verify(args: argparse.Namespace) -> int:
    from scim_pipeline.verify import verify_workflows_command

    return verify_workflows_command(
        with_containers=args.with_containers, user_domain=args.user_domain, as_json=args.as_json
    )


def _run_pools(args: argparse.Namespace) -> int:
    from dagster import DagsterInstance

    from scim_pipeline.resources.pools import DEFAULT_MODULE, code_location_pools, initialize_pool_limits
    from scim_pipeline.runner import ensure_dagster_home

    home = ensure_dagster_home()
    pools = code_location_pools(args.module or DEFAULT_MODULE)
    with DagsterInstance.from_config(str(home)) as instance:
        rows = initialize_pool_limits(instance, pools)
    for row in rows:
        if row.limit is None:
            print(f"pool {row.pool}: no limit (dagster.yaml sets no `concurrency: pools: default_limit`)")
        else:
            print(f"pool {row.pool}: limit {row.limit}" + (" (set now)" if row.set_now else ""))
    if not rows:
        print("the code location uses no pool")
    return EXIT_OK


def _access_containers() -> list[str]:
    """The container names of the access file (SCIM_ACCESS), whose rights `check` verifies; none when unset."""
    path = os.environ.get("SCIM_ACCESS", "").strip()
    if not path:
        return []
    from scim_pipeline.sync.pam.access import load_access

    return [container.name for container in load_access(path, users=(), groups=()).containers]


def _run_demo(args: argparse.Namespace) -> int:
    _quiet_dagster_warnings()
    from scim_pipeline.runner import run_sync_cycle
    from scim_pipeline.scim import ConfigurationError

    for name in ("SCIM_BASE_URL",):
        if os.environ.get(name):
            raise ConfigurationError(f"`demo` always runs on the embedded emulator: unset {name} (or use `sync`)")
    return run_sync_cycle(
        shards=None,
        dry_run=False,
        reconcile=False,
        allow_mass_changes=False,
        demo=True,
        show_all=args.show_all,
        as_json=args.as_json,
        verbose=args.verbose,
    )


def _run_sync(args: argparse.Namespace) -> int:
    if args.user is not None and not args.user.strip():
        print(f"scim-pipeline {args.command}: --user needs a name (a roster userName)", file=sys.stderr)
        return EXIT_USAGE
    if args.user is not None and args.shard:
        print(
            f"scim-pipeline {args.command}: --user and --shard do not go together (the user's own shard is used)",
            file=sys.stderr,
        )
        return EXIT_USAGE
    _quiet_dagster_warnings()
    from scim_pipeline.runner import run_sync_cycle

    return run_sync_cycle(
        shards=args.shard,
        dry_run=args.dry_run,
        reconcile=args.reconcile,
        allow_mass_changes=args.allow_mass_changes,
        demo=False,
        show_all=args.show_all,
        as_json=args.as_json,
        verbose=args.verbose,
        user=args.user,
    )


if __name__ == "__main__":
    run()
