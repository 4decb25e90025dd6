#!/usr/bin/env bash
# moat daemon benchmark: memory of the daemon with N idle sandboxes, the memory of each
# sandbox's supervisor (`moat run`), and create-to-running latency, N sandboxes asked for
# at once.
#
#   sudo bench/daemon.sh            # N=50, MODE=isolated
#
# Runs the daemon in a throwaway network namespace with its own socket and state
# directory; everything is stopped and removed at the end.
set -euo pipefail
BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$BENCH_DIR")
N=${N:-50}
MODE=${MODE:-isolated}
if [[ -z ${MOAT:-} ]]; then
    if [[ -x $REPO/target/release/moat ]]; then MOAT=$REPO/target/release/moat
    else MOAT=$REPO/target/debug/moat; fi
fi
die() { echo "daemon.sh: $*" >&2; exit 1; }
[[ $(id -u) -eq 0 ]] || die "must run as root"
for tool in ip nsenter curl jq python3; do
    command -v "$tool" >/dev/null || die "missing tool: $tool (apt-get install -y iproute2 util-linux curl jq python3)"
done

NS=moat-bench-daemon-$$
WORK=$(mktemp -d /tmp/moat-bench-daemon.XXXXXX)
DAEMON=
cleanup() {
    set +e
    if [[ -n $DAEMON ]]; then
        for id in $(api GET /v1/sandboxes | jq -r '.sandboxes[] | select(.state == "running") | .id'); do
            api POST "/v1/sandboxes/$id/stop" '{"grace_seconds":0}' >/dev/null &
        done
        wait $(jobs -p | grep -v "^$DAEMON$") 2>/dev/null
        kill "$DAEMON" 2>/dev/null; wait "$DAEMON" 2>/dev/null
    fi
    nsenter --net="/run/netns/$NS" -- "$MOAT" gc --quiet 2>/dev/null
    ip netns del "$NS" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
api() { curl -s --unix-socket "$WORK/moat.sock" -X "$1" "http://moat$2" ${3:+-d "$3"}; }
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
# Proportional set size: shared pages (moat's code, libraries) split among the processes
# that map them, so the sum over processes is what they cost together.
pss_kib() { awk '/^Pss:/ {print $2}' "/proc/$1/smaps_rollup"; }

ip netns add "$NS"
ip -n "$NS" link set lo up
nsenter --net="/run/netns/$NS" -- "$MOAT" daemon --socket "$WORK/moat.sock" --state-dir "$WORK/state" \
    2>"$WORK/daemon.log" &
DAEMON=$!
for _ in $(seq 200); do [[ -S $WORK/moat.sock ]] && break; sleep 0.05; done
[[ -S $WORK/moat.sock ]] || die "the daemon did not start: $(cat "$WORK/daemon.log")"
sleep 0.5
IDLE_RSS=$(rss_kib "$DAEMON")

echo "== creating $N sandboxes at once (--net $MODE, sleep)" >&2
start=$(date +%s%N)
for i in $(seq "$N"); do
    api POST /v1/sandboxes "{\"name\":\"idle-$i\",\"command\":[\"sleep\",\"3600\"],\"network\":{\"mode\":\"$MODE\"}}" \
        >"$WORK/create-$i.json" &
done
wait $(jobs -p | grep -v "^$DAEMON$")
deadline=$((SECONDS + 120))
while :; do
    running=$(api GET /v1/sandboxes | jq '[.sandboxes[] | select(.state == "running")] | length')
    failed=$(api GET /v1/sandboxes | jq '[.sandboxes[] | select(.state == "failed" or .state == "exited")] | length')
    [[ $running -eq $N || $((running + failed)) -eq $N || $SECONDS -gt $deadline ]] && break
    sleep 0.1
done
all_ms=$((($(date +%s%N) - start) / 1000000))
sleep 2 # let the daemon settle after the burst
DAEMON_RSS=$(rss_kib "$DAEMON")
SUPERVISORS=$(api GET /v1/sandboxes | jq -r '.sandboxes[] | select(.state == "running") | .pid')
sup_total=0; sup_pss=0; sup_n=0
for pid in $SUPERVISORS; do
    kib=$(rss_kib "$pid" 2>/dev/null || echo 0)
    pss=$(pss_kib "$pid" 2>/dev/null || echo 0)
    sup_total=$((sup_total + kib)); sup_pss=$((sup_pss + pss)); sup_n=$((sup_n + 1))
done
DAEMON_PSS=$(pss_kib "$DAEMON")
api GET /metrics >"$WORK/metrics.txt"
p50=$(python3 - "$WORK/metrics.txt" <<'PY'
import re, sys
buckets = []
for line in open(sys.argv[1]):
    m = re.match(r'moat_sandbox_start_seconds_bucket\{le="([^"]+)"\} (\d+)', line)
    if m:
        buckets.append((float("inf") if m[1] == "+Inf" else float(m[1]), int(m[2])))
total = buckets[-1][1] if buckets else 0
for bound, count in buckets:
    if total and count >= total / 2:
        print(f"≤ {bound:g} s"); break
else:
    print("n/a")
PY
)
cat <<TABLE
| Measure ($N sandboxes, --net $MODE, asked for at once) | Result |
|---|---|
| sandboxes running / failed | $running / $failed |
| all running after | $all_ms ms |
| median create-to-running (daemon histogram bucket) | $p50 |
| daemon RSS, idle before / with $N sandboxes | $((IDLE_RSS / 1024)) MiB / $((DAEMON_RSS / 1024)) MiB (PSS $((DAEMON_PSS / 1024)) MiB); target < 30 MiB |
| each sandbox's supervisor (\`moat run\`), mean | RSS $((sup_n ? sup_total / sup_n / 1024 : 0)) MiB, PSS $((sup_n ? sup_pss / sup_n / 1024 : 0)) MiB ($sup_n supervisors: PSS $((sup_pss / 1024)) MiB in all) |
TABLE
