//! Unit tests of the watch -> engine event mapping (no cluster): the events it gives are
//! the ones the core's watch triggers on.

use super::*;
use bottle_contract::labels;
use bottle_core::watch::triggers::{event_filters, relevant};
use render::Record;

const NOW: i64 = 1_700_000_000_000_000_000;

fn record(node: &str) -> Record {
    Record {
        name: format!("bottle-p-b-{node}"),
        container: node.into(),
        image: "bottle-sidecar:abc".into(),
        labels: labels::object_labels("p", "b", node, "0123456789abcdef", ""),
        networks: vec!["bottle-p-b-net-internal".into()],
        aliases: vec![node.into()],
        port: None,
    }
}

/// A pod `uid` holding the containers `nodes`; `terminated` among them ended; `phase`.
fn pod(uid: &str, nodes: &[&str], terminated: &[&str], phase: &str) -> Object {
    let records: Vec<Record> = nodes.iter().map(|n| record(n)).collect();
    let statuses: Vec<serde_json::Value> = nodes
        .iter()
        .map(|n| {
            let state = if terminated.contains(n) {
                serde_json::json!({"terminated": {"exitCode": 1}})
            } else {
                serde_json::json!({"running": {}})
            };
            serde_json::json!({"name": n, "state": state, "ready": true, "restartCount": 0,
                "image": "i", "imageID": ""})
        })
        .collect();
    let p: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": format!("pod-{uid}"), "uid": uid, "annotations": {
            render::CONTAINERS: serde_json::to_string(&records).unwrap()}},
        "status": {"phase": phase, "containerStatuses": statuses},
    }))
    .expect("pod");
    Object::Pod(Box::new(p))
}

fn deleting(o: Object) -> Object {
    let Object::Pod(mut p) = o else { panic!() };
    p.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        "2026-01-01T00:00:00Z".parse().expect("time"),
    ));
    Object::Pod(p)
}

fn meta(name: &str, object: &str) -> ObjectMeta {
    let mut l = labels::object_labels("p", "b", "n", "0123456789abcdef", "");
    l.insert(OBJECT.into(), object.into());
    ObjectMeta {
        name: Some(name.into()),
        labels: Some(l),
        ..Default::default()
    }
}

/// A mapper with the core's filters, past each watch's (empty) first listing.
fn listed() -> Mapper {
    let mut m = Mapper::new(&event_filters());
    for of in [PODS, NETWORKS, VOLUMES] {
        assert_eq!(m.map(Change::Listing { of }, NOW), Ok(vec![]));
        assert_eq!(m.map(Change::ListDone { of }, NOW), Ok(vec![]));
    }
    m
}

/// What each event of `change` triggers in the core's watch of project `p`.
fn triggers(m: &mut Mapper, change: Change) -> Vec<String> {
    m.map(change, NOW)
        .expect("no restart")
        .iter()
        .map(|e| {
            assert_eq!(e.time_nano, NOW);
            relevant(e, "p").map_or_else(|| format!("ignored {e:?}"), |t| t.to_string())
        })
        .collect()
}

#[test]
fn a_deleted_pod_destroys_each_container_recorded_in_it() {
    let mut m = listed();
    let p = pod("u1", &["agent-net", "agent"], &[], "Running");
    assert!(triggers(&mut m, Change::Applied(p.clone())).is_empty());
    assert_eq!(
        triggers(&mut m, Change::Deleted(p)),
        [
            "container bottle-p-b-agent-net destroy",
            "container bottle-p-b-agent destroy"
        ]
    );
    // Attributes: the container's labels, so the core knows it as the project's.
    let e = &m
        .map(Change::Deleted(pod("u2", &["egress"], &[], "Running")), NOW)
        .unwrap()[0];
    assert_eq!(e.id, "u2");
    assert_eq!(e.attributes["bottle.node"], "egress");
    assert_eq!(e.attributes["name"], "bottle-p-b-egress");
}

#[test]
fn a_container_that_stopped_dies_once_and_a_pod_being_deleted_says_nothing_yet() {
    let mut m = listed();
    let up = pod("u1", &["agent-net", "agent"], &[], "Running");
    assert!(triggers(&mut m, Change::Applied(up)).is_empty());
    let one = pod("u1", &["agent-net", "agent"], &["agent"], "Running");
    assert_eq!(
        triggers(&mut m, Change::Applied(one.clone())),
        ["container bottle-p-b-agent die"]
    );
    // Later updates of the same pod repeat nothing; the pod failing adds the other.
    assert!(triggers(&mut m, Change::Applied(one)).is_empty());
    let failed = pod("u1", &["agent-net", "agent"], &["agent"], "Failed");
    assert_eq!(
        triggers(&mut m, Change::Applied(failed.clone())),
        ["container bottle-p-b-agent-net die"]
    );
    // A pod on its way out: nothing until it is gone, then its containers' destroy.
    let going = deleting(pod("u2", &["egress"], &["egress"], "Running"));
    assert!(triggers(&mut m, Change::Applied(going.clone())).is_empty());
    assert_eq!(
        triggers(&mut m, Change::Deleted(going)),
        ["container bottle-p-b-egress destroy"]
    );
    // What is remembered goes with the pod.
    triggers(&mut m, Change::Deleted(failed));
    assert!(m.dead.is_empty(), "{:?}", m.dead);
    // A new pod of the same names (another uid) that stops dies again.
    let again = pod("u3", &["agent-net", "agent"], &["agent"], "Running");
    assert_eq!(
        triggers(&mut m, Change::Applied(again)),
        ["container bottle-p-b-agent die"]
    );
}

#[test]
fn the_initial_listing_is_not_a_change() {
    let mut m = Mapper::new(&event_filters());
    assert_eq!(m.map(Change::Listing { of: PODS }, NOW), Ok(vec![]));
    let dead = pod("u1", &["egress"], &["egress"], "Failed");
    assert_eq!(m.map(Change::Listed(dead.clone()), NOW), Ok(vec![]));
    let grant = meta(&labels::grant_volume("p", "b", "p0123456789"), VOLUME);
    assert_eq!(
        m.map(Change::Listed(Object::Volume(grant.clone())), NOW),
        Ok(vec![])
    );
    assert_eq!(m.map(Change::ListDone { of: PODS }, NOW), Ok(vec![]));
    // Already dead when listed, already there when listed: no die, no create.
    assert!(triggers(&mut m, Change::Applied(dead)).is_empty());
    assert!(triggers(&mut m, Change::Applied(Object::Volume(grant))).is_empty());
}

#[test]
fn a_watch_listing_again_ends_the_stream_since_changes_may_be_missed() {
    let mut m = listed();
    assert_eq!(m.map(Change::Listing { of: NETWORKS }, NOW), Err(Restarted));
}

#[test]
fn network_markers_and_volume_secrets_map_to_network_and_volume_events() {
    let mut m = listed();
    let net = meta("bottle-p-b-net-internal", NETWORK);
    assert!(triggers(&mut m, Change::Applied(Object::Network(net.clone()))).is_empty());
    assert_eq!(
        triggers(&mut m, Change::Deleted(Object::Network(net))),
        ["network bottle-p-b-net-internal destroy"]
    );
    // A grant made and withdrawn: create once (a rewrite is no create), then destroy.
    let grant = labels::grant_volume("p", "b", "p0123456789");
    let g = meta(&grant, VOLUME);
    assert_eq!(
        triggers(&mut m, Change::Applied(Object::Volume(g.clone()))),
        [format!("volume {grant} create")]
    );
    assert!(triggers(&mut m, Change::Applied(Object::Volume(g.clone()))).is_empty());
    assert_eq!(
        triggers(&mut m, Change::Deleted(Object::Volume(g))),
        [format!("volume {grant} destroy")]
    );
    // Another volume of the project is reported, and the core leaves it alone.
    let config = meta("bottle-p-b-config", VOLUME);
    let got = triggers(&mut m, Change::Applied(Object::Volume(config)));
    assert!(got.len() == 1 && got[0].starts_with("ignored"), "{got:?}");
    assert!(m.volumes.len() == 1);
}

#[test]
fn only_the_events_the_filters_ask_for_are_given() {
    let filters = HashMap::from([("type".to_string(), vec!["network".to_string()])]);
    let mut m = Mapper::new(&filters);
    let p = pod("u1", &["egress"], &[], "Running");
    assert_eq!(m.map(Change::Deleted(p), NOW), Ok(vec![]));
    let net = meta("bottle-p-b-net-internal", NETWORK);
    assert_eq!(
        m.map(Change::Deleted(Object::Network(net)), NOW)
            .unwrap()
            .len(),
        1
    );
}
