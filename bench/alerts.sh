#!/usr/bin/env bash
# moat alert-flood benchmark: what a sandbox looping over a denied open writes to its
# alerts file, with the default alert rate limit and with none (--alert-rate 0).
#
#   sudo bench/alerts.sh            # N=100000 denied opens, RUNS=3
#
# For each setting it runs `moat run --alerts F -- python3 -c LOOP` RUNS times and
# reports the medians of: the run's wall time, the lines and bytes of F, and the alerts
# the limit held back (the held_back= counts of its AlertThreshold events). It checks
# that every run refused N opens and that the lines plus the held-back counts account
# for all N.
set -euo pipefail
BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$BENCH_DIR")
N=${N:-100000}
RUNS=${RUNS:-3}
if [[ -z ${MOAT:-} ]]; then
    if [[ -x $REPO/target/release/moat ]]; then MOAT=$REPO/target/release/moat
    else MOAT=$REPO/target/debug/moat; fi
fi
die() { echo "alerts.sh: $*" >&2; exit 1; }
[[ $(id -u) -eq 0 ]] || die "must run as root (sudo bench/alerts.sh)"
command -v python3 >/dev/null || die "missing tool: python3"
[[ -x $MOAT ]] || die "no moat binary at $MOAT (cargo build --release -p moat)"

WORK=$(mktemp -d /tmp/moat-bench-alerts.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
cat >"$WORK/flood.yaml" <<'EOF'
apiVersion: security.kubearmor.com/v1
kind: KubeArmorPolicy
metadata: {name: flood}
spec:
  selector: {matchLabels: {bench: "alerts"}}
  action: Block
  file:
    matchPaths:
      - path: /etc/os-release
EOF
LOOP="
denied = 0
for _ in range($N):
    try:
        open('/etc/os-release')
    except PermissionError:
        denied += 1
print(denied)"

median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

echo "| alert limit | wall s | lines | bytes | held back |"
echo "|---|---|---|---|---|"
for setting in default "--alert-rate 0"; do
    walls=() lines=() bytes=() held=()
    for _ in $(seq "$RUNS"); do
        file=$WORK/alerts.jsonl
        rm -f "$file"
        options=()
        [[ $setting == default ]] || read -ra options <<<"$setting"
        t0=$(date +%s%N)
        out=$("$MOAT" run --label bench=alerts --policy "$WORK/flood.yaml" --alerts "$file" \
            "${options[@]}" -- python3 -c "$LOOP")
        t1=$(date +%s%N)
        [[ $out == "$N" ]] || die "$setting: $out of $N opens refused"
        n_lines=$(grep -c '"Type":"MatchedPolicy"' "$file" || true)
        n_held=$({ grep -o 'held_back=[0-9]*' "$file" || true; } | cut -d= -f2 | awk '{s+=$1} END {print s+0}')
        (( n_lines + n_held >= N )) || die "$setting: $n_lines alerts + $n_held held back < $N"
        walls+=("$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.2f", (b-a)/1e9}')")
        lines+=("$(wc -l <"$file")")
        bytes+=("$(stat -c %s "$file")")
        held+=("$n_held")
    done
    echo "| $setting | $(median "${walls[@]}") | $(median "${lines[@]}") | $(median "${bytes[@]}") | $(median "${held[@]}") |"
done
