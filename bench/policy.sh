#!/usr/bin/env bash
# moat runtime-policy benchmark: what KubeArmor-format policies (Landlock file rules,
# cgroup-BPF network rules) cost at run time and at start-up.
#
#   sudo bench/policy.sh
#
# For N = 0, 10, 1000, 10000 rules and four rule sets:
#   A  N file Block rules on paths that do not exist (/srv/none/fileI): skipped by moat
#   B  N file Block rules on real files under /usr/share (moat carves /usr/share into
#      one Landlock rule per sibling entry)
#   C  N network Block rules on distinct /32s in 10.0.0.0/8 (10.x.y.z/32, port 443): the
#      probe's connect to 127.0.0.1 falls in no address range
#   D  N network Block rules on 127.0.0.0/8, each on its own port (20000+I), none the
#      probe's: every connect to 127.0.0.1 searches the N port segments of one network
#      and matches none (the most rules one connect can meet). The ports must stay below the sandbox's ephemeral range, from which the
#      probe's listener takes its port; checked, and so is that a D policy with one more
#      rule on the ephemeral range does make the probe's connect fail
# it measures inside `moat run --label bench=yes [--policy P]`:
#   1. open+close of a file no rule blocks (/etc/hostname), ns/op, median of OPEN_REPS
#   2. fork+execve+wait of /bin/true, µs/exec, median of EXEC_REPS
#   3. socket+connect+accept+close against a listener on 127.0.0.1 in the same
#      process, ns/op, median of CONN_REPS
#   4. start-up of `moat run ... -- /bin/true` (hyperfine -N), median, ms
# and 1–3 natively (no moat) as the baseline row.
#
# The probe is a small C program compiled here and put in a --home directory. It is
# built dynamically and started through the ELF interpreter
# (/lib64/ld-linux-x86-64.so.2 /home/jovyan/probe ...) in every row, native included:
# the same start-up path is used everywhere so rows stay comparable; only the timed loops
# count. (Rule sets carry no process rule: with one, moat makes the home noexec, and
# nothing there runs, by design.)
#
# Environment (all optional):
#   MOAT=/path/to/moat   moat binary (default: target/release/moat, else target/debug/moat)
#   NS="0 10 1000 10000" rule counts
#   SETS="A B C D"       rule sets to measure (native and N=0 are always measured)
#   OPEN_N=1000000 OPEN_REPS=5   EXEC_N=2000 EXEC_REPS=3   CONN_N=20000 CONN_REPS=3
#   STARTUP_RUNS=20      hyperfine runs per start-up case (after 3 warm-up runs)
#   SLOW_START_MS=2000   a case whose first start takes longer gets 1 repetition per probe
#                        and 3 start-up runs without warm-up (marked * in the table)
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$BENCH_DIR")
NS=${NS:-"0 10 1000 10000"}
SETS=${SETS:-"A B C D"}
OPEN_N=${OPEN_N:-1000000}
OPEN_REPS=${OPEN_REPS:-5}
EXEC_N=${EXEC_N:-2000}
EXEC_REPS=${EXEC_REPS:-3}
CONN_N=${CONN_N:-20000}
CONN_REPS=${CONN_REPS:-3}
STARTUP_RUNS=${STARTUP_RUNS:-20}
SLOW_START_MS=${SLOW_START_MS:-2000}
OPEN_FILE=/etc/hostname
LDSO=/lib64/ld-linux-x86-64.so.2
if [[ -z ${MOAT:-} ]]; then
    if [[ -x $REPO/target/release/moat ]]; then MOAT=$REPO/target/release/moat
    else MOAT=$REPO/target/debug/moat; fi
fi

die() { echo "policy.sh: $*" >&2; exit 1; }

[[ $(id -u) -eq 0 ]] || die "must run as root (sudo bench/policy.sh)"
for tool in hyperfine gcc python3; do
    command -v "$tool" >/dev/null || die "missing tool: $tool (apt-get install -y hyperfine jq iproute2 util-linux python3 gcc)"
done
[[ -x $MOAT ]] || die "no moat binary at $MOAT (cargo build --release -p moat)"
[[ -x $LDSO ]] || die "no ELF interpreter at $LDSO"
[[ -r $OPEN_FILE ]] || die "$OPEN_FILE is missing"
for set in $SETS; do
    [[ $set == [ABCD] ]] || die "SETS: unknown rule set $set (A, B, C or D)"
done
has_set() { [[ " $SETS " == *" $1 "* ]]; }

ROOT=/tmp/moat-pbench
# moat's cache of parsed policy files: removed before each "first start" run
POLICY_CACHE=/run/moat/policy-cache
cleanup() {
    "$MOAT" gc --quiet >/dev/null 2>&1 || true
    rm -rf -- "$ROOT"
}
[[ -e $ROOT ]] && die "$ROOT exists (another run, or a leftover: remove it)"
trap cleanup EXIT
trap 'exit 130' INT TERM
mkdir -p "$ROOT" && chmod 0755 "$ROOT"
HOME_DIR=$ROOT/home
mkdir -m 0755 "$HOME_DIR"      # moat chowns it to the sandbox user
BUILD=$(mktemp -d "$ROOT/build.XXXXXX")
POL=$ROOT/policies
mkdir -m 0755 "$POL"

# ---- probe ---------------------------------------------------------------------------
cat >"$BUILD/probe.c" <<'EOF'
/* probe open PATH N | probe exec PATH N | probe connect N  -> prints ns per op */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e9 + t.tv_nsec;
}

int main(int argc, char **argv) {
    if (argc == 4 && !strcmp(argv[1], "open")) {
        long n = atol(argv[3]);
        int fd = open(argv[2], O_RDONLY | O_CLOEXEC);
        if (fd < 0) { perror("open"); return 1; }
        close(fd);
        double t0 = now();
        for (long i = 0; i < n; i++) {
            fd = open(argv[2], O_RDONLY | O_CLOEXEC);
            if (fd < 0) { perror("open"); return 1; }
            close(fd);
        }
        printf("%.1f\n", (now() - t0) / n);
        return 0;
    }
    if (argc == 4 && !strcmp(argv[1], "exec")) {
        long n = atol(argv[3]);
        char *av[] = {argv[2], NULL}, *ev[] = {NULL};
        double t0 = now();
        for (long i = 0; i < n; i++) {
            pid_t p = fork();
            if (p < 0) { perror("fork"); return 1; }
            if (p == 0) { execve(argv[2], av, ev); _exit(127); }
            int st;
            if (waitpid(p, &st, 0) < 0) { perror("waitpid"); return 1; }
            if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
                fprintf(stderr, "child failed (status %d)\n", st);
                return 1;
            }
        }
        printf("%.1f\n", (now() - t0) / n);
        return 0;
    }
    if (argc == 3 && !strcmp(argv[1], "connect")) {
        long n = atol(argv[2]);
        int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (l < 0) { perror("socket"); return 1; }
        struct sockaddr_in a = {0};
        a.sin_family = AF_INET;
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        socklen_t al = sizeof a;
        if (bind(l, (void *)&a, sizeof a) < 0) { perror("bind"); return 1; }
        if (listen(l, 128) < 0) { perror("listen"); return 1; }
        if (getsockname(l, (void *)&a, &al) < 0) { perror("getsockname"); return 1; }
        double t0 = now();
        for (long i = 0; i < n; i++) {
            int c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
            if (c < 0) { perror("socket"); return 1; }
            if (connect(c, (void *)&a, sizeof a) < 0) { perror("connect"); return 1; }
            int s = accept4(l, NULL, NULL, SOCK_CLOEXEC);
            if (s < 0) { perror("accept"); return 1; }
            close(c);
            close(s);
        }
        printf("%.1f\n", (now() - t0) / n);
        return 0;
    }
    fprintf(stderr, "usage: probe open PATH N | exec PATH N | connect N\n");
    return 2;
}
EOF
gcc -O2 -Wall -o "$BUILD/probe" "$BUILD/probe.c"
install -m 0755 "$BUILD/probe" "$HOME_DIR/probe"

# ---- policies ------------------------------------------------------------------------
MAXN=0
for n in $NS; do (( n > MAXN )) && MAXN=$n; done
# file list for rule set B (the largest N; smaller sets are prefixes)
: >"$POL/files.txt"
if has_set B; then
    find /usr/share -type f 2>/dev/null | head -n "$MAXN" >"$POL/files.txt" || true
    (( $(wc -l <"$POL/files.txt") >= MAXN )) || die "fewer than $MAXN files under /usr/share"
fi
(( MAXN < 1 << 24 )) || die "NS: at most $(( (1 << 24) - 1 )) rules (set C's addresses in 10.0.0.0/8)"
# set D's ports (20000 .. 20000+MAXN-1) must miss the probe's listener, which binds port
# 0 and so gets one from the sandbox's ephemeral range
D_PORT=20000
if has_set D; then
    read -r EPH_LO EPH_HI < <("$MOAT" run --label bench=yes -- cat /proc/sys/net/ipv4/ip_local_port_range) \
        || die "cannot read the sandbox's ip_local_port_range"
    (( D_PORT + MAXN <= EPH_LO )) \
        || die "set D's ports $D_PORT-$(( D_PORT + MAXN - 1 )) reach the sandbox's ephemeral range $EPH_LO-$EPH_HI"
fi

python3 - "$POL" "$NS" "$SETS" "$D_PORT" "${EPH_LO:-0}" "${EPH_HI:-0}" <<'EOF'
import json, sys
pol, ns, sets = sys.argv[1], [int(x) for x in sys.argv[2].split()], sys.argv[3].split()
d_port, eph_lo, eph_hi = int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
files = open(f"{pol}/files.txt").read().split("\n")
head = ('apiVersion: security.kubearmor.com/v1\nkind: KubeArmorPolicy\n'
        'metadata: {name: bench}\nspec:\n  selector: {matchLabels: {bench: "yes"}}\n'
        '  action: Block\n')
def c_rule(i):  # 10.0.0.1/32, 10.0.0.2/32, ...
    a = i + 1
    return f"      - cidr: 10.{a >> 16 & 255}.{a >> 8 & 255}.{a & 255}/32\n        ports: [443]\n"
def d_rule(i):
    return f"      - cidr: 127.0.0.0/8\n        ports: [{d_port + i}]\n"
rules = {
    "A": ("file", "matchPaths", lambda i: f"      - path: /srv/none/file{i}\n"),
    "B": ("file", "matchPaths", lambda i: f"      - path: {json.dumps(files[i])}\n"),
    "C": ("network", "matchAddresses", c_rule),
    "D": ("network", "matchAddresses", d_rule),
}
for n in ns:
    if n == 0:
        continue
    for s in sets:
        section, key, rule = rules[s]
        with open(f"{pol}/{s}{n}.yaml", "w") as f:
            f.write(head + f"  {section}:\n    {key}:\n")
            f.writelines(rule(i) for i in range(n))
if "D" in sets:
    # the enforcement check: the largest D set plus a rule on the listener's port range
    with open(f"{pol}/Dcheck.yaml", "w") as f:
        f.write(head + "  network:\n    matchAddresses:\n")
        f.writelines(d_rule(i) for i in range(max(ns)))
        f.write(f'      - cidr: 127.0.0.0/8\n        ports: ["{eph_lo}-{eph_hi}"]\n')
EOF

# ---- measuring -----------------------------------------------------------------------
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

# run_probe CONFIG ARGS... : one probe run; CONFIG is "native" or moat options
run_probe() {
    local cfg=$1; shift
    if [[ $cfg == native ]]; then
        "$LDSO" "$HOME_DIR/probe" "$@"
    else
        # shellcheck disable=SC2086
        "$MOAT" run --home "$HOME_DIR" --label bench=yes $cfg -- "$LDSO" /home/jovyan/probe "$@"
    fi
}

# measure NAME CONFIG : fills OPEN[NAME] EXEC[NAME] CONN[NAME] (and START[NAME] if not native)
declare -A OPEN EXEC CONN START COLD SLOW
measure() {
    local name=$1 cfg=$2 i v o=() e=() c=() t0
    local open_reps=$OPEN_REPS exec_reps=$EXEC_REPS conn_reps=$CONN_REPS runs=$STARTUP_RUNS warm=3
    echo "policy.sh: measuring $name" >&2
    if [[ $cfg != native ]]; then
        # one timed start first: a start-up of seconds (many carved rules) would make the
        # full repetition counts take many minutes, so such cases get 1 repetition each
        t0=$(date +%s%N)
        # shellcheck disable=SC2086
        "$MOAT" run --label bench=yes $cfg -- /bin/true || die "$name: moat run failed"
        if (( ($(date +%s%N) - t0) > SLOW_START_MS * 1000000 )); then
            open_reps=1; exec_reps=1; conn_reps=1; runs=3; warm=0
            SLOW[$name]=1
            echo "policy.sh:   start-up over ${SLOW_START_MS} ms: 1 repetition per probe, 3 start-up runs" >&2
        fi
    fi
    for ((i = 0; i < open_reps; i++)); do
        v=$(run_probe "$cfg" open "$OPEN_FILE" "$OPEN_N") || die "$name: open probe failed"
        o+=("$v")
    done
    for ((i = 0; i < exec_reps; i++)); do
        v=$(run_probe "$cfg" exec /bin/true "$EXEC_N") || die "$name: exec probe failed"
        e+=("$(awk -v x="$v" 'BEGIN {printf "%.1f", x / 1000}')")
    done
    for ((i = 0; i < conn_reps; i++)); do
        v=$(run_probe "$cfg" connect "$CONN_N") || die "$name: connect probe failed"
        c+=("$v")
    done
    OPEN[$name]=$(median "${o[@]}")
    EXEC[$name]=$(median "${e[@]}")
    CONN[$name]=$(median "${c[@]}")
    echo "policy.sh:   open ${o[*]} | exec ${e[*]} | connect ${c[*]}" >&2
    if [[ $cfg != native ]]; then
        local json=$BUILD/start-$name.json cold_json=$BUILD/start-cold-$name.json
        local median='import json,sys; print(round(json.load(open(sys.argv[1]))["results"][0]["median"]*1000, 1))'
        # First start: no cached parse of the policy (removed before every run).
        # shellcheck disable=SC2086
        hyperfine -N --runs "$runs" --warmup "$warm" --export-json "$cold_json" \
            --prepare "rm -rf -- $POLICY_CACHE" \
            "$MOAT run --label bench=yes $cfg -- /bin/true" >/dev/null 2>&1 \
            || die "$name: start-up run failed (try: $MOAT run --label bench=yes $cfg -- /bin/true)"
        COLD[$name]=$(python3 -c "$median" "$cold_json")
        # Later starts: a run long enough for moat to cache the parse, then the starts.
        # shellcheck disable=SC2086
        "$MOAT" run --label bench=yes $cfg -- sleep 0.5 || die "$name: caching run failed"
        # shellcheck disable=SC2086
        hyperfine -N --runs "$runs" --warmup "$warm" --export-json "$json" \
            "$MOAT run --label bench=yes $cfg -- /bin/true" >/dev/null 2>&1 \
            || die "$name: start-up run failed (try: $MOAT run --label bench=yes $cfg -- /bin/true)"
        START[$name]=$(python3 -c "$median" "$json")
        echo "policy.sh:   start-up median ${COLD[$name]} ms first, ${START[$name]} ms cached" >&2
    fi
}

if has_set D; then
    # set D must measure an enforcing path: with a rule on the listener's port (after all
    # the others, so the whole run is scanned) the probe's connect is refused
    out=$(run_probe "--policy $POL/Dcheck.yaml" connect 1 2>&1) \
        && die "set D: connect to 127.0.0.1 succeeded under a rule blocking its port"
    [[ $out == *"connect: Operation not permitted"* ]] \
        || die "set D: the check run failed otherwise than by a refused connect: $out"
    echo "policy.sh: set D check: a rule on the listener's port makes connect fail" >&2
fi

ROWS=(native)
measure native native
for n in $NS; do
    if (( n == 0 )); then
        measure moat0 ""
        ROWS+=(moat0)
    fi
done
[[ -n ${OPEN[moat0]:-} ]] || die "NS must include 0 (the reference row)"
for set in $SETS; do
    for n in $NS; do
        (( n == 0 )) && continue
        measure "$set$n" "--policy $POL/$set$n.yaml"
        ROWS+=("$set$n")
    done
done
"$MOAT" gc --quiet >/dev/null 2>&1 || true

# ---- table ---------------------------------------------------------------------------
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f×", a / b}'; }
label() {
    case $1 in
        native) echo "native (no moat)" ;;
        moat0) echo "moat, no policy (N=0)" ;;
        A*) echo "A: ${1#A} nonexistent paths" ;;
        B*) echo "B: ${1#B} files under /usr/share" ;;
        C*) echo "C: ${1#C} /32s in 10.0.0.0/8 (no range)" ;;
        D*) echo "D: ${1#D} ports on 127.0.0.0/8 (one network)" ;;
    esac
}
echo
echo "open+close: $OPEN_FILE × $OPEN_N, median of $OPEN_REPS. exec: fork+execve+wait /bin/true × $EXEC_N, median of $EXEC_REPS. connect: socket+connect+accept+close on 127.0.0.1 × $CONN_N, median of $CONN_REPS. start-up: \`moat run -- /bin/true\`, hyperfine -N, $STARTUP_RUNS runs after 3 warm-up, median; first: the policy's parse not cached (removed before each run), cached: after a run that cached it. Ratios: vs moat N=0 / vs native."
echo
echo "| rules | open+close ns/op | vs N=0 / native | exec µs | vs N=0 / native | connect ns/op | vs N=0 / native | start-up ms, first / cached | extra vs N=0, first / cached |"
echo "|---|---|---|---|---|---|---|---|---|"
for r in "${ROWS[@]}"; do
    if [[ $r == native ]]; then
        printf '| %s | %s | — | %s | — | %s | — | — | — |\n' "$(label "$r")" "${OPEN[$r]}" "${EXEC[$r]}" "${CONN[$r]}"
        continue
    fi
    printf '| %s | %s | %s / %s | %s | %s / %s | %s | %s / %s | %s | %s |\n' "$(label "$r")" \
        "${OPEN[$r]}" "$(ratio "${OPEN[$r]}" "${OPEN[moat0]}")" "$(ratio "${OPEN[$r]}" "${OPEN[native]}")" \
        "${EXEC[$r]}" "$(ratio "${EXEC[$r]}" "${EXEC[moat0]}")" "$(ratio "${EXEC[$r]}" "${EXEC[native]}")" \
        "${CONN[$r]}" "$(ratio "${CONN[$r]}" "${CONN[moat0]}")" "$(ratio "${CONN[$r]}" "${CONN[native]}")" \
        "${COLD[$r]} / ${START[$r]}${SLOW[$r]:+ *}" \
        "$(awk -v a="${COLD[$r]}" -v c="${START[$r]}" -v b="${START[moat0]}" 'BEGIN {printf "%+.1f / %+.1f", a - b, c - b}')"
done
[[ -z ${SLOW[*]:-} ]] || echo $'\n'"* start-up over ${SLOW_START_MS} ms: 1 repetition of each probe, 3 start-up runs without warm-up."
