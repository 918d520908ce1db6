//! Following the engine's event stream for `apply --watch`: subscribe from a time,
//! turn relevant events into [`Trigger`]s, and when the stream is lost, wait with
//! backoff until the engine answers, resubscribe from the last event seen, and ask for a
//! full resync. Over the [`Events`] trait, so the reconnect is tested against the fake
//! with paused time.

use futures_util::StreamExt as _;
use tokio::sync::mpsc::UnboundedSender;

use bottle_engine::Events;

use super::backoff::Backoff;
use super::metrics::Metrics;
use super::triggers::{Trigger, event_filters, relevant};

/// Follow the engine's events about `project` until `tx` closes. The subscription
/// starts at `since` (unix seconds): the stream is lazy, so events before it is first
/// polled are caught only by the replay. When the stream is lost (daemon restart,
/// socket gone), wait with backoff until the engine answers a ping, resubscribe from
/// the last event seen (replayed by the daemon, so nothing is missed; repeats are
/// harmless), and send [`Trigger::Reconnected`] so a full resync follows.
pub async fn follow<E: Events>(
    engine: &E,
    project: String,
    since: i64,
    tx: UnboundedSender<Trigger>,
    backoff: Backoff,
    metrics: std::sync::Arc<Metrics>,
) {
    let filters = event_filters();
    let mut since = since;
    let mut failures: u32 = 0;
    // ThreadRng is not Send: this task may move between threads.
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::from_rng(&mut rand::rng());
    loop {
        let stream = engine.events(Some(since), &filters);
        let mut stream = std::pin::pin!(stream);
        let lost = loop {
            match stream.next().await {
                Some(Ok(ev)) => {
                    // Resubscribe from this second: the daemon's `since` is inclusive.
                    since = since.max(ev.time_nano.div_euclid(1_000_000_000));
                    if let Some(t) = relevant(&ev, &project) {
                        tracing::debug!(trigger = %t, "engine event");
                        if tx.send(t).is_err() {
                            return;
                        }
                    }
                }
                Some(Err(e)) => break e.to_string(),
                None => break "the engine closed the stream".to_string(),
            }
        };
        if tx.is_closed() {
            return;
        }
        tracing::warn!(error = %lost, since, "engine event stream lost; reconnecting");
        metrics.stream_reconnect();
        loop {
            failures += 1;
            let wait = backoff.delay(failures, &mut rng);
            tokio::time::sleep(wait).await;
            if tx.is_closed() {
                return;
            }
            match engine.ping().await {
                Ok(()) => break,
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?backoff.ceiling(failures + 1), "engine still unreachable");
                }
            }
        }
        failures = 0;
        tracing::info!(since, "engine event stream resubscribed");
        if tx.send(Trigger::Reconnected).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;
    use std::time::Duration;

    use bottle_engine::fake::FakeEngine;
    use bottle_engine::{EngineError, Event};

    use super::*;

    fn event(name: &str, second: i64) -> Event {
        Event {
            kind: "container".into(),
            action: "die".into(),
            id: format!("id-{name}"),
            attributes: BTreeMap::from([
                ("name".to_string(), name.to_string()),
                ("bottle.managed".to_string(), "true".to_string()),
                ("bottle.project".to_string(), "p".to_string()),
            ]),
            time_nano: second * 1_000_000_000 + 5,
        }
    }

    fn lost() -> EngineError {
        EngineError::Unreachable("the socket went away".into())
    }

    #[tokio::test(start_paused = true)]
    async fn a_lost_stream_is_resubscribed_from_the_last_event_after_the_engine_answers() {
        let engine = Arc::new(FakeEngine::default());
        engine.script_events(vec![
            Ok(event("bottle-p-a-agent", 1_000)),
            Ok(event("bottle-p-a-egress", 1_007)),
            Err(lost()),
        ]);
        // The engine is still down for two pings, then answers.
        engine.script_pings(vec![Err(lost()), Err(lost())]);
        engine.script_events(vec![Ok(event("bottle-p-a-pipelock", 1_010))]);
        let metrics = Arc::new(Metrics::default());
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let started = tokio::time::Instant::now();
        let task = {
            let (engine, metrics) = (Arc::clone(&engine), Arc::clone(&metrics));
            tokio::spawn(async move {
                follow(&*engine, "p".into(), 990, tx, Backoff::ENGINE, metrics).await;
            })
        };
        let mut got = Vec::new();
        while got.len() < 4 {
            got.push(rx.recv().await.expect("a trigger"));
        }
        let names: Vec<String> = got
            .iter()
            .map(|t| match t {
                Trigger::Event { name, .. } => name.clone(),
                other => other.to_string(),
            })
            .collect();
        assert_eq!(names[..2], ["bottle-p-a-agent", "bottle-p-a-egress"]);
        assert!(matches!(got[2], Trigger::Reconnected), "{names:?}");
        assert_eq!(names[3], "bottle-p-a-pipelock");
        // Subscribed from the start, then from the second of the last event seen (the
        // engine's `since` is inclusive: a repeat is harmless, a gap is not).
        assert_eq!(engine.subscriptions(), [Some(990), Some(1_007)]);
        // Three waits with backoff (250 ms, 500 ms, 1 s ceilings, 25% jitter) before
        // the third ping answered.
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(1_312) && waited <= Duration::from_millis(1_750),
            "{waited:?}"
        );
        let pings = engine
            .calls()
            .iter()
            .filter(|c| *c == "ping engine")
            .count();
        assert_eq!(pings, 3);
        task.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn following_ends_when_nobody_listens() {
        let engine = FakeEngine::default();
        engine.script_events(vec![Err(lost())]);
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        drop(rx);
        follow(
            &engine,
            "p".into(),
            0,
            tx,
            Backoff::ENGINE,
            Arc::new(Metrics::default()),
        )
        .await;
        assert_eq!(engine.subscriptions(), [Some(0)]);
    }
}
