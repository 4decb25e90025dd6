#!/usr/bin/env bash
# JupyterHub spawn benchmark: spawn-to-ready time of JupyterLab servers with MoatSpawner
# against JupyterHub's local-process spawner (no sandbox), same machine, same run;
# medians of RUNS sequential spawns, then CONCURRENT servers asked for at once.
#
#   sudo bench/jupyterhub.sh          # RUNS=10 CONCURRENT=20 MOAT=target/release/moat
#                                     # BENCH_CPU_LIMIT=1.0: MoatSpawner's cpu_limit
#
# Installs the Jupyter environment first (scripts/jupyter-env). Everything runs in a
# throwaway network namespace (the hub API on 10.77.0.1 on its lo); it is removed at the
# end with everything started in it.
set -euo pipefail
BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$BENCH_DIR")
RUNS=${RUNS:-10}
CONCURRENT=${CONCURRENT:-20}
ENV_DIR=${MOAT_JUPYTER:-/usr/local/lib/moat-jupyter}
if [[ -z ${MOAT:-} ]]; then
    if [[ -x $REPO/target/release/moat ]]; then MOAT=$REPO/target/release/moat
    else MOAT=$REPO/target/debug/moat; fi
fi
die() { echo "jupyterhub.sh: $*" >&2; exit 1; }
[[ $(id -u) -eq 0 ]] || die "must run as root"
"$REPO/scripts/jupyter-env"

NS=moat-bench-hub-$$
WORK=$(mktemp -d /var/tmp/moat-bench-hub.XXXXXX)
chmod 0711 "$WORK"
DRIVER=
cleanup() {
    set +e
    if [[ -n $DRIVER ]]; then
        kill -TERM "$DRIVER" 2>/dev/null
        wait "$DRIVER" 2>/dev/null
    fi
    nsenter --net="/run/netns/$NS" -- "$MOAT" gc --quiet 2>/dev/null
    ip netns del "$NS" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
ip netns add "$NS"
ip -n "$NS" link set lo up
ip -n "$NS" addr add 10.77.0.1/32 dev lo

echo "moat: $MOAT; $RUNS sequential spawns and $CONCURRENT at once per spawner" >&2
# In the background, so that a signal to this script reaches the driver at once.
nsenter --net="/run/netns/$NS" -- "$ENV_DIR/venv/bin/python" "$BENCH_DIR/jupyterhub_bench.py" \
    "$WORK" "$MOAT" "$ENV_DIR" "$RUNS" "$CONCURRENT" >"$WORK/results.jsonl" &
DRIVER=$!
wait "$DRIVER"
DRIVER=
cat "$WORK/results.jsonl" >&2

"$ENV_DIR/venv/bin/python" - "$WORK/results.jsonl" "$RUNS" "$CONCURRENT" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
runs, concurrent = sys.argv[2], sys.argv[3]
get = lambda spawner, measure: next(r for r in rows if r["spawner"] == spawner and r["measure"] == measure)
local, moat = get("local", "sequential"), get("moat", "sequential")
ratio = moat["median_s"] / local["median_s"]
print("| Measure | Local process (no sandbox) | MoatSpawner | Ratio | Target |")
print("|---|---|---|---|---|")
print(f"| Spawn to ready, JupyterLab, median of {runs} (min–max) "
      f"| {local['median_s']:.2f} s ({local['min_s']:.2f}–{local['max_s']:.2f}) "
      f"| {moat['median_s']:.2f} s ({moat['min_s']:.2f}–{moat['max_s']:.2f}) "
      f"| {ratio:.2f}× | ≤ 1.2×: {'met' if ratio <= 1.2 else '**not met**'} |")
if local.get("answering_median_s") and moat.get("answering_median_s"):
    a = moat["answering_median_s"] / local["answering_median_s"]
    print(f"| Spawn to the server answering (polled every 20 ms, not by the hub), median of {runs} (min–max) "
          f"| {local['answering_median_s']:.2f} s ({local['answering_min_s']:.2f}–{local['answering_max_s']:.2f}) "
          f"| {moat['answering_median_s']:.2f} s ({moat['answering_min_s']:.2f}–{moat['answering_max_s']:.2f}) "
          f"| {a:.2f}× | ≤ 1.2×: {'met' if a <= 1.2 else '**not met**'} |")
lc, mc = get("local", "concurrent"), get("moat", "concurrent")
fmt = lambda r: (f"{r['ready']} ready, {r['failed']} failed; all in {r['all_ready_s']:.1f} s, median {r['median_s']:.1f} s"
                 if r["all_ready_s"] is not None else f"{r['ready']} ready, {r['failed']} failed")
ok = mc["failed"] == 0 and mc["ready"] == int(concurrent)
print(f"| {concurrent} servers asked for at once | {fmt(lc)} | {fmt(mc)} | — | all ready, none failed: {'met' if ok else '**not met**'} |")
PY
