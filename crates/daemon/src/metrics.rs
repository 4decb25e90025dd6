//! `GET /metrics`, in Prometheus' text format.

use std::collections::BTreeMap;
use std::fmt::Write;

/// Upper bounds of the start-latency histogram, in seconds.
const START_BUCKETS: [f64; 10] = [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

/// The daemon's counters since it started.
#[derive(Debug, Default)]
pub struct Metrics {
    starts: u64,
    failures: u64,
    oom_kills: u64,
    alerts: BTreeMap<String, u64>,
    held_back: u64,
    start_buckets: [u64; START_BUCKETS.len()],
    start_count: u64,
    start_sum: f64,
}

impl Metrics {
    /// A sandbox reached `running`, `seconds` after it was asked for.
    pub fn started(&mut self, seconds: f64) {
        self.starts += 1;
        self.start_count += 1;
        self.start_sum += seconds;
        for (bucket, bound) in self.start_buckets.iter_mut().zip(START_BUCKETS) {
            if seconds <= bound {
                *bucket += 1;
            }
        }
    }

    /// A sandbox could not start.
    pub fn failed(&mut self) {
        self.failures += 1;
    }

    /// The kernel killed processes of a sandbox for lack of memory.
    pub fn oom_killed(&mut self, kills: u64) {
        self.oom_kills += kills;
    }

    /// `count` policy decisions with this `Action` were reported: one alert, or the alerts
    /// the rate limit held back and counted.
    pub fn alerts(&mut self, action: &str, count: u64) {
        *self.alerts.entry(action.to_string()).or_default() += count;
    }

    /// The rate limit held back `count` alerts (they are in `alerts` too).
    pub fn held_back(&mut self, count: u64) {
        self.held_back += count;
    }

    /// The exposition text; `by_state` counts the sandboxes the daemon knows per state.
    pub fn render(&self, by_state: &BTreeMap<&'static str, u64>) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP moat_sandboxes Sandboxes known to the daemon, by state."
        );
        let _ = writeln!(out, "# TYPE moat_sandboxes gauge");
        for state in ["starting", "running", "stopping", "exited", "failed"] {
            let count = by_state.get(state).copied().unwrap_or(0);
            let _ = writeln!(out, "moat_sandboxes{{state=\"{state}\"}} {count}");
        }
        let counters = [
            (
                "moat_sandbox_starts_total",
                "Sandboxes that reached running.",
                self.starts,
            ),
            (
                "moat_sandbox_failures_total",
                "Sandboxes that could not start.",
                self.failures,
            ),
            (
                "moat_oom_kills_total",
                "Processes killed for lack of memory in sandboxes.",
                self.oom_kills,
            ),
            (
                "moat_alerts_held_back_total",
                "Policy alerts the rate limit counted instead of writing.",
                self.held_back,
            ),
        ];
        for (name, help, value) in counters {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} counter");
            let _ = writeln!(out, "{name} {value}");
        }
        let _ = writeln!(out, "# HELP moat_alerts_total Policy alerts, by action, with those the rate limit held back.");
        let _ = writeln!(out, "# TYPE moat_alerts_total counter");
        for (action, count) in &self.alerts {
            let action = action.replace(['"', '\\', '\n'], "_");
            let _ = writeln!(out, "moat_alerts_total{{action=\"{action}\"}} {count}");
        }
        let name = "moat_sandbox_start_seconds";
        let _ = writeln!(out, "# HELP {name} Time from create to running.");
        let _ = writeln!(out, "# TYPE {name} histogram");
        for (bound, count) in START_BUCKETS.iter().zip(self.start_buckets) {
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {count}");
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", self.start_count);
        let _ = writeln!(out, "{name}_sum {}", self.start_sum);
        let _ = writeln!(out, "{name}_count {}", self.start_count);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_histogram_is_cumulative_and_counters_show() {
        let mut metrics = Metrics::default();
        metrics.started(0.07);
        metrics.started(3.0);
        metrics.failed();
        metrics.alerts("Block", 1);
        metrics.alerts("Block", 41);
        metrics.held_back(41);
        let text = metrics.render(&BTreeMap::from([("running", 2)]));
        assert!(text.contains("moat_sandboxes{state=\"running\"} 2"));
        assert!(text.contains("moat_sandbox_start_seconds_bucket{le=\"0.05\"} 0"));
        assert!(text.contains("moat_sandbox_start_seconds_bucket{le=\"0.1\"} 1"));
        assert!(text.contains("moat_sandbox_start_seconds_bucket{le=\"5\"} 2"));
        assert!(text.contains("moat_sandbox_start_seconds_count 2"));
        assert!(text.contains("moat_sandbox_failures_total 1"));
        assert!(text.contains("moat_alerts_total{action=\"Block\"} 42"));
        assert!(text.contains("moat_alerts_held_back_total 41"));
    }
}
