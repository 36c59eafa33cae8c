#!/usr/bin/env bash
# Run scim-pipeline the production way on one machine: a code server (gRPC), the Dagster daemon (run queue,
# schedules, sensors, backfills, run monitoring and retries) and the webserver, all on PostgreSQL.
#
# Required environment (secrets only from here, never from a file in the repository):
#   DAGSTER_PG_HOST DAGSTER_PG_PORT DAGSTER_PG_USERNAME DAGSTER_PG_PASSWORD DAGSTER_PG_DB   Dagster's own storage
#   SCIM_BASE_URL SCIM_CLIENT_ID SCIM_CLIENT_SECRET SCIM_ROSTER ...                         the pipeline (README.md)
# Optional:
#   SCIM_STATE_DB       database of the pipeline's state store on the same server   (default: scim_state)
#   SCIM_STATE_URL      or the whole URL, without the password (PGPASSWORD supplies it)
#   SCIM_POOL_LIMITS    pool limits other than 1, e.g. "scim_target_hr=2 scim_target_lab=4"
#   DAGSTER_HOME        instance folder (default: ./.dagster_production); deploy/dagster.yaml is copied into it
#   WEBSERVER_HOST / WEBSERVER_PORT   where the UI listens (default 127.0.0.1:3000)
# Ctrl-C (or any of the three stopping) stops all three.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
for name in DAGSTER_PG_HOST DAGSTER_PG_PORT DAGSTER_PG_USERNAME DAGSTER_PG_PASSWORD DAGSTER_PG_DB; do
    if [[ -z "${!name:-}" ]]; then
        echo "run-local-production.sh: $name is not set (see the top of this script)" >&2
        exit 2
    fi
done

export DAGSTER_HOME="${DAGSTER_HOME:-$PWD/.dagster_production}"
mkdir -p "$DAGSTER_HOME"
cp "$here/dagster.yaml" "$DAGSTER_HOME/dagster.yaml"

# The state store: PostgreSQL too, the password from libpq's PGPASSWORD (never inside the URL).
export PGPASSWORD="${PGPASSWORD:-$DAGSTER_PG_PASSWORD}"
export SCIM_STATE_URL="${SCIM_STATE_URL:-postgresql+psycopg://${DAGSTER_PG_USERNAME}@${DAGSTER_PG_HOST}:${DAGSTER_PG_PORT}/${SCIM_STATE_DB:-scim_state}}"

# Create or upgrade Dagster's tables once, before three processes open them at the same time.
dagster instance migrate
# Each target's pool gets its limit before the daemon first dequeues (Dagster's first pass over a new pool blocks none).
scim-pipeline pools
for pool_limit in ${SCIM_POOL_LIMITS:-}; do
    dagster instance concurrency set "${pool_limit%%=*}" "${pool_limit#*=}"
done

pids=()
stop() {
    trap - EXIT INT TERM
    kill -TERM "${pids[@]}" 2>/dev/null || true
    # Give each 15 s to finish what it is doing (the daemon hands its queue back), then end it.
    for _ in $(seq 30); do
        alive=0
        for pid in "${pids[@]}"; do
            if kill -0 "$pid" 2>/dev/null; then alive=1; fi
        done
        if [[ $alive == 0 ]]; then return; fi
        sleep 0.5
    done
    kill -KILL "${pids[@]}" 2>/dev/null || true
}
trap stop EXIT INT TERM

dagster code-server start --host 127.0.0.1 --port 4266 --module-name scim_pipeline.definitions &
pids+=($!)
dagster-daemon run --workspace "$here/workspace.yaml" &
pids+=($!)
dagster-webserver --host "${WEBSERVER_HOST:-127.0.0.1}" --port "${WEBSERVER_PORT:-3000}" \
    --workspace "$here/workspace.yaml" &
pids+=($!)

# Whichever stops first (a crash, a kill) brings the others down: a supervisor (systemd, k8s) restarts the set.
wait -n "${pids[@]}"
