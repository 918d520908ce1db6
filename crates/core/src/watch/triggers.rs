//! Why a reconcile runs ([`Trigger`]), which engine events are ours ([`relevant`]), and
//! the debouncer that coalesces bursts of triggers into one reconcile ([`Debouncer`]).
//! All pure: time comes in as an argument.

use std::fmt;
use std::time::Duration;

use tokio::time::Instant;

use bottle_contract::labels;
use bottle_engine::Event;

/// What asks for a reconcile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Trigger {
    /// The first converge.
    Start,
    /// The manifest file was written, renamed over, or removed.
    Manifest,
    /// An engine event on one of the project's objects.
    Event {
        /// The object type the event is about (`container`, `network` or `volume`).
        kind: String,
        /// What happened to it (`die`, `destroy`, `disconnect`, ...).
        action: String,
        /// The object's name.
        name: String,
    },
    /// The periodic full resync.
    Resync,
    /// A held bottle's backoff ended.
    Retry {
        /// The bottle whose hold ended.
        bottle: String,
    },
    /// The last reconcile could not reach the engine; trying again.
    EngineRetry,
    /// The event stream came back after a loss: events may have been missed.
    Reconnected,
    /// A time-boxed grant has ended: the desired state no longer holds it.
    GrantExpired,
}

impl Trigger {
    /// Triggers that should not wait out the debounce window.
    fn urgent(&self) -> bool {
        matches!(
            self,
            Trigger::Start
                | Trigger::Resync
                | Trigger::Retry { .. }
                | Trigger::EngineRetry
                | Trigger::Reconnected
                | Trigger::GrantExpired
        )
    }
}

impl fmt::Display for Trigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Trigger::Start => write!(f, "start"),
            Trigger::Manifest => write!(f, "manifest changed"),
            Trigger::Event { kind, action, name } => write!(f, "{kind} {name} {action}"),
            Trigger::Resync => write!(f, "resync"),
            Trigger::Retry { bottle } => write!(f, "retry bottle {bottle}"),
            Trigger::EngineRetry => write!(f, "engine retry"),
            Trigger::Reconnected => write!(f, "event stream reconnected"),
            Trigger::GrantExpired => write!(f, "a grant expired"),
        }
    }
}

/// Container actions that mean drift.
const CONTAINER_ACTIONS: [&str; 4] = ["die", "stop", "destroy", "oom"];
/// Network actions that mean drift.
const NETWORK_ACTIONS: [&str; 2] = ["destroy", "disconnect"];
/// Volume actions that matter: a grant made or withdrawn by `bottle queue`.
const VOLUME_ACTIONS: [&str; 2] = ["create", "destroy"];

/// The server-side event filter: only the actions above, of containers and networks.
/// Labels cannot be filtered on the server, since network events carry none.
pub fn event_filters() -> std::collections::HashMap<String, Vec<String>> {
    let mut actions: Vec<String> = CONTAINER_ACTIONS
        .iter()
        .chain(NETWORK_ACTIONS.iter())
        .chain(VOLUME_ACTIONS.iter())
        .map(|a| a.to_string())
        .collect();
    actions.sort();
    actions.dedup();
    std::collections::HashMap::from([
        (
            "type".to_string(),
            vec![
                "container".to_string(),
                "network".to_string(),
                "volume".to_string(),
            ],
        ),
        ("event".to_string(), actions),
    ])
}

/// The trigger for `event` when it is about one of `project`'s objects. Containers are
/// recognised by their labels; networks, whose events carry no labels, by name prefix
/// (a project whose name extends this one's with `-` may cause a spare reconcile).
pub fn relevant(event: &Event, project: &str) -> Option<Trigger> {
    // Volume events name the volume only by the actor id.
    let name = event
        .attributes
        .get("name")
        .or_else(|| (event.kind == "volume" && !event.id.is_empty()).then_some(&event.id))?;
    let ours = match event.kind.as_str() {
        "container" => {
            CONTAINER_ACTIONS.contains(&event.action.as_str())
                && labels::is_ours(&event.attributes, project)
        }
        "network" => {
            NETWORK_ACTIONS.contains(&event.action.as_str())
                && name.starts_with(&labels::project_prefix(project))
        }
        // Only grants: the reconciler's own volume work must not wake it again.
        "volume" => {
            VOLUME_ACTIONS.contains(&event.action.as_str())
                && labels::is_grant_volume(name, project)
        }
        _ => false,
    };
    ours.then(|| Trigger::Event {
        kind: event.kind.clone(),
        action: event.action.clone(),
        name: name.clone(),
    })
}

/// Coalesces triggers: a reconcile runs `window` after the last of a burst, but no later
/// than `max_wait` after its first; urgent triggers run at once. Duplicates are dropped.
#[derive(Debug)]
pub struct Debouncer {
    window: Duration,
    max_wait: Duration,
    pending: Vec<Trigger>,
    first: Option<Instant>,
    deadline: Option<Instant>,
}

impl Debouncer {
    /// A debouncer with nothing pending, waiting `window` of quiet after a burst's last
    /// trigger and at most `max_wait` after its first.
    pub fn new(window: Duration, max_wait: Duration) -> Debouncer {
        Debouncer {
            window,
            max_wait,
            pending: Vec::new(),
            first: None,
            deadline: None,
        }
    }

    /// Add trigger `t`, seen at `now`, and move the deadline: to `now` when `t` is urgent,
    /// else `window` later but no later than `max_wait` after the burst's first trigger.
    pub fn push(&mut self, t: Trigger, now: Instant) {
        let first = *self.first.get_or_insert(now);
        let due = if t.urgent() {
            now
        } else {
            (now + self.window).min(first + self.max_wait)
        };
        self.deadline = Some(match self.deadline {
            // An urgent trigger pulls the deadline in; a later one never pushes an
            // urgent deadline out.
            Some(d) if d <= now || t.urgent() => d.min(due),
            _ => due,
        });
        if !self.pending.contains(&t) {
            self.pending.push(t);
        }
    }

    /// When the pending batch is due.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// The batch, when due at `now`.
    pub fn take(&mut self, now: Instant) -> Option<Vec<Trigger>> {
        match self.deadline {
            Some(d) if d <= now => {
                self.deadline = None;
                self.first = None;
                Some(std::mem::take(&mut self.pending))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn ev(name: &str) -> Trigger {
        Trigger::Event {
            kind: "container".into(),
            action: "die".into(),
            name: name.into(),
        }
    }

    #[test]
    fn a_burst_is_one_batch_after_the_quiet_window() {
        let mut d = Debouncer::new(ms(200), ms(1000));
        let t0 = Instant::now();
        d.push(Trigger::Manifest, t0);
        d.push(ev("a"), t0 + ms(100));
        d.push(Trigger::Manifest, t0 + ms(150));
        assert_eq!(d.deadline(), Some(t0 + ms(350)));
        assert_eq!(d.take(t0 + ms(349)), None);
        assert_eq!(d.take(t0 + ms(350)), Some(vec![Trigger::Manifest, ev("a")]));
        assert_eq!(d.deadline(), None);
        assert_eq!(d.take(t0 + ms(5000)), None);
    }

    #[test]
    fn a_never_ending_burst_still_runs_by_max_wait() {
        let mut d = Debouncer::new(ms(200), ms(1000));
        let t0 = Instant::now();
        for i in 0..20 {
            d.push(ev(&format!("c{i}")), t0 + ms(i * 100));
        }
        assert_eq!(d.deadline(), Some(t0 + ms(1000)));
        assert_eq!(d.take(t0 + ms(1000)).map(|b| b.len()), Some(20));
    }

    #[test]
    fn urgent_triggers_run_at_once_and_join_the_batch() {
        let mut d = Debouncer::new(ms(200), ms(1000));
        let t0 = Instant::now();
        d.push(ev("a"), t0);
        d.push(Trigger::Resync, t0 + ms(50));
        assert_eq!(d.deadline(), Some(t0 + ms(50)));
        // A later ordinary trigger does not delay the urgent batch.
        d.push(ev("b"), t0 + ms(60));
        assert_eq!(d.deadline(), Some(t0 + ms(50)));
        assert_eq!(
            d.take(t0 + ms(60)),
            Some(vec![ev("a"), Trigger::Resync, ev("b")])
        );
    }

    fn event(kind: &str, action: &str, attrs: &[(&str, &str)]) -> Event {
        Event {
            kind: kind.into(),
            action: action.into(),
            id: "x".into(),
            attributes: attrs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
            time_nano: 0,
        }
    }

    #[test]
    fn only_our_objects_and_drift_actions_trigger() {
        let ours = [
            ("name", "bottle-p-a-agent"),
            ("bottle.managed", "true"),
            ("bottle.project", "p"),
        ];
        assert!(relevant(&event("container", "die", &ours), "p").is_some());
        assert!(relevant(&event("container", "oom", &ours), "p").is_some());
        assert!(relevant(&event("container", "start", &ours), "p").is_none());
        assert!(relevant(&event("container", "die", &ours), "q").is_none());
        let foreign = [("name", "bottle-p-a-agent"), ("bottle.project", "p")];
        assert!(relevant(&event("container", "die", &foreign), "p").is_none());
        let net = [("name", "bottle-p-a-net-internal"), ("type", "bridge")];
        assert_eq!(
            relevant(&event("network", "disconnect", &net), "p"),
            Some(Trigger::Event {
                kind: "network".into(),
                action: "disconnect".into(),
                name: "bottle-p-a-net-internal".into()
            })
        );
        assert!(relevant(&event("network", "connect", &net), "p").is_none());
        assert!(relevant(&event("network", "destroy", &net), "other").is_none());
        let filters = event_filters();
        assert_eq!(filters["type"], vec!["container", "network", "volume"]);
        assert!(filters["event"].contains(&"disconnect".to_string()));
    }

    #[test]
    fn grant_volumes_trigger_and_other_volumes_do_not() {
        let vol = |id: &str, action: &str| Event {
            id: id.into(),
            ..event("volume", action, &[("driver", "local")])
        };
        let grant = "bottle-p-a-grant-p0123456789";
        assert!(relevant(&vol(grant, "create"), "p").is_some());
        assert!(relevant(&vol(grant, "destroy"), "p").is_some());
        assert!(relevant(&vol(grant, "mount"), "p").is_none());
        assert!(relevant(&vol(grant, "create"), "q").is_none());
        assert!(relevant(&vol("bottle-p-a-home", "create"), "p").is_none());
    }
}
