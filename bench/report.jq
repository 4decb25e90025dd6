# Renders a bench/run.sh result file (bench/results/*.json) as Markdown:
#   jq -r -f bench/report.jq bench/results/latest.json
def r2: (. * 100 | round) / 100;
def r1: (. * 10 | round) / 10;
def x($a; $b): if $a == null or $b == null or $b == 0 then "–" else "\($a / $b | r2)×" end;
def pct($a; $b): if $a == null or $b == null or $b == 0 then "–" else "\($a / $b * 100 | round)%" end;
def mark(c): if c then "**met**" else "**not met**" end;
.medians as $m
| $m.startup_ms as $s | $m.getppid_ns as $g | $m.open_close_ns as $o | $m.io_mb_s as $io
| $m.io_mb_s_range as $rg
| def cell($k): "\($io[$k] | round) (\($rg[$k][0] | round)–\($rg[$k][1] | round))";
  "moat \(.machine.commit) (\(.machine.moat)), measured \(.machine.date).",
  "Machine: \(.machine.cores) cores, kernel \(.machine.kernel), cgroup \(.machine.cgroups); \(.machine.runc); \(.machine.runsc); \(.machine.hyperfine).",
  "",
  "### Start-up: `/bin/true` end to end (median of \(.settings.startup_runs) runs, ms)",
  "",
  "| case | median ms | vs native | vs runc |",
  "|---|---:|---:|---:|",
  ( [["native", "native `/bin/true` (coreutils)"], ["native-busybox", "native busybox `true`"],
     ["moat", "`moat run -- /bin/true` (host-system)"],
     ["moat-rootfs", "`moat run --rootfs ROOT -- /bin/true`"],
     ["runc", "`runc run` (default spec)"], ["runc+delete", "`runc run; runc delete -f`"],
     ["runsc", "`runsc --network=none run` (ptrace)"], ["runsc+delete", "`runsc run; runsc delete -force`"]][]
    | "| \(.[1]) | \($s[.[0]] | r2) | \(x($s[.[0]]; $s.native)) | \(x($s[.[0]]; $s.runc)) |" ),
  "",
  "### System calls (median of \(.settings.reps) runs, ns per operation)",
  "",
  "| case | getppid ns | vs native | vs runc | open+close ns | vs native | vs runc |",
  "|---|---:|---:|---:|---:|---:|---:|",
  ( [["native", "native"], ["moat", "moat (host-system, probe in --home)"],
     ["moat-rootfs", "moat --rootfs"], ["runc", "runc (default spec: no seccomp)"],
     ["runc-seccomp", "runc + one-rule seccomp filter"], ["runsc", "runsc (fewer iterations)"]][]
    | "| \(.[1]) | \($g[.[0]] | r1) | \(x($g[.[0]]; $g.native)) | \(x($g[.[0]]; $g.runc)) | \($o[.[0]] | r1) | \(x($o[.[0]]; $o.native)) | \(x($o[.[0]]; $o.runc)) |" ),
  "",
  "### I/O: \(.settings.io_mib) MiB, dd bs=1M (median of \(.settings.reps) runs, MB/s, min–max in brackets; moat as % of native)",
  "",
  "| where | native write | moat write | moat/native | native read | moat read | moat/native |",
  "|---|---:|---:|---:|---:|---:|---:|",
  ( [["home", "home: host dir (ext4) via --home, write with fsync, read \(if .settings.drop_caches then "after drop_caches" else "WARM cache" end)"],
     ["tmp", "/tmp: tmpfs"]][]
    | .[0] as $w
    | "| \(.[1]) | \(cell("\($w)-native write")) | \(cell("\($w)-moat write")) | \(pct($io["\($w)-moat write"]; $io["\($w)-native write"])) | \(cell("\($w)-native read")) | \(cell("\($w)-moat read")) | \(pct($io["\($w)-moat read"]; $io["\($w)-native read"])) |" ),
  "",
  "### Targets",
  "",
  "- moat start-up ≤ runc median (\($s.runc | r2) ms): host-system \($s.moat | r2) ms \(mark($s.moat <= $s.runc)); --rootfs \($s["moat-rootfs"] | r2) ms \(mark($s["moat-rootfs"] <= $s.runc))",
  "- getppid within 10% of native (\($g.native | r1) ns): moat \(x($g.moat; $g.native)), moat --rootfs \(x($g["moat-rootfs"]; $g.native)): \(mark($g.moat <= 1.1 * $g.native and $g["moat-rootfs"] <= 1.1 * $g.native)) (runc with a one-rule seccomp filter: \(x($g["runc-seccomp"]; $g.native)))",
  ([["home", "write"], ["home", "read"], ["tmp", "write"], ["tmp", "read"]]
   | map(. as [$w, $op]
         | {name: "\($w) \($op)", moat: $io["\($w)-moat \($op)"], native: $io["\($w)-native \($op)"],
            overlap: ($rg["\($w)-moat \($op)"][1] >= $rg["\($w)-native \($op)"][0])})
   | map(. + {ok: (.moat >= 0.95 * .native)}) as $checks
   | "- I/O within 5% of native (moat ≥ 95% of native MB/s): "
     + ($checks | map("\(.name) \(pct(.moat; .native))" + (if (.ok | not) and .overlap then " (ranges overlap)" else "" end)) | join(", "))
     + ": "
     + (if ($checks | all(.ok)) then "**met**"
        elif ($checks | all(.ok or .overlap)) then "**not met** on the medians; every miss is inside the run-to-run spread (moat's and native's min–max ranges overlap)"
        else "**not met**" end)),
  "",
  "bench/run.sh took \(.settings.elapsed_s) s (build and set-up included); load average \(.settings.loadavg_start) at start, \(.settings.loadavg_end) at end."

