#!/usr/bin/env bash
# A Ray head on this machine that shares nothing with anyone else's: every port Ray binds is a
# free one picked here (none of Ray's defaults: 6379, 8265, 10001, 52365, ...), and its
# sessions and logs go to a directory of its own. It runs in the foreground (`ray start
# --block`): ending this script (Ctrl-C, or `kill` of its process id) ends the head's
# processes, and only them (`ray stop` would end every Ray cluster on the machine).
#
#   bash scripts/ray_head.sh DIR [ray start options...] &       start a head; DIR keeps its state
#                                                                 and its output (head.log)
#   export RAY_ADDRESS=$(bash scripts/ray_head.sh --address DIR)  wait until it is up (at most
#                                                                 2 minutes), then print the
#                                                                 address its CLIs use
set -euo pipefail
PYTHON=${PYTHON:-python3}
if [[ "${1:-}" == "--address" ]]; then
    address_file="${2:?usage: ray_head.sh --address DIR}/address"
    for _ in $(seq 240); do
        [[ -s "$address_file" ]] && { cat "$address_file"; exit 0; }
        sleep 0.5
    done
    echo "ray_head.sh: no head came up in $2 within 2 minutes (see $2/head.log)" >&2
    exit 1
fi
dir=${1:?usage: ray_head.sh DIR [ray start options...]}
shift
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
rm -f "$dir/address"
# Seven ports free now, each bound and released by the kernel's choice (another process could
# still take one before Ray does; the head then fails to start and says which port).
read -r gcs dashboard client agent_http agent_grpc metrics runtime_env < <("$PYTHON" - <<'EOF'
import socket
sockets = [socket.socket() for _ in range(7)]
for s in sockets:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in sockets))
for s in sockets:
    s.close()
EOF
)
address="http://127.0.0.1:$dashboard"
# The address file appears once the dashboard answers (any HTTP status: with token
# authentication it answers 401): what `--address` waits for. The watcher ends with the head.
head_pid=$$
answers='import sys, urllib.error, urllib.request
try:
    urllib.request.urlopen(sys.argv[1], timeout=2)
except urllib.error.HTTPError:
    pass'
(
    for _ in $(seq 240); do
        kill -0 "$head_pid" 2>/dev/null || exit 0
        if "$PYTHON" -c "$answers" "$address/api/version" >/dev/null 2>&1; then
            echo "$address" >"$dir/address"
            exit 0
        fi
        sleep 0.5
    done
) &
# Ray's sessions in a short directory of the head's own (Ray's socket paths have a length
# limit), named from DIR, and removed when the head ends.
ray_tmp=$(mktemp -d /tmp/ray-head-XXXXXX)
ln -sfn "$ray_tmp" "$dir/ray"
# With token authentication `ray start` needs a token and makes none (only `ray.init` does):
# on a machine without one yet, make it, where Ray's CLIs look (~/.ray/auth_token); under a
# lock, so that two heads started at once make one token, not one each.
if [[ "${RAY_AUTH_MODE:-}" == "token" && -z "${RAY_AUTH_TOKEN:-}" ]]; then
    mkdir -p "$HOME/.ray"
    if command -v flock >/dev/null; then
        flock "$HOME/.ray/auth_token.lock" ray get-auth-token --generate >/dev/null
    else
        ray get-auth-token --generate >/dev/null
    fi
fi
echo "ray head: GCS 127.0.0.1:$gcs, dashboard $address; its output and state in $dir" >&2
ray start --head --block --disable-usage-stats --temp-dir="$ray_tmp" \
    --node-ip-address=127.0.0.1 --port="$gcs" --dashboard-host=127.0.0.1 --dashboard-port="$dashboard" \
    --ray-client-server-port="$client" --dashboard-agent-listen-port="$agent_http" \
    --dashboard-agent-grpc-port="$agent_grpc" --metrics-export-port="$metrics" \
    --runtime-env-agent-port="$runtime_env" "$@" >"$dir/head.log" 2>&1 &
ray_pid=$!
# `ray start --block` ends the head's processes on SIGTERM: pass it on, wait, clean up.
trap 'kill -TERM "$ray_pid" 2>/dev/null' TERM INT
status=0
wait "$ray_pid" || status=$?
wait "$ray_pid" 2>/dev/null || true
rm -rf "$ray_tmp" "$dir/ray"
exit "$status"
