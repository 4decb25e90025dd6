#!/usr/bin/env bash
# moat network benchmark: start-up cost of the network, TCP throughput and TCP connection
# set-up through a moat sandbox, against a plain (unfiltered) veth path.
#
#   sudo bench/net.sh
#
# Everything happens inside throwaway network namespaces created here, so no packet
# leaves the machine:
#
#   plain netns  (moat-bench-netplain-PID)  the unfiltered veth path: routed like a
#       | veth 198.51.100.2/30                sandbox, but no moat rules and no NAT
#       | veth 198.51.100.1/30
#   outer netns  (moat-bench-net-PID)   moat runs here; its sandboxes' veths, nftables
#       | veth 203.0.113.1/24            table `inet moat` and masquerade live here
#       | veth 203.0.113.10/24
#   test host    (moat-bench-nethost-PID)  receiver / source / listener (python3)
#
# The test host has no default route; the outer netns has none either. Both namespaces
# and the servers are removed on exit.
#
# Environment (all optional):
#   MOAT=/path/to/moat        moat binary (default: target/release/moat, else target/debug/moat)
#   PYTHON=/usr/bin/python3   python3 visible inside the sandbox (the host's /usr is shown)
#   STARTUP_RUNS=40           runs per start-up case (bench/startup_latency.py)
#   REPS=5                    repetitions of each throughput measurement (median reported)
#   XFER_MIB=1024             bytes per throughput transfer, in MiB
#   CONN_N=1000               sequential connect+close per connection measurement
#   CONN_REPS=3               repetitions of the connection measurement (median reported)
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$BENCH_DIR")
STARTUP_RUNS=${STARTUP_RUNS:-40}
REPS=${REPS:-5}
XFER_MIB=${XFER_MIB:-1024}
CONN_N=${CONN_N:-1000}
CONN_REPS=${CONN_REPS:-3}
PYTHON=${PYTHON:-/usr/bin/python3}
if [[ -z ${MOAT:-} ]]; then
    if [[ -x $REPO/target/release/moat ]]; then MOAT=$REPO/target/release/moat
    else MOAT=$REPO/target/debug/moat; fi
fi

OUTER=moat-bench-net-$$
TESTHOST=moat-bench-nethost-$$
PLAIN=moat-bench-netplain-$$
OUTER_IP=203.0.113.1
HOST_IP=203.0.113.10
PLAIN_GW=198.51.100.1
PLAIN_IP=198.51.100.2
PORT_SINK=9000 # receiver: counts bytes, answers with the count
PORT_SRC=9001  # source: sends the number of bytes asked for
PORT_ACC=9002  # listener: accepts and closes
XFER_BYTES=$((XFER_MIB * 1024 * 1024))

die() { echo "net.sh: $*" >&2; exit 1; }

[[ $(id -u) -eq 0 ]] || die "must run as root (sudo bench/net.sh)"
for tool in ip nsenter python3 jq; do
    command -v "$tool" >/dev/null || die "missing tool: $tool (apt-get install -y jq iproute2 util-linux python3 gcc)"
done
[[ -x $MOAT ]] || die "no moat binary at $MOAT (cargo build --release -p moat)"
[[ -x $PYTHON ]] || die "no python3 at $PYTHON (it must be under /usr to be seen in the sandbox)"

WORK=$(mktemp -d /tmp/moat-bench-net.XXXXXX)
SERVER_PIDS=()
NETNS_MADE=()

cleanup() {
    local rc=$?
    set +e
    for pid in "${SERVER_PIDS[@]}"; do
        kill "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
    done
    if [[ -e /run/netns/$OUTER ]]; then
        nsenter --net="/run/netns/$OUTER" -- "$MOAT" gc --quiet >/dev/null 2>&1
    fi
    for ns in "${NETNS_MADE[@]}"; do
        ip netns del "$ns" 2>/dev/null
    done
    rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

in_outer() { nsenter --net="/run/netns/$OUTER" -- "$@"; }
in_host() { nsenter --net="/run/netns/$TESTHOST" -- "$@"; }
in_plain() { nsenter --net="/run/netns/$PLAIN" -- "$@"; }

# ---------------------------------------------------------------------------------------
# The traffic tool. Passed to python with -c so that it also works inside the sandbox.
# ---------------------------------------------------------------------------------------
read -r -d '' NETPY <<'EOF' || true
import json, socket, sys, time, threading

BUF = 1 << 20

def serve(port, handler, ready):
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("0.0.0.0", port))
    ls.listen(1024)
    open(ready, "w").close()
    while True:
        c, _ = ls.accept()
        try:
            handler(c)
        except OSError:
            pass
        finally:
            c.close()

def sink(c):                      # count bytes until EOF, answer with the count
    buf = bytearray(BUF); n = 0
    while True:
        k = c.recv_into(buf)
        if not k:
            break
        n += k
    c.sendall(n.to_bytes(8, "big"))

def source(c):                    # read an 8-byte size, send that many bytes, close
    want = int.from_bytes(recvn(c, 8), "big")
    data = memoryview(bytes(BUF))
    while want > 0:
        k = min(want, BUF)
        c.sendall(data[:k]); want -= k

def accept_close(c):
    pass

def recvn(c, n):
    b = b""
    while len(b) < n:
        k = c.recv(n - len(b))
        if not k:
            raise OSError("short read")
        b += k
    return b

def report(kind, nbytes, secs, **extra):
    d = {"kind": kind, "bytes": nbytes, "secs": secs,
         "MBps": nbytes / secs / 1e6, "Gbps": nbytes * 8 / secs / 1e9}
    d.update(extra)
    print(json.dumps(d), flush=True)

cmd = sys.argv[1]
if cmd == "serve":                # serve READY_PREFIX SINK_PORT SRC_PORT ACC_PORT
    pre = sys.argv[2]
    ts = [threading.Thread(target=serve, args=(int(p), h, f"{pre}.{p}"), daemon=True)
          for p, h in zip(sys.argv[3:6], (sink, source, accept_close))]
    for t in ts: t.start()
    for t in ts: t.join()
elif cmd == "send":               # send HOST PORT BYTES: upload, timed to the receiver's ack
    host, port, total = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    data = memoryview(bytes(BUF))
    s = socket.create_connection((host, port))
    t0 = time.perf_counter(); left = total
    while left > 0:
        k = min(left, BUF)
        s.sendall(data[:k]); left -= k
    s.shutdown(socket.SHUT_WR)
    got = int.from_bytes(recvn(s, 8), "big")
    secs = time.perf_counter() - t0
    s.close()
    if got != total:
        sys.exit(f"receiver counted {got} bytes, sent {total}")
    report("send", total, secs)
elif cmd == "fetch":              # fetch HOST PORT BYTES: download until EOF
    host, port, total = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    s = socket.create_connection((host, port))
    buf = bytearray(BUF); n = 0
    t0 = time.perf_counter()
    s.sendall(total.to_bytes(8, "big"))
    while True:
        k = s.recv_into(buf)
        if not k:
            break
        n += k
    secs = time.perf_counter() - t0
    s.close()
    if n != total:
        sys.exit(f"got {n} bytes, expected {total}")
    report("fetch", total, secs)
elif cmd == "connect":            # connect HOST PORT N: N sequential connect+close
    host, port, n = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    for _ in range(10):           # warm-up (ARP, route and conntrack caches)
        socket.create_connection((host, port)).close()
    t0 = time.perf_counter()
    for _ in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.connect((host, port))
        s.close()
    secs = time.perf_counter() - t0
    print(json.dumps({"kind": "connect", "n": n, "secs": secs, "us_per_conn": secs / n * 1e6}),
          flush=True)
else:
    sys.exit("unknown command " + cmd)
EOF

# ---------------------------------------------------------------------------------------
# Namespaces and the veth between them (203.0.113.0/24, TEST-NET-3, nothing routed out)
# ---------------------------------------------------------------------------------------
ip netns add "$OUTER"
NETNS_MADE+=("$OUTER")
ip netns add "$TESTHOST"
NETNS_MADE+=("$TESTHOST")
# Created directly inside the namespaces, so the names cannot clash with the host's.
ip link add bnet-o netns "$OUTER" type veth peer name bnet-h netns "$TESTHOST"
in_outer ip link set lo up
in_outer ip addr add "$OUTER_IP/24" dev bnet-o
in_outer ip link set bnet-o up
in_host ip link set lo up
in_host ip addr add "$HOST_IP/24" dev bnet-h
in_host ip link set bnet-h up

# The unfiltered veth path: a plain namespace routed through the outer one exactly as a
# sandbox is (veth, forwarding), with no rules of moat's for it and no NAT.
ip netns add "$PLAIN"
NETNS_MADE+=("$PLAIN")
ip link add bnet-p netns "$OUTER" type veth peer name eth0 netns "$PLAIN"
in_outer ip addr add "$PLAIN_GW/30" dev bnet-p
in_outer ip link set bnet-p up
in_outer sysctl -qw net.ipv4.ip_forward=1
in_plain ip link set lo up
in_plain ip addr add "$PLAIN_IP/30" dev eth0
in_plain ip link set eth0 up
in_plain ip route add default via "$PLAIN_GW"
in_host ip route add "$PLAIN_IP/32" via "$OUTER_IP"

# nsenter directly (not via in_host), so that $! is the python process itself.
nsenter --net="/run/netns/$TESTHOST" -- "$PYTHON" -c "$NETPY" serve "$WORK/ready" "$PORT_SINK" "$PORT_SRC" "$PORT_ACC" \
    >"$WORK/server.log" 2>&1 &
SERVER_PIDS+=("$!")
for _ in $(seq 100); do
    [[ -e $WORK/ready.$PORT_SINK && -e $WORK/ready.$PORT_SRC && -e $WORK/ready.$PORT_ACC ]] && break
    sleep 0.05
done
[[ -e $WORK/ready.$PORT_ACC ]] || die "test-host servers did not start: $(cat "$WORK/server.log")"

EGRESS="$HOST_IP/32:$PORT_SINK-$PORT_ACC/tcp"
host_py() { in_outer "$PYTHON" -c "$NETPY" "$@"; }
plain_py() { in_plain "$PYTHON" -c "$NETPY" "$@"; }
moat_py() { # moat_py [MOAT_OPTION...] -- ARG...
    local opts=()
    while [[ $1 != -- ]]; do opts+=("$1"); shift; done
    shift
    in_outer "$MOAT" run --net egress --egress "$EGRESS" "${opts[@]}" \
        -- "$PYTHON" -c "$NETPY" "$@" 2>>"$WORK/moat.stderr"
}

echo "moat: $MOAT ($("$MOAT" --version 2>/dev/null || echo '?'))" >&2
echo "kernel: $(uname -r), $(nproc) CPUs" >&2

# ---------------------------------------------------------------------------------------
# 1. Start-up cost of the network
# ---------------------------------------------------------------------------------------
echo "== start-up: --net none vs --net isolated ($STARTUP_RUNS runs each)" >&2
in_outer "$PYTHON" "$BENCH_DIR/startup_latency.py" "$MOAT" "$STARTUP_RUNS" none isolated \
    >"$WORK/startup.jsonl"
startup() { jq -r --arg mode "$1" "select(.mode == \$mode) | .$2" "$WORK/startup.jsonl"; }
START_NONE=$(startup none to_workload_ms)
START_ISO=$(startup isolated to_workload_ms)
WHOLE_NONE=$(startup none whole_ms)
WHOLE_ISO=$(startup isolated whole_ms)

# ---------------------------------------------------------------------------------------
# 2. Throughput (interleaved host / moat, REPS each)
# ---------------------------------------------------------------------------------------
: >"$WORK/results.jsonl"
record() { # record CASE < json line
    jq -c --arg case "$1" '. + {case: $case}' >>"$WORK/results.jsonl"
}
echo "== throughput: $XFER_MIB MiB per transfer, $REPS reps" >&2
for i in $(seq "$REPS"); do
    host_py send "$HOST_IP" "$PORT_SINK" "$XFER_BYTES" | record host-send
    plain_py send "$HOST_IP" "$PORT_SINK" "$XFER_BYTES" | record plain-send
    moat_py -- send "$HOST_IP" "$PORT_SINK" "$XFER_BYTES" | record moat-send
    moat_py --cpus "$(nproc)" -- send "$HOST_IP" "$PORT_SINK" "$XFER_BYTES" | record moatnocap-send
    host_py fetch "$HOST_IP" "$PORT_SRC" "$XFER_BYTES" | record host-fetch
    plain_py fetch "$HOST_IP" "$PORT_SRC" "$XFER_BYTES" | record plain-fetch
    moat_py -- fetch "$HOST_IP" "$PORT_SRC" "$XFER_BYTES" | record moat-fetch
    moat_py --cpus "$(nproc)" -- fetch "$HOST_IP" "$PORT_SRC" "$XFER_BYTES" | record moatnocap-fetch
    echo "   rep $i/$REPS done" >&2
done

# ---------------------------------------------------------------------------------------
# 3. Connection set-up (CONN_N sequential connect+close, CONN_REPS reps)
# ---------------------------------------------------------------------------------------
echo "== connect+close: $CONN_N per run, $CONN_REPS reps" >&2
for i in $(seq "$CONN_REPS"); do
    host_py connect "$HOST_IP" "$PORT_ACC" "$CONN_N" | record host-connect
    plain_py connect "$HOST_IP" "$PORT_ACC" "$CONN_N" | record plain-connect
    moat_py -- connect "$HOST_IP" "$PORT_ACC" "$CONN_N" | record moat-connect
done

# ---------------------------------------------------------------------------------------
# Table
# ---------------------------------------------------------------------------------------
"$PYTHON" - "$WORK/results.jsonl" "$START_NONE" "$START_ISO" "$WHOLE_NONE" "$WHOLE_ISO" \
    "$STARTUP_RUNS" "$REPS" "$XFER_MIB" "$CONN_N" "$CONN_REPS" <<'EOF'
import json, os, statistics, sys
path, s_none, s_iso, w_none, w_iso, sruns, reps, mib, conn_n, conn_reps = sys.argv[1:]
s_none, s_iso, w_none, w_iso = float(s_none), float(s_iso), float(w_none), float(w_iso)
rows = [json.loads(l) for l in open(path) if l.strip()]
def vals(case, key):
    return [r[key] for r in rows if r["case"] == case]
def med(case, key):
    return statistics.median(vals(case, key))
def rng(case, key, fmt):
    v = vals(case, key)
    return f"{fmt.format(min(v))}–{fmt.format(max(v))}"
def ok(b):
    return "met" if b else "**not met**"

d = s_iso - s_none
print("| Start-up | `--net none` | `--net isolated` | network's share | Target |")
print("|---|---|---|---|---|")
print(f"| Launch to the workload's first instruction (median of {sruns}) "
      f"| {s_none:.1f} ms | {s_iso:.1f} ms | {d:+.1f} ms | < 15 ms: {ok(d < 15)} |")
print(f"| Whole run of `/bin/date`, clean-up included (median of {sruns}) "
      f"| {w_none:.1f} ms | {w_iso:.1f} ms | {w_iso - w_none:+.1f} ms | — |")
print()
print("| Traffic (median, range in brackets) | Host process, outer namespace "
      "| Unfiltered veth path | moat sandbox | moat vs unfiltered | Target |")
print("|---|---|---|---|---|---|")
ncpu = os.cpu_count()
def rate(case):
    return (f"{med(case, 'MBps'):.0f} MB/s = {med(case, 'Gbps'):.1f} Gbit/s "
            f"({rng(case, 'MBps', '{:.0f}')})")
for case, label in (("send", "upload, sandbox → test host"),
                    ("fetch", "download, test host → sandbox")):
    p = med("plain-" + case, "MBps")
    for variant, vlabel in (("moat", "profile's 1-CPU cap"), ("moatnocap", f"`--cpus {ncpu}`")):
        r = med(f"{variant}-{case}", "MBps") / p
        print(f"| TCP {label}, {mib} MiB × {reps} ({vlabel}) | {rate('host-' + case)} "
              f"| {rate('plain-' + case)} | {rate(variant + '-' + case)} "
              f"| {r * 100:.0f} % | ≥ 90 %: {ok(r >= 0.9)} |")
def conn(case):
    return (f"{med(case, 'us_per_conn'):.0f} µs "
            f"({rng(case, 'us_per_conn', '{:.0f}')})")
p, m = med("plain-connect", "us_per_conn"), med("moat-connect", "us_per_conn")
print(f"| TCP connect+close, {conn_n} sequential × {conn_reps} | {conn('host-connect')} "
      f"| {conn('plain-connect')} | {conn('moat-connect')} | {m / p:.2f}× ({m - p:+.0f} µs) | — |")
EOF
