//! The alert rate limit: what keeps a sandbox that loops over a denied operation from
//! writing tens of thousands of lines a second to the host's disk, without hiding
//! anything an operator needs.
//!
//! Alerts are limited per *family*: the policy, operation and action they share
//! (`untrusted`'s `File` `Block`s, the default posture's `Network` `Audit`s, ...). Each
//! family has a token bucket of its own, so a flood in one family (default-posture noise,
//! say) never holds back another's alerts; KubeArmor's throttle stops every alert of the
//! container instead. Within a family the first alert of each resource is always written,
//! up to [`DISTINCT_RESOURCES`] of them, so repeating one denied open cannot hide the first
//! attempt on another path. What is held back is counted, and written as a `SystemEvent`
//! (`Operation` `AlertThreshold`, as KubeArmor names its throttle event) at most every
//! [`SUMMARY_INTERVAL`] while it lasts and when the sandbox ends: alerts written plus the
//! counts add up to the events seen.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use crate::alert::Alert;

/// How often a family's held-back count is written while it keeps growing.
pub const SUMMARY_INTERVAL: Duration = Duration::from_secs(10);

/// Resources per family whose first alert passes whatever the bucket holds.
pub const DISTINCT_RESOURCES: usize = 1024;

/// The rate limit of one sandbox's alerts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AlertLimit {
    /// Alerts a family may write per second once its burst is spent.
    pub per_second: u32,
    /// Alerts a family may write at once.
    pub burst: u32,
}

impl AlertLimit {
    /// 10 a second after a burst of 100: a person reading the alerts loses nothing, and a
    /// flooding sandbox writes about 3 KiB a second per family.
    pub const DEFAULT: AlertLimit = AlertLimit {
        per_second: 10,
        burst: 100,
    };
    /// The largest rate and burst accepted (a limit above is no limit).
    pub const MAX: u32 = 1_000_000;

    /// The limit for `per_second` and `burst` as the command line gives them: `None` (no
    /// limit) for a rate of 0, an error for values out of range.
    pub fn from_flags(per_second: u32, burst: u32) -> Result<Option<AlertLimit>, String> {
        if per_second > Self::MAX {
            return Err(format!(
                "--alert-rate {per_second}: at most {} alerts a second (0 turns the limit off)",
                Self::MAX
            ));
        }
        if burst == 0 || burst > Self::MAX {
            return Err(format!(
                "--alert-burst {burst}: between 1 and {} alerts",
                Self::MAX
            ));
        }
        Ok((per_second > 0).then_some(AlertLimit { per_second, burst }))
    }
}

/// What to do with one alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Write it.
    Write,
    /// Count it in its family's next `AlertThreshold` event instead.
    HoldBack,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Family {
    policy: String,
    operation: String,
    action: String,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    refilled: Instant,
    resources: HashSet<String>,
    held: Option<Held>,
}

/// Alerts of a family held back since its last `AlertThreshold` event.
#[derive(Debug)]
struct Held {
    count: u64,
    since: Instant,
    first: String,
    last: String,
    /// The first alert held back: the sandbox and rule fields the event repeats.
    example: Alert,
}

/// The buckets of one sandbox's alert families.
#[derive(Debug)]
pub struct Limiter {
    limit: AlertLimit,
    buckets: HashMap<Family, Bucket>,
}

impl Limiter {
    /// A limiter with every family's bucket full.
    pub fn new(limit: AlertLimit) -> Limiter {
        Limiter {
            limit,
            buckets: HashMap::new(),
        }
    }

    /// Whether `alert`, seen at `now`, is written or held back (and counted).
    pub fn admit(&mut self, alert: &Alert, now: Instant) -> Verdict {
        if alert.kind == "SystemEvent" {
            // What moat says about the alerts themselves (losses, these counts) is rare
            // and must never be held back.
            return Verdict::Write;
        }
        let family = Family {
            policy: alert.policy_name.clone(),
            operation: alert.operation.clone(),
            action: alert.action.clone(),
        };
        let limit = self.limit;
        let bucket = self.buckets.entry(family).or_insert_with(|| Bucket {
            tokens: f64::from(limit.burst),
            refilled: now,
            resources: HashSet::new(),
            held: None,
        });
        let elapsed = now.saturating_duration_since(bucket.refilled).as_secs_f64();
        bucket.tokens =
            (bucket.tokens + elapsed * f64::from(limit.per_second)).min(f64::from(limit.burst));
        bucket.refilled = now;
        let new_resource = bucket.resources.len() < DISTINCT_RESOURCES
            && !bucket.resources.contains(&alert.resource);
        if new_resource {
            bucket.resources.insert(alert.resource.clone());
        }
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            return Verdict::Write;
        }
        if new_resource {
            return Verdict::Write;
        }
        match &mut bucket.held {
            Some(held) => {
                held.count += 1;
                held.last.clone_from(&alert.updated_time);
            }
            None => {
                bucket.held = Some(Held {
                    count: 1,
                    since: now,
                    first: alert.updated_time.clone(),
                    last: alert.updated_time.clone(),
                    example: alert.clone(),
                })
            }
        }
        Verdict::HoldBack
    }

    /// The `AlertThreshold` events due at `now`: of every family that has held alerts back
    /// for [`SUMMARY_INTERVAL`], or of every family that has held any back when `all`.
    pub fn due(&mut self, now: Instant, all: bool) -> Vec<Alert> {
        let limit = self.limit;
        let mut due = Vec::new();
        for bucket in self.buckets.values_mut() {
            let ready = bucket.held.as_ref().is_some_and(|held| {
                all || now.saturating_duration_since(held.since) >= SUMMARY_INTERVAL
            });
            if ready {
                if let Some(held) = bucket.held.take() {
                    due.push(held.event(limit));
                }
            }
        }
        due
    }

    /// Alerts held back and not yet written in an `AlertThreshold` event.
    pub fn pending(&self) -> u64 {
        self.buckets
            .values()
            .filter_map(|bucket| bucket.held.as_ref())
            .map(|held| held.count)
            .sum()
    }
}

impl Held {
    fn event(self, limit: AlertLimit) -> Alert {
        let now = chrono::Utc::now();
        let example = self.example;
        Alert {
            timestamp: now.timestamp(),
            updated_time: now.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            kind: "SystemEvent".into(),
            operation: "AlertThreshold".into(),
            resource: example.operation.clone(),
            message: format!(
                "{} {} alert(s) of {} ({}) were held back by the alert rate limit ({} a second after a burst of {}); the first alert of each resource was written",
                self.count,
                example.operation,
                example.policy_name,
                example.action,
                limit.per_second,
                limit.burst
            ),
            data: format!(
                "held_back={} operation={} per_second={} burst={} first={} last={}",
                self.count, example.operation, limit.per_second, limit.burst, self.first, self.last
            ),
            enforcer: "moat".into(),
            result: "Passed".into(),
            // Who and what: the sandbox, the policy and its rule's severity and tags.
            cluster_name: example.cluster_name,
            host_name: example.host_name,
            namespace_name: example.namespace_name,
            pod_name: example.pod_name,
            labels: example.labels,
            container_id: example.container_id,
            container_name: example.container_name,
            policy_name: example.policy_name,
            severity: example.severity,
            tags: example.tags,
            action: example.action,
            ..Alert::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(policy: &str, operation: &str, resource: &str) -> Alert {
        Alert {
            kind: "MatchedPolicy".into(),
            policy_name: policy.into(),
            operation: operation.into(),
            action: "Block".into(),
            resource: resource.into(),
            updated_time: "t".into(),
            ..Alert::default()
        }
    }

    fn limit(per_second: u32, burst: u32) -> Limiter {
        Limiter::new(AlertLimit { per_second, burst })
    }

    fn written(limiter: &mut Limiter, alert: &Alert, n: usize, at: Instant) -> usize {
        (0..n)
            .filter(|_| limiter.admit(alert, at) == Verdict::Write)
            .count()
    }

    #[test]
    fn a_burst_then_the_rate() {
        let mut limiter = limit(10, 100);
        let start = Instant::now();
        let open = alert("p", "File", "/etc/shadow");
        assert_eq!(written(&mut limiter, &open, 1000, start), 100);
        assert_eq!(limiter.pending(), 900);
        // Half a second later: five more tokens.
        let later = start + Duration::from_millis(500);
        assert_eq!(written(&mut limiter, &open, 1000, later), 5);
        assert_eq!(limiter.pending(), 1895);
        // The bucket never holds more than the burst.
        let much_later = later + Duration::from_secs(3600);
        assert_eq!(written(&mut limiter, &open, 1000, much_later), 100);
    }

    #[test]
    fn one_family_flooding_holds_back_no_other() {
        let mut limiter = limit(10, 100);
        let now = Instant::now();
        written(
            &mut limiter,
            &alert("p", "File", "/etc/shadow"),
            10_000,
            now,
        );
        assert_eq!(
            written(
                &mut limiter,
                &alert("DefaultPosture", "File", "/x"),
                100,
                now
            ),
            100
        );
        assert_eq!(
            written(
                &mut limiter,
                &alert("p", "Process", "/usr/bin/apt"),
                100,
                now
            ),
            100
        );
        let mut audit = alert("p", "File", "/etc/shadow");
        audit.action = "Audit".into();
        assert_eq!(written(&mut limiter, &audit, 100, now), 100);
    }

    #[test]
    fn the_first_alert_of_each_resource_passes_up_to_the_bound() {
        let mut limiter = limit(10, 100);
        let now = Instant::now();
        written(
            &mut limiter,
            &alert("p", "File", "/etc/os-release"),
            10_000,
            now,
        );
        let passed = (0..DISTINCT_RESOURCES * 2)
            .filter(|i| {
                limiter.admit(&alert("p", "File", &format!("/f{i}")), now) == Verdict::Write
            })
            .count();
        // /etc/os-release took one of the places.
        assert_eq!(passed, DISTINCT_RESOURCES - 1);
        // A resource seen before is not new: its repeats are held back.
        assert_eq!(
            limiter.admit(&alert("p", "File", "/f0"), now),
            Verdict::HoldBack
        );
    }

    #[test]
    fn system_events_are_never_held_back() {
        let mut limiter = limit(1, 1);
        let now = Instant::now();
        let mut lost = alert("", "Syscall", "");
        lost.kind = "SystemEvent".into();
        assert_eq!(written(&mut limiter, &lost, 1000, now), 1000);
        assert_eq!(limiter.pending(), 0);
    }

    #[test]
    fn counts_are_written_every_interval_and_at_the_end_and_add_up() {
        let mut limiter = limit(10, 100);
        let start = Instant::now();
        let open = alert("p", "File", "/etc/shadow");
        let exec = alert("p", "Process", "/usr/bin/apt");
        let mut writes = written(&mut limiter, &open, 5000, start) as u64;
        writes += written(&mut limiter, &exec, 300, start) as u64;
        assert!(limiter
            .due(start + Duration::from_secs(9), false)
            .is_empty());
        let first = limiter.due(start + SUMMARY_INTERVAL, false);
        assert_eq!(first.len(), 2);
        let later = start + SUMMARY_INTERVAL + Duration::from_secs(1);
        writes += written(&mut limiter, &open, 1000, later) as u64;
        let last = limiter.due(later, true);
        assert_eq!(last.len(), 1);
        assert_eq!(limiter.pending(), 0);
        let held: u64 = first
            .iter()
            .chain(&last)
            .map(|event| {
                assert_eq!(event.kind, "SystemEvent");
                assert_eq!(event.operation, "AlertThreshold");
                assert_eq!(event.policy_name, "p");
                let count = event.data.split(' ').next().unwrap();
                count
                    .strip_prefix("held_back=")
                    .unwrap()
                    .parse::<u64>()
                    .unwrap()
            })
            .sum();
        assert_eq!(writes + held, 6300);
    }

    #[test]
    fn flags_out_of_range_are_refused() {
        assert_eq!(AlertLimit::from_flags(0, 100), Ok(None));
        assert_eq!(
            AlertLimit::from_flags(10, 100),
            Ok(Some(AlertLimit::DEFAULT))
        );
        assert!(AlertLimit::from_flags(10, 0).is_err());
        assert!(AlertLimit::from_flags(AlertLimit::MAX + 1, 100).is_err());
        assert!(AlertLimit::from_flags(10, AlertLimit::MAX + 1).is_err());
    }
}
