#!/usr/bin/env bash
# moat benchmarks: start-up, system-call cost and file I/O, against native, runc and runsc.
#
#   sudo bench/run.sh
#
# Environment (all optional):
#   MOAT=/path/to/moat          use this binary instead of building `cargo build --release -p moat`
#   CARGO_TARGET_DIR=DIR        where to build moat (e.g. when the workspace target dir is locked)
#   BUSYBOX=/bin/busybox        a statically linked busybox for the bench root (busybox-static)
#   STARTUP_RUNS=20             hyperfine runs per start-up case (after 3 warm-up runs)
#   REPS=5                      repetitions of each probe / I/O measurement
#   IO_MIB=256                  size of the I/O test file
#   GETPPID_ITERS=10000000      getppid iterations of the probe (native, moat, runc)
#   OPEN_ITERS=1000000          open+close iterations of the probe (native, moat, runc)
#   RUNSC_GETPPID_ITERS=200000  getppid iterations inside gVisor (ptrace: ~20 us each)
#   RUNSC_OPEN_ITERS=50000      open+close iterations inside gVisor
#   RESULTS_DIR=bench/results   where the raw JSON and the Markdown table go
#
# Everything it creates lives under /tmp/moat-bench and is removed on exit (containers
# deleted, tmpfs unmounted). Raw results go to bench/results/ (git-ignored).
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$BENCH_DIR")
W=/tmp/moat-bench
RESULTS_DIR=${RESULTS_DIR:-$BENCH_DIR/results}
STARTUP_RUNS=${STARTUP_RUNS:-20}
WARMUP=3
REPS=${REPS:-5}
IO_MIB=${IO_MIB:-256}
GETPPID_ITERS=${GETPPID_ITERS:-10000000}
OPEN_ITERS=${OPEN_ITERS:-1000000}
RUNSC_GETPPID_ITERS=${RUNSC_GETPPID_ITERS:-200000}
RUNSC_OPEN_ITERS=${RUNSC_OPEN_ITERS:-50000}
BUSYBOX=${BUSYBOX:-/bin/busybox}
ID_PREFIX=moat-bench-
# The probe opens this file everywhere: the host's in native runs, moat's generated one
# (a read-only bind) in moat, the bench root's plain file in runc and runsc.
PROBE_FILE=/etc/passwd

export LC_ALL=C

log() { printf '==> %s\n' "$*" >&2; }
warn() { printf 'warning: %s\n' "$*" >&2; }
die() { printf 'bench/run.sh: error: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------------------------------
# Preconditions

[[ $(id -u) -eq 0 ]] || die "must run as root (moat, runc and runsc need it): sudo $0"
[[ $(uname -s) == Linux ]] || die "Linux only"

need() { # need TOOL PACKAGE
    command -v "$1" >/dev/null 2>&1 || die "'$1' not found: apt-get install -y $2"
}
need hyperfine hyperfine
need jq jq
need gcc "gcc libc6-dev"
need runc runc
need runsc runsc
need awk gawk
need mountpoint util-linux
need flock util-linux
[[ -x $BUSYBOX ]] || die "$BUSYBOX not found: apt-get install -y busybox-static (or set BUSYBOX=)"
if ldd "$BUSYBOX" >/dev/null 2>&1; then
    die "$BUSYBOX is dynamically linked; the bench root needs a static one: apt-get install -y busybox-static"
fi
[[ -x /bin/dd && -x /bin/true ]] || die "/bin/dd and /bin/true (coreutils) are needed"

# ---------------------------------------------------------------------------------------
# Clean-up: only what this script creates (ids starting with moat-bench-, /tmp/moat-bench).

reap_containers() {
    local id
    for id in $(runc list -q 2>/dev/null | grep "^$ID_PREFIX" || true); do
        runc delete -f "$id" >/dev/null 2>&1 || warn "could not delete runc container $id"
    done
    for id in $(runsc list -quiet 2>/dev/null | grep "^$ID_PREFIX" || true); do
        runsc delete -force "$id" >/dev/null 2>&1 || warn "could not delete runsc container $id"
    done
}

# moat keeps a host id range for good for every --home it has bound (a record under
# /var/lib/moat/ids/homes and its slot). The bench's homes are gone after the run, so their
# records go too: the admin action of docs/decisions/0003, limited to homes under $W.
IDS_DIR=/var/lib/moat/ids
forget_home_leases() {
    [[ -d $IDS_DIR/homes ]] || return 0
    (
        flock -w 30 9 || { warn "could not lock $IDS_DIR/lock; home id records of $W kept"; exit 0; }
        for record in "$IDS_DIR"/homes/*; do
            [[ -f $record ]] || continue
            owner=$(sed -n 2p "$record")
            [[ $owner == "home $W/"* ]] || continue
            slot=$(sed -n 1p "$record")
            if [[ $slot =~ ^[0-9]+$ && $(head -n 1 "$IDS_DIR/slots/$slot" 2>/dev/null) == "$owner" ]]; then
                rm -f "$IDS_DIR/slots/$slot"
            fi
            rm -f "$record"
        done
    ) 9>>"$IDS_DIR/lock"
    if grep -rlsF "home $W/" "$IDS_DIR" >/dev/null; then
        warn "moat id records of homes under $W are left in $IDS_DIR"
    fi
}

cleanup() {
    local status=$?
    set +e
    trap - EXIT INT TERM
    reap_containers
    if mountpoint -q "$W/tmpfs" 2>/dev/null; then
        umount "$W/tmpfs" || warn "could not unmount $W/tmpfs"
    fi
    # Container cgroups are named after the container id; remove any an interrupted run left.
    find /sys/fs/cgroup -maxdepth 6 -depth -type d -name "$ID_PREFIX*" -exec rmdir {} \; 2>/dev/null
    if [[ -d $W ]]; then
        rm -rf --one-file-system "$W" || warn "could not remove $W"
    fi
    forget_home_leases
    local left
    left=$( { runc list -q 2>/dev/null; runsc list -quiet 2>/dev/null; } | grep "^$ID_PREFIX" || true)
    [[ -z $left ]] || warn "containers left behind: $left"
    if grep -q " $W" /proc/self/mounts; then warn "mounts left under $W"; fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# A previous run that was killed hard may have left things behind.
reap_containers
if mountpoint -q "$W/tmpfs" 2>/dev/null; then umount "$W/tmpfs"; fi
rm -rf --one-file-system "$W"
forget_home_leases

START=$SECONDS
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
# Other work on the machine skews everything: sample the CPUs for 2 s before starting.
read -r _ u1 n1 s1 i1 w1 q1 r1 t1 _ </proc/stat
sleep 2
read -r _ u2 n2 s2 i2 w2 q2 r2 t2 _ </proc/stat
busy=$(( ((u2 + n2 + s2 + q2 + r2 + t2) - (u1 + n1 + s1 + q1 + r1 + t1)) * 100 /
         ((u2 + n2 + s2 + i2 + w2 + q2 + r2 + t2) - (u1 + n1 + s1 + i1 + w1 + q1 + r1 + t1)) ))
if ((busy > 10)); then
    warn "the CPUs are ${busy}% busy before the benchmark starts: other work on this machine will skew the results"
fi
TAG=$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$W" "$RESULTS_DIR"
chmod 755 "$W"  # moat's unprivileged sandbox root must pass through it (--home, --rootfs)

# ---------------------------------------------------------------------------------------
# Build

MOAT_GIVEN=${MOAT:+1}
if [[ -n ${MOAT:-} ]]; then
    [[ -x $MOAT ]] || die "MOAT=$MOAT is not executable"
else
    command -v cargo >/dev/null 2>&1 ||
        die "cargo not found (under sudo, root's PATH may lack it): build moat first and run with MOAT=/path/to/moat"
    log "building moat (cargo build --release -p moat)"
    (cd "$REPO" && cargo build --release -p moat) >&2
    MOAT=${CARGO_TARGET_DIR:-$REPO/target}/release/moat
    [[ -x $MOAT ]] || die "build finished but $MOAT is missing"
fi
MOAT=$(realpath "$MOAT")
# What was measured: the commit, and whether crates/ had uncommitted changes at build time.
COMMIT=$(git -c safe.directory="$REPO" -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)
if [[ -n $(git -c safe.directory="$REPO" -C "$REPO" status --porcelain -- crates Cargo.toml Cargo.lock policies 2>/dev/null) ]]; then
    COMMIT+="+uncommitted"
fi
[[ -z $MOAT_GIVEN ]] || COMMIT="given binary $MOAT (repo at $COMMIT)"

log "building the probe (gcc -O2 -static)"
mkdir -p "$W/probe"
gcc -O2 -static -Wall -Wextra -o "$W/probe/syscalls" "$BENCH_DIR/probe/syscalls.c" ||
    die "static build of the probe failed (static libc: apt-get install -y libc6-dev)"
PROBE=$W/probe/syscalls

# ---------------------------------------------------------------------------------------
# Bench root (runc, runsc, moat --rootfs): static busybox + the probe.

ROOTFS=$W/rootfs
log "building the bench root in $ROOTFS"
mkdir -p "$ROOTFS"/{bin,etc,proc,dev,sys,tmp}
chmod 1777 "$ROOTFS/tmp"
install -m 755 "$BUSYBOX" "$ROOTFS/bin/busybox"
for applet in sh true dd cat sync; do ln -s busybox "$ROOTFS/bin/$applet"; done
install -m 755 "$PROBE" "$ROOTFS/bin/syscalls"
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$ROOTFS/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$ROOTFS/etc/group"

# OCI bundles: `runc spec` defaults, the shared root (read-only) and a tmpfs on /tmp.
# `runc spec` has no seccomp filter; "probe-seccomp" adds a one-rule filter (everything
# allowed but kexec_load) to show what merely having a filter costs per system call.
make_bundle() { # make_bundle NAME EXTRA_JQ ARG...
    local dir=$W/bundles/$1 extra=$2
    shift 2
    mkdir -p "$dir"
    (cd "$dir" && runc spec)
    jq --arg root "$ROOTFS" --args '
        .process.terminal = false
        | .process.args = $ARGS.positional
        | .root = {path: $root, readonly: true}
        | .mounts += [{destination: "/tmp", type: "tmpfs", source: "tmpfs",
                       options: ["nosuid", "nodev", "mode=1777", "size=1g"]}]
        | '"$extra" \
        "$@" <"$dir/config.json" >"$dir/config.json.new"
    mv "$dir/config.json.new" "$dir/config.json"
}
SECCOMP_ONE_RULE='.linux.seccomp = {defaultAction: "SCMP_ACT_ALLOW", architectures: ["SCMP_ARCH_X86_64"],
                                     syscalls: [{names: ["kexec_load"], action: "SCMP_ACT_ERRNO"}]}'
make_bundle true . /bin/true
make_bundle probe . /bin/syscalls "$PROBE_FILE" "$GETPPID_ITERS" "$OPEN_ITERS"
make_bundle probe-seccomp "$SECCOMP_ONE_RULE" /bin/syscalls "$PROBE_FILE" "$GETPPID_ITERS" "$OPEN_ITERS"
make_bundle probe-runsc . /bin/syscalls "$PROBE_FILE" "$RUNSC_GETPPID_ITERS" "$RUNSC_OPEN_ITERS"
make_bundle status-seccomp "$SECCOMP_ONE_RULE" /bin/cat /proc/self/status

# Homes for moat's host-system mode (moat chowns them to the sandbox's host uid).
PROBE_HOME=$W/probe-home
IO_HOME=$W/home
mkdir -p "$PROBE_HOME" "$IO_HOME"
install -m 755 "$PROBE" "$PROBE_HOME/syscalls"

# Smoke test each runtime once so a broken setup fails here, with its own error message.
log "smoke tests"
"$MOAT" run -- /bin/true || die "moat run -- /bin/true failed"
"$MOAT" run --rootfs "$ROOTFS" -- /bin/true || die "moat run --rootfs $ROOTFS -- /bin/true failed"
runc run --bundle "$W/bundles/true" "${ID_PREFIX}smoke-runc" </dev/null || die "runc run failed"
runc delete -f "${ID_PREFIX}smoke-runc" >/dev/null 2>&1 || true
status=$(runc run --bundle "$W/bundles/status-seccomp" "${ID_PREFIX}smoke-seccomp" </dev/null) ||
    die "runc run with a seccomp filter failed"
grep -q '^Seccomp:[[:space:]]*2' <<<"$status" || die "runc did not install the one-rule seccomp filter"
runc delete -f "${ID_PREFIX}smoke-seccomp" >/dev/null 2>&1 || true
runsc --network=none run --bundle "$W/bundles/true" "${ID_PREFIX}smoke-runsc" </dev/null ||
    die "runsc run failed (try it by hand: runsc --network=none --debug run ...)"
runsc delete -force "${ID_PREFIX}smoke-runsc" >/dev/null 2>&1 || true

# Helpers used inside hyperfine's --prepare (outside the timed region).
cat >"$W/reap" <<EOF
#!/bin/sh
for id in \$(runc list -q 2>/dev/null | grep '^$ID_PREFIX'); do runc delete -f "\$id" >/dev/null 2>&1; done
for id in \$(runsc list -quiet 2>/dev/null | grep '^$ID_PREFIX'); do runsc delete -force "\$id" >/dev/null 2>&1; done
exit 0
EOF
chmod 755 "$W/reap"

# ---------------------------------------------------------------------------------------
# a. Start-up: /bin/true end to end.

log "start-up: hyperfine, $STARTUP_RUNS runs + $WARMUP warm-up per case"
# Native and moat: no shell (-N), so the native row is the real cost of fork+exec.
hyperfine -N --style basic --runs "$STARTUP_RUNS" --warmup "$WARMUP" \
    --export-json "$W/startup-direct.json" \
    -n native "/bin/true" \
    -n native-busybox "$ROOTFS/bin/true" \
    -n moat "$MOAT run -- /bin/true" \
    -n moat-rootfs "$MOAT run --rootfs $ROOTFS -- /bin/true" \
    >&2
# runc and runsc: a shell gives every run its own container id ($$); hyperfine measures
# the shell's own start-up and subtracts it. In the foreground, `runc run` and `runsc run`
# remove their container when the process exits, as `moat run` does, so the "runc" and
# "runsc" rows time the run alone, with `delete -f` of any moat-bench- container in
# --prepare (outside the timing). The "+ delete" rows also time a `delete -f` after each
# run, as a script that cleans up explicitly would.
hyperfine --style basic --runs "$STARTUP_RUNS" --warmup "$WARMUP" \
    --export-json "$W/startup-shell.json" \
    -n runc -p "$W/reap" \
    "runc run --bundle $W/bundles/true ${ID_PREFIX}runc-\$\$ </dev/null" \
    -n runc+delete -p "$W/reap" \
    "runc run --bundle $W/bundles/true ${ID_PREFIX}runc-\$\$ </dev/null; runc delete -f ${ID_PREFIX}runc-\$\$ 2>/dev/null" \
    -n runsc -p "$W/reap" \
    "runsc --network=none run --bundle $W/bundles/true ${ID_PREFIX}runsc-\$\$ </dev/null" \
    -n runsc+delete -p "$W/reap" \
    "runsc --network=none run --bundle $W/bundles/true ${ID_PREFIX}runsc-\$\$ </dev/null; runsc delete -force ${ID_PREFIX}runsc-\$\$ 2>/dev/null" \
    >&2
"$W/reap"
jq -s '{results: (map(.results) | add)}' "$W/startup-direct.json" "$W/startup-shell.json" >"$W/startup.json"

# ---------------------------------------------------------------------------------------
# b. System calls: ns/op of getppid and open+close, REPS runs each, interleaved.

log "system calls: $REPS runs per case (gVisor with $RUNSC_GETPPID_ITERS/$RUNSC_OPEN_ITERS iterations)"
: >"$W/syscalls.jsonl"
probe_run() { # probe_run CASE CMD...
    local case=$1 out
    shift
    out=$("$@" </dev/null) || die "probe failed in case $case: $*"
    jq -c --arg case "$case" '. + {case: $case}' <<<"$out" >>"$W/syscalls.jsonl"
    printf '    %-12s %s\n' "$case" "$out" >&2
}
for ((i = 1; i <= REPS; i++)); do
    probe_run native "$PROBE" "$PROBE_FILE" "$GETPPID_ITERS" "$OPEN_ITERS"
    probe_run moat "$MOAT" run --home "$PROBE_HOME" -- /home/jovyan/syscalls "$PROBE_FILE" "$GETPPID_ITERS" "$OPEN_ITERS"
    probe_run moat-rootfs "$MOAT" run --rootfs "$ROOTFS" -- /bin/syscalls "$PROBE_FILE" "$GETPPID_ITERS" "$OPEN_ITERS"
    probe_run runc runc run --bundle "$W/bundles/probe" "${ID_PREFIX}probe-runc-$i"
    runc delete -f "${ID_PREFIX}probe-runc-$i" >/dev/null 2>&1 || true
    probe_run runc-seccomp runc run --bundle "$W/bundles/probe-seccomp" "${ID_PREFIX}probe-seccomp-$i"
    runc delete -f "${ID_PREFIX}probe-seccomp-$i" >/dev/null 2>&1 || true
    probe_run runsc runsc --network=none run --bundle "$W/bundles/probe-runsc" "${ID_PREFIX}probe-runsc-$i"
    runsc delete -force "${ID_PREFIX}probe-runsc-$i" >/dev/null 2>&1 || true
done

# ---------------------------------------------------------------------------------------
# c. I/O: IO_MIB MiB written with fsync, then read back, in a host directory (--home) and
#    in /tmp (tmpfs), moat vs native. dd's own timing, so start-up is not counted.

log "I/O: ${IO_MIB} MiB write+fsync / read, $REPS runs per case"
mkdir -p "$W/tmpfs"
mount -t tmpfs -o size=1g,mode=1777,nosuid,nodev moat-bench "$W/tmpfs"
DROP=1
sync
if ! { echo 3 >/proc/sys/vm/drop_caches; } 2>/dev/null; then
    DROP=0
    warn "cannot write /proc/sys/vm/drop_caches: home reads are from a warm page cache"
fi
drop_caches() { if ((DROP)); then sync; echo 3 >/proc/sys/vm/drop_caches; fi; }

# Runs a dd command line (or a moat run of one) and prints MB/s (10^6 bytes per second)
# from each dd summary line, in order.
mbps() {
    local out
    out=$("$@" 2>&1 </dev/null) || die "failed: $*"$'\n'"$out"
    awk '/ copied, / { for (i = 1; i <= NF; i++) if ($i == "copied,") printf "%.1f\n", $1 / $(i + 1) / 1e6 }' <<<"$out"
}
: >"$W/io.jsonl"
io_record() { # io_record CASE OP MBPS
    [[ $3 =~ ^[0-9.]+$ ]] || die "I/O case $1 $2: could not parse dd output"
    printf '{"case":"%s","op":"%s","mb_s":%s}\n' "$1" "$2" "$3" >>"$W/io.jsonl"
    printf '    %-12s %-5s %8s MB/s\n' "$1" "$2" "$3" >&2
}
# dd command lines as words; word-split on purpose below (the paths are ours, no spaces).
write_cmd() { echo "/bin/dd if=/dev/zero of=$1 bs=1M count=$IO_MIB conv=fsync"; }
read_cmd() { echo "/bin/dd if=$1 of=/dev/null bs=1M"; }
# Host directory: native root writes into the very directory moat binds as the home.
# shellcheck disable=SC2046
io_home_native() {
    local f=$IO_HOME/io.dat r
    rm -f "$f"
    r=$(mbps $(write_cmd "$f"))
    io_record home-native write "$r"
    drop_caches
    r=$(mbps $(read_cmd "$f"))
    io_record home-native read "$r"
    rm -f "$f"
}
# shellcheck disable=SC2046
io_home_moat() {
    local f=$IO_HOME/io.dat r
    rm -f "$f"
    r=$(mbps "$MOAT" run --home "$IO_HOME" -- $(write_cmd /home/jovyan/io.dat))
    io_record home-moat write "$r"
    chmod a+r "$f"  # the next run maps the sandbox to another host uid range
    drop_caches
    r=$(mbps "$MOAT" run --home "$IO_HOME" -- $(read_cmd /home/jovyan/io.dat))
    io_record home-moat read "$r"
    rm -f "$f"
}
# tmpfs: native on our own tmpfs, moat on its private /tmp (in one run: it dies with the sandbox).
io_tmp_native() {
    local f=$W/tmpfs/io.dat r
    r=$(mbps /bin/sh -c "$(write_cmd "$f") && $(read_cmd "$f")")
    rm -f "$f"
    io_record tmp-native write "$(sed -n 1p <<<"$r")"
    io_record tmp-native read "$(sed -n 2p <<<"$r")"
}
io_tmp_moat() {
    local r
    r=$(mbps "$MOAT" run -- /bin/sh -c "$(write_cmd /tmp/io.dat) && $(read_cmd /tmp/io.dat)")
    io_record tmp-moat write "$(sed -n 1p <<<"$r")"
    io_record tmp-moat read "$(sed -n 2p <<<"$r")"
}
# Interleaved, and the order flips every repetition so neither side always goes first.
for ((i = 1; i <= REPS; i++)); do
    if ((i % 2)); then
        io_home_native; io_home_moat; io_tmp_native; io_tmp_moat
    else
        io_home_moat; io_home_native; io_tmp_moat; io_tmp_native
    fi
done
umount "$W/tmpfs"

ELAPSED=$((SECONDS - START))
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------------------------------
# Results: raw JSON + Markdown table.

cores=$(nproc)
kernel=$(uname -r)
if [[ $(stat -fc %T /sys/fs/cgroup) == cgroup2fs ]]; then
    cgroups="v2 (unified)"
elif [[ -d /sys/fs/cgroup/unified ]] || grep -q '^0::' /proc/self/cgroup; then
    cgroups="v1 (hybrid)"
else
    cgroups="v1"
fi
jq -n \
    --arg date "$TAG" --arg kernel "$kernel" --argjson cores "$cores" --arg cgroups "$cgroups" \
    --arg moat "$("$MOAT" --version 2>/dev/null || echo unknown)" --arg commit "$COMMIT" \
    --arg runc "$(runc --version | head -1)" --arg runsc "$(runsc --version | head -1)" \
    --arg hyperfine "$(hyperfine --version)" --argjson drop "$DROP" --argjson elapsed "$ELAPSED" \
    --arg load_start "$LOAD_START" --arg load_end "$LOAD_END" --argjson busy "$busy" \
    --argjson startup_runs "$STARTUP_RUNS" --argjson reps "$REPS" --argjson io_mib "$IO_MIB" \
    --slurpfile startup "$W/startup.json" \
    --slurpfile syscalls "$W/syscalls.jsonl" \
    --slurpfile io "$W/io.jsonl" '
    def median: sort | if length % 2 == 1 then .[length / 2 | floor]
                       else (.[length / 2 - 1] + .[length / 2]) / 2 end;
    {
      machine: {date: $date, kernel: $kernel, cores: $cores, cgroups: $cgroups,
                moat: $moat, commit: $commit, runc: $runc, runsc: $runsc, hyperfine: $hyperfine},
      settings: {startup_runs: $startup_runs, reps: $reps, io_mib: $io_mib,
                 drop_caches: ($drop == 1), elapsed_s: $elapsed,
                 loadavg_start: $load_start, loadavg_end: $load_end, cpu_busy_before_pct: $busy},
      medians: {
        startup_ms: ($startup[0].results | map({key: .command, value: (.median * 1000)}) | from_entries),
        getppid_ns: ($syscalls | group_by(.case) | map({key: .[0].case, value: (map(.getppid_ns) | median)}) | from_entries),
        open_close_ns: ($syscalls | group_by(.case) | map({key: .[0].case, value: (map(.open_close_ns) | median)}) | from_entries),
        io_mb_s: ($io | group_by(.case + " " + .op) | map({key: (.[0].case + " " + .[0].op), value: (map(.mb_s) | median)}) | from_entries),
        io_mb_s_range: ($io | group_by(.case + " " + .op) | map({key: (.[0].case + " " + .[0].op), value: (map(.mb_s) | [min, max])}) | from_entries)
      },
      raw: {startup: $startup[0], syscalls: $syscalls, io: $io}
    }' >"$RESULTS_DIR/$TAG.json"
cp "$RESULTS_DIR/$TAG.json" "$RESULTS_DIR/latest.json"

jq -r -f "$BENCH_DIR/report.jq" "$RESULTS_DIR/$TAG.json" | tee "$RESULTS_DIR/$TAG.md"
cp "$RESULTS_DIR/$TAG.md" "$RESULTS_DIR/latest.md"
log "raw results: $RESULTS_DIR/$TAG.json (also latest.json, latest.md)"
