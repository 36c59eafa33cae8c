"""Leaver latency end to end through ``dagster-daemon``: the bundled emulator as the target, a roster folder, the
code location with the leaver sensor on (SCIM_LEAVER_SENSOR=true, default poll interval), everyone synced once;
then each repetition disables a user in the roster (or removes one, every other time) and times the change until
GET /Users/{id} on the target answers active=false. Then a minute of idle polls, counting the SCIM requests the
emulator receives. Prints every figure and the median (the issue's bar: 60 s; 0 requests when idle).

    python benchmarks/leaver_latency.py                  # 5 repetitions, 15 s polls
    python benchmarks/leaver_latency.py --repetitions 9 --poll-seconds 5 --idle-seconds 0
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from dagster import DagsterInstance, RunsFilter

from scim_pipeline.assets.sensors import LEAVER_TRIGGER_TAG
from tests.deploy.leaver import leaver_deployment, measure


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repetitions", type=int, default=5)
    parser.add_argument("--poll-seconds", type=int, default=15, help="SCIM_LEAVER_POLL_SECONDS (default 15)")
    parser.add_argument("--users", type=int, default=30)
    parser.add_argument("--idle-seconds", type=int, default=60)
    arguments = parser.parse_args()
    with (
        tempfile.TemporaryDirectory(prefix="leaver-") as folder,
        leaver_deployment(Path(folder), users=arguments.users, poll_seconds=arguments.poll_seconds) as deployment,
        DagsterInstance.get() as instance,
    ):
        deployment.start_daemon()
        deployment.wait_for_first_poll(instance)
        leavers = measure(deployment, instance, arguments.repetitions)
        seconds = [leaver.seconds for leaver in leavers]
        records = instance.get_run_records(filters=RunsFilter(tags={LEAVER_TRIGGER_TAG: "leaver_sensor"}))
        runs = sorted(records, key=lambda record: record.create_timestamp.timestamp())
        for repetition, (leaver, record) in enumerate(zip(leavers, runs, strict=False), start=1):
            created = record.create_timestamp.timestamp()
            print(
                f"  {repetition}: change -> run created by the sensor {created - leaver.changed_at:.1f} s, "
                f"-> run started {(record.start_time or created) - created:.1f} s, "
                f"-> run ended {(record.end_time or 0) - (record.start_time or created):.1f} s"
            )
        for repetition, value in enumerate(seconds, start=1):
            change = "removed" if repetition % 2 == 0 else "disabled"
            print(
                f"repetition {repetition}: user {change} in the roster -> active=false on the target in {value:.1f} s"
            )
        print(
            f"median {statistics.median(seconds):.1f} s, min {min(seconds):.1f} s, max {max(seconds):.1f} s "
            f"(poll every {arguments.poll_seconds} s; bar: 60 s)"
        )
        if arguments.idle_seconds:
            deployment.emulator.emulator.clear_requests()
            idle_from = time.time()
            time.sleep(arguments.idle_seconds)
            ticks = deployment.sensor_ticks(instance, after=idle_from)
            print(
                f"idle: {len(ticks)} sensor polls in {arguments.idle_seconds} s, "
                f"{len(deployment.scim_requests())} SCIM requests received by the target"
            )


if __name__ == "__main__":
    main()
