//! Text and JSON rendering of plans, apply reports and readiness, shared by `diff`,
//! `apply` and `get`.

use bottle_contract::node::shown;
use serde_json::{Value, json};

use crate::apply::{OpReport, Outcome, verb};
use crate::plan::{Action, Plan};
use crate::ready::{Readiness, Settled};
use crate::supervise::Grants;

/// One line per planned change, grouped by bottle.
pub fn plan_text(plan: &Plan) -> String {
    let mut out = String::new();
    let mut last: Option<&str> = None;
    for s in &plan.steps {
        if last != Some(s.bottle.as_str()) {
            let title = if s.bottle.is_empty() {
                "shared".to_string()
            } else {
                format!("bottle {}", s.bottle)
            };
            out.push_str(&format!("{title}:\n"));
            last = Some(&s.bottle);
        }
        let (sign, detail) = match &s.action {
            Action::Create => ('+', String::new()),
            Action::Recreate { reasons } => ('~', format!(" ({})", reasons.join(", "))),
            Action::Start => ('>', " (not running)".to_string()),
            Action::Delete => ('-', String::new()),
            Action::Rewrite { volume } => (
                '~',
                format!(
                    " (new files written into volume {volume} in place; reloaded, nothing restarts)"
                ),
            ),
        };
        out.push_str(&format!(
            "  {sign} {:<8} {:<13} {}{detail}\n",
            s.action.verb(),
            shown(s.node),
            s.key
        ));
    }
    out
}

pub fn plan_json(plan: &Plan) -> Value {
    let steps: Vec<Value> = plan
        .steps
        .iter()
        .map(|s| {
            let mut v = json!({
                "bottle": s.bottle,
                "node": shown(s.node),
                "kind": s.key.kind.as_str(),
                "name": s.key.name,
                "action": s.action.verb(),
            });
            if let Action::Recreate { reasons } = &s.action {
                v["reasons"] = json!(reasons);
            }
            if let Action::Rewrite { volume } = &s.action {
                v["rewrites"] = json!(volume);
            }
            v
        })
        .collect();
    json!({
        "in_sync": plan.is_empty(),
        "changes": steps,
        "unchanged": plan.unchanged.len(),
    })
}

/// The grants layer of `diff`: nothing when there are none.
/// Expired grants are listed as such (they no longer count; `queue revoke` removes them).
pub fn grants_text(grants: &Grants, now: u64) -> String {
    if grants.is_empty() {
        return String::new();
    }
    let mut out = String::from("grants (approved with `bottle queue`, on top of the manifest):\n");
    for (g, _) in grants.listed() {
        out.push_str(&format!(
            "  bottle {}: {} {} ({}, {})\n",
            g.bottle,
            g.ask.kind(),
            g.ask.summary(),
            g.id,
            grant_left(g, now)
        ));
    }
    out
}

/// `until revoked`, `1h59m left` or `expired`.
pub fn grant_left(g: &crate::supervise::Grant, now: u64) -> String {
    match g.until {
        Some(_) if !g.expired(now) => format!("{} left", g.left(now)),
        _ => g.left(now),
    }
}

pub fn grants_json(grants: &Grants, now: u64) -> Value {
    let v: Vec<Value> = grants
        .listed()
        .into_iter()
        .map(|(g, expired)| grant_json(g, expired, now))
        .collect();
    json!(v)
}

/// One grant of [`grants_json`].
pub fn grant_json(g: &crate::supervise::Grant, expired: bool, now: u64) -> Value {
    json!({
        "id": g.id, "bottle": g.bottle, "kind": g.ask.kind(),
        "summary": g.ask.summary(), "at": g.at, "until": g.until,
        "expired": expired,
        "left_secs": g.until.map(|u| u.saturating_sub(now)),
    })
}

/// A progress line for one finished operation.
pub fn progress_line(r: &OpReport) -> String {
    let what = format!("{} {} ({})", verb(r.op.kind), r.op.key, shown(r.op.node));
    match &r.outcome {
        Outcome::Done => format!("  ok      {what} {:.1}s", r.took.as_secs_f64()),
        Outcome::Failed(e) => format!("  FAILED  {what}: {e}"),
        Outcome::Skipped { because } => format!("  skipped {what}: {because}"),
    }
}

pub fn report_json(reports: &[OpReport]) -> Value {
    let ops: Vec<Value> = reports
        .iter()
        .map(|r| {
            let (status, error) = match &r.outcome {
                Outcome::Done => ("done", None),
                Outcome::Failed(e) => ("failed", Some(e.to_string())),
                Outcome::Skipped { because } => ("skipped", Some(because.clone())),
            };
            json!({
                "op": verb(r.op.kind),
                "kind": r.op.key.kind.as_str(),
                "name": r.op.key.name,
                "bottle": r.op.bottle,
                "node": shown(r.op.node),
                "status": status,
                "error": error,
            })
        })
        .collect();
    json!({ "operations": ops })
}

/// Counts of operations by verb and outcome, as one summary line.
pub fn summary(reports: &[OpReport]) -> String {
    let count = |f: &dyn Fn(&OpReport) -> bool| reports.iter().filter(|r| f(r)).count();
    let done =
        |v: &'static str| move |r: &OpReport| r.outcome == Outcome::Done && verb(r.op.kind) == v;
    format!(
        "{} created, {} removed, {} started, {} failed, {} skipped",
        count(&done("create")),
        count(&done("remove")),
        count(&done("start")),
        count(&|r| matches!(r.outcome, Outcome::Failed(_))),
        count(&|r| matches!(r.outcome, Outcome::Skipped { .. })),
    )
}

/// One line per container waited for, as its wait ends.
pub fn ready_line(s: &Settled) -> String {
    let what = format!("{} ({}, bottle {})", s.container, s.node.as_str(), s.bottle);
    let took = s.took.as_secs_f64();
    match &s.outcome {
        Readiness::Ready(detail) => format!("  ready   {what} {took:.1}s: {detail}"),
        Readiness::Refused { path, why } => {
            format!("  REFUSED {what}: the new {path} was not loaded: {why}")
        }
        Readiness::NotReady(last) => {
            format!("  NOT READY {what} after {took:.0}s; it last said: {last}")
        }
    }
}

/// Readiness as JSON: one entry per container waited for.
pub fn ready_json(settled: &[Settled]) -> Value {
    let rows: Vec<Value> = settled
        .iter()
        .map(|s| {
            let (status, detail) = match &s.outcome {
                Readiness::Ready(d) => ("ready", d.clone()),
                Readiness::Refused { path, why } => ("refused", format!("{path}: {why}")),
                Readiness::NotReady(d) => ("not-ready", d.clone()),
            };
            json!({
                "bottle": s.bottle,
                "node": s.node.as_str(),
                "container": s.container,
                "status": status,
                "detail": detail,
                "seconds": s.took.as_secs_f64(),
            })
        })
        .collect();
    Value::Array(rows)
}
