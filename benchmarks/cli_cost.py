"""What a CLI command costs against loading the code location: the demo `plan` and a no-change `sync`, each timed
pair by pair with `python -c "import scim_pipeline.definitions"` in the same run (these machines are noisy: the
ratios matter, not the absolute times), and the Dagster events each run stores.

    python benchmarks/cli_cost.py                        # this checkout
    python benchmarks/cli_cost.py --venv /other/checkout/.venv --rounds 7   # another checkout, for before/after

Each command runs as its own process in a fresh demo home (`DAGSTER_HOME`), after one warm-up sync.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path


def timed(command: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def events_of_last_runs(python: str, env: dict[str, str], runs: int) -> list[tuple[str, int, dict[str, int]]]:
    """(job, events stored, by type) of the newest ``runs`` runs in the home, read by the checkout's own Python."""
    script = (
        "import json,collections\n"
        "from dagster import DagsterInstance\n"
        "i=DagsterInstance.get()\n"
        f"out=[]\n"
        f"for r in i.get_runs(limit={runs}):\n"
        "    logs=i.all_logs(r.run_id)\n"
        "    c=collections.Counter(e.dagster_event.event_type_value if e.dagster_event else 'log' for e in logs)\n"
        "    dry=r.run_config.get('ops',{}).get('scim_cycle',{}).get('config',{}).get('dry_run')\n"
        "    out.append(['plan' if dry else 'sync',len(logs),dict(c)])\n"
        "print(json.dumps(out))\n"
    )
    import json

    result = subprocess.run([python, "-c", script], env=env, check=True, capture_output=True, text=True)
    return [(job, count, by_type) for job, count, by_type in json.loads(result.stdout.strip().splitlines()[-1])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--venv", default=str(Path(sys.executable).parent.parent), help="the checkout's venv")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    venv = Path(args.venv)
    python, cli = str(venv / "bin" / "python"), str(venv / "bin" / "scim-pipeline")
    home = tempfile.mkdtemp(prefix="cli-cost-")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCIM_")}
    env["DAGSTER_HOME"] = home
    subprocess.run([cli, "demo"], env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    load = [python, "-c", "import scim_pipeline.definitions"]
    figures: dict[str, list[float]] = {"load": [], "plan": [], "sync": []}
    ratios: dict[str, list[float]] = {"plan": [], "sync": []}
    for _ in range(args.rounds):
        for command in ("plan", "sync"):
            base = timed(load, env)
            took = timed([cli, command], env)
            figures["load"].append(base)
            figures[command].append(took)
            ratios[command].append(took / base)
    print(f"checkout: {venv.parent}   rounds: {args.rounds}   (median, min-max; seconds of wall time)")
    for name, values in figures.items():
        print(f"  {name:<6} {statistics.median(values):6.2f}  ({min(values):.2f}-{max(values):.2f})")
    for name, values in ratios.items():
        print(
            f"  {name} / load  {statistics.median(values):5.2f}x  ({min(values):.2f}-{max(values):.2f}), pair by pair"
        )
    for job, count, by_type in events_of_last_runs(python, env, 2):
        top = Counter(by_type).most_common(4)
        print(f"  events stored by one `{job}` run: {count} ({', '.join(f'{k} {v}' for k, v in top)})")


if __name__ == "__main__":
    main()
