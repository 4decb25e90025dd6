//! The alert rate limit: what keeps a sandbox that loops over a denied operation from
//! writing tens of thousands of lines a second to the host's disk, without hiding
//! anything an operator needs.
//!
//! Alerts are limited per *family*: the policy, operation and action they share
//! (`untrusted`'s `File` `Block`s, the default posture's `Network` `Audit`s, ...). Each
//! family has a token bucket of its own, so a flood in one family (default-posture noise,
//! say) never holds back another's alerts; KubeArmor's throttle stops every alert of the
//! container instead. The first alert of each resource is written whatever the buckets
//! hold, for the first [`DISTINCT_RESOURCES`] resources of the sandbox, so repeating one
//! denied open cannot hide the first attempt on another path. Output must stay bounded,
//! so a workload that names more resources than that can then have a first attempt held
//! back, but not unseen: moat says when the bound is reached, and what is held back is
//! counted (with how many different resources it named) in a `SystemEvent`
//! (`Operation` `AlertThreshold`, as KubeArmor names its throttle event), at most every
//! [`SUMMARY_INTERVAL`] while it lasts and when the sandbox ends. Alerts written plus
//! the counts add up to the events seen.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, HashSet};
use std::hash::BuildHasher;
use std::time::{Duration, Instant};

use crate::alert::Alert;

/// How often a family's held-back count is written while it keeps growing.
pub const SUMMARY_INTERVAL: Duration = Duration::from_secs(10);

/// Resources per sandbox whose first alert passes whatever the buckets hold.
pub const DISTINCT_RESOURCES: usize = 4096;

/// Different resources counted among a family's held-back alerts, at most (then the
/// count says `16384+`): 8 bytes each, so a flood of random names cannot grow moat.
const DISTINCT_HELD_BACK: usize = 16_384;

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
    /// flooding sandbox writes about 7 KiB a second per family (alerts are ~650 bytes).
    pub const DEFAULT: AlertLimit = AlertLimit {
        per_second: 10,
        burst: 100,
    };
    /// The largest rate and burst accepted (a limit above is no limit).
    pub const MAX: u32 = 1_000_000;

    /// The limit for `per_second` and `burst` as the command line gives them: `None` (no
    /// limit) for a rate of 0, an error for values out of range.
    pub fn from_flags(per_second: u32, burst: u32) -> Result<Option<AlertLimit>, String> {
        if per_second == 0 {
            return Ok(None);
        }
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
        Ok(Some(AlertLimit { per_second, burst }))
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
    held: Option<Held>,
}

/// Alerts of a family held back since its last `AlertThreshold` event.
#[derive(Debug)]
struct Held {
    count: u64,
    /// Hashes of the different resources among them, up to [`DISTINCT_HELD_BACK`].
    resources: HashSet<u64>,
    since: Instant,
    first: String,
    last: String,
    /// The held-back alert of the highest severity: the sandbox and rule fields the
    /// event repeats, so a flood of a low-severity rule cannot lower a graver one's.
    example: Alert,
}

/// The buckets of one sandbox's alert families.
#[derive(Debug)]
pub struct Limiter {
    limit: AlertLimit,
    buckets: HashMap<Family, Bucket>,
    /// Hashes (keyed at random, so a workload cannot aim for collisions) of the
    /// (family, resource) pairs alerted so far, up to [`DISTINCT_RESOURCES`].
    resources: HashSet<u64>,
    hasher: RandomState,
    /// The event saying the resources bound was reached, until it is written.
    bound_reached: Option<Alert>,
}

impl Limiter {
    /// A limiter with every family's bucket full.
    pub fn new(limit: AlertLimit) -> Limiter {
        Limiter {
            limit,
            buckets: HashMap::new(),
            resources: HashSet::new(),
            hasher: RandomState::new(),
            bound_reached: None,
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
        let resource = self.hasher.hash_one((&family, &alert.resource));
        // Only inserted while there is room; the set never shrinks, so it fills once.
        let first_of_resource =
            self.resources.len() < DISTINCT_RESOURCES && self.resources.insert(resource);
        if first_of_resource && self.resources.len() == DISTINCT_RESOURCES {
            self.bound_reached = Some(bound_event(alert));
        }
        let limit = self.limit;
        let bucket = self.buckets.entry(family).or_insert_with(|| Bucket {
            tokens: f64::from(limit.burst),
            refilled: now,
            held: None,
        });
        let elapsed = now.saturating_duration_since(bucket.refilled).as_secs_f64();
        bucket.tokens =
            (bucket.tokens + elapsed * f64::from(limit.per_second)).min(f64::from(limit.burst));
        bucket.refilled = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            return Verdict::Write;
        }
        if first_of_resource {
            return Verdict::Write;
        }
        let held = bucket.held.get_or_insert_with(|| Held {
            count: 0,
            resources: HashSet::new(),
            since: now,
            first: alert.updated_time.clone(),
            last: String::new(),
            example: alert.clone(),
        });
        held.count += 1;
        held.last.clone_from(&alert.updated_time);
        if held.resources.len() < DISTINCT_HELD_BACK {
            held.resources.insert(resource);
        }
        if severity(alert) > severity(&held.example) {
            held.example = alert.clone();
        }
        Verdict::HoldBack
    }

    /// The events due at `now`: the one saying the resources bound was reached, and the
    /// `AlertThreshold` counts of every family that has held alerts back for
    /// [`SUMMARY_INTERVAL`] (of every family that has held any back, when `all`).
    pub fn due(&mut self, now: Instant, all: bool) -> Vec<Alert> {
        let limit = self.limit;
        let mut due = Vec::new();
        due.extend(self.bound_reached.take());
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

/// An alert's severity as a number (upstream writes 1..=10 as a string); 0 if none.
fn severity(alert: &Alert) -> u32 {
    alert.severity.parse().unwrap_or(0)
}

/// The event saying the sandbox's alerts have named [`DISTINCT_RESOURCES`] resources.
fn bound_event(alert: &Alert) -> Alert {
    let now = chrono::Utc::now();
    Alert {
        timestamp: now.timestamp(),
        updated_time: now.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        kind: "SystemEvent".into(),
        operation: "AlertThreshold".into(),
        message: format!(
            "the sandbox's alerts have named {DISTINCT_RESOURCES} different resources: from now on the first attempt on another resource is held back (and counted) when its family is over the alert rate limit"
        ),
        data: format!("distinct_resources={DISTINCT_RESOURCES}"),
        enforcer: "moat".into(),
        result: "Passed".into(),
        ..sandbox_fields(alert)
    }
}

/// The fields of `alert` that say which sandbox it is about, and nothing else.
fn sandbox_fields(alert: &Alert) -> Alert {
    Alert {
        cluster_name: alert.cluster_name.clone(),
        host_name: alert.host_name.clone(),
        namespace_name: alert.namespace_name.clone(),
        pod_name: alert.pod_name.clone(),
        labels: alert.labels.clone(),
        container_id: alert.container_id.clone(),
        container_name: alert.container_name.clone(),
        ..Alert::default()
    }
}

impl Held {
    fn event(self, limit: AlertLimit) -> Alert {
        let now = chrono::Utc::now();
        let distinct = match self.resources.len() {
            n if n >= DISTINCT_HELD_BACK => format!("{n}+"),
            n => n.to_string(),
        };
        let example = self.example;
        Alert {
            timestamp: now.timestamp(),
            updated_time: now.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            kind: "SystemEvent".into(),
            operation: "AlertThreshold".into(),
            resource: example.operation.clone(),
            message: format!(
                "{} {} alert(s) of {} ({}) on {distinct} different resource(s) were held back by the alert rate limit ({} a second after a burst of {})",
                self.count,
                example.operation,
                example.policy_name,
                example.action,
                limit.per_second,
                limit.burst
            ),
            data: format!(
                "held_back={} resources={distinct} operation={} per_second={} burst={} first={} last={}",
                self.count, example.operation, limit.per_second, limit.burst, self.first, self.last
            ),
            enforcer: "moat".into(),
            result: "Passed".into(),
            // The policy, and the gravest held-back rule's severity and tags.
            policy_name: example.policy_name.clone(),
            severity: example.severity.clone(),
            tags: example.tags.clone(),
            action: example.action.clone(),
            ..sandbox_fields(&example)
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
        let mut audit = alert("p", "File", "/etc/shadow");
        audit.action = "Audit".into();
        let others = [
            alert("DefaultPosture", "File", "/x"),
            alert("p", "Process", "/usr/bin/apt"),
            audit,
        ];
        for other in &others {
            assert_eq!(written(&mut limiter, other, 100, now), 100, "{other:?}");
        }
    }

    #[test]
    fn the_first_alert_of_each_resource_passes_up_to_the_bound_and_then_is_counted() {
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
        // Reaching the bound is said once; the held-back count names how many different
        // resources it hides.
        let events = limiter.due(now, true);
        let bound: Vec<_> = events
            .iter()
            .filter(|e| e.data.starts_with("distinct_resources="))
            .collect();
        assert_eq!(bound.len(), 1);
        assert_eq!(bound[0].kind, "SystemEvent");
        let counts: Vec<_> = events
            .iter()
            .filter(|e| e.data.starts_with("held_back="))
            .collect();
        assert_eq!(counts.len(), 1);
        assert!(
            counts[0].data.starts_with(&format!(
                "held_back={} resources={} ",
                // os-release's 9,900 repeats, the 4,097 new names past the bound, /f0
                9_900 + DISTINCT_RESOURCES + 1 + 1,
                1 + DISTINCT_RESOURCES + 1 + 1
            )),
            "{}",
            counts[0].data
        );
        written(&mut limiter, &alert("p", "File", "/g"), 10, now);
        assert!(!limiter
            .due(now, true)
            .iter()
            .any(|e| e.data.starts_with("distinct_resources=")));
    }

    #[test]
    fn the_count_carries_the_gravest_held_back_severity() {
        let mut limiter = limit(10, 100);
        let now = Instant::now();
        let mut minor = alert("p", "File", "/tmp/noise");
        minor.severity = "1".into();
        minor.tags = "noise".into();
        let mut grave = alert("p", "File", "/etc/shadow");
        grave.severity = "9".into();
        grave.tags = "credentials".into();
        written(&mut limiter, &minor, 1000, now);
        written(&mut limiter, &grave, 1000, now);
        let events = limiter.due(now, true);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].severity, "9");
        assert_eq!(events[0].tags, "credentials");
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
        assert_eq!(AlertLimit::from_flags(0, 0), Ok(None));
        assert_eq!(
            AlertLimit::from_flags(10, 100),
            Ok(Some(AlertLimit::DEFAULT))
        );
        assert!(AlertLimit::from_flags(10, 0).is_err());
        assert!(AlertLimit::from_flags(AlertLimit::MAX + 1, 100).is_err());
        assert!(AlertLimit::from_flags(10, AlertLimit::MAX + 1).is_err());
    }
}
