//! The console's HTML, built with maud: every value is escaped by the template engine,
//! so agent-written text (a proposal's reason, a host, a Dockerfile) is always text.
//! [`index`] is the whole page; [`state`] the live part the page swaps in when the
//! server sends it: per project served, its queue, grants and bottles, each
//! [`project`]'s. The audit rows are built by the script from JSON with `textContent`.

use std::collections::BTreeMap;

use maud::{DOCTYPE, Markup, html};

use crate::cli::get::BottleView;
use crate::supervise::{Ask, Grants};
use bottle_contract::supervise::Verdict;
use bottle_core::queue::Found;

/// The whole page; `served` names what it serves, `state` is the live part, already
/// rendered.
pub fn index(served: &str, token: &str, state: &str) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { "bottle console: " (served) }
                link rel="stylesheet" href={ "/static/console.css?token=" (token) };
                script src={ "/static/console.js?token=" (token) } defer {}
            }
            body {
                header {
                    h1 { "bottle console" }
                    span.served { strong { (served) } }
                    span #live .live { "connecting…" }
                }
                main #state { (maud::PreEscaped(state)) }
                section #audit {
                    h2 { "Audit stream" }
                    div.filters {
                        label { "project " select #f-project { option value="" { "all" } } }
                        label { "bottle " select #f-bottle { option value="" { "all" } } }
                        label {
                            "verdict "
                            select #f-verdict {
                                option value="" { "all" }
                                @for v in ["deny", "allow", "ask", "warn", "error"] {
                                    option value=(v) { (v) }
                                }
                            }
                        }
                    }
                    table #audit-table {
                        thead { tr { th { "time" } th { "project" } th { "bottle" } th { "source" } th { "verdict" } th { "reason" } th { "host" } th { "detail" } } }
                        tbody #audit-rows {}
                    }
                }
            }
        }
    }
}

/// What the live part shows of one project.
pub struct StateView<'a> {
    /// The console's token, for the forms' URLs.
    pub token: &'a str,
    pub project: &'a str,
    pub now: u64,
    pub bottles: &'a BTreeMap<String, BottleView>,
    pub found: &'a [Found],
    pub grants: &'a Grants,
    /// Each bottle's Dockerfile now, for the diff of a proposed one.
    pub current: &'a BTreeMap<String, String>,
}

/// The live part: each project's part, or why there is none.
pub fn state(projects: &[String], scope_hint: &str) -> String {
    if projects.is_empty() {
        return html! { p.empty { "no projects: " (scope_hint) } }.into_string();
    }
    projects.concat()
}

/// One project's part: its queue (pending first), its grants, its bottles.
pub fn project(v: &StateView<'_>) -> String {
    let mut queue: Vec<&Found> = v.found.iter().collect();
    // Pending first, then newest first.
    queue.sort_by_key(|f| (f.decision.is_some(), std::cmp::Reverse(f.proposal.created)));
    html! {
        section.project data-project=(v.project) {
        h2 { "project " (v.project) }
        div.queue {
            h3 { "Queue" }
            @if queue.is_empty() {
                p.empty { "no proposals" }
            } @else {
                table {
                    thead { tr { th { "id" } th { "bottle" } th { "asks for" } th { "reason (the agent's words)" } th { "status" } th { "age" } th { "decide" } } }
                    tbody {
                        @for f in &queue { (proposal_row(f, v)) }
                    }
                }
            }
        }
        div.grants {
            h3 { "Grants" }
            @let listed = v.grants.listed();
            @if listed.is_empty() {
                p.empty { "no grants" }
            } @else {
                table {
                    thead { tr { th { "id" } th { "bottle" } th { "grants" } th { "time left" } } }
                    tbody {
                        @for (g, expired) in listed {
                            tr.grant.expired[expired] data-id=(g.id) {
                                td.mono { (g.id) }
                                td { (g.bottle) }
                                td { (g.ask.kind()) " " span.mono { (g.ask.summary()) } }
                                td.left { (g.left(v.now)) }
                            }
                        }
                    }
                }
            }
        }
        div.bottles {
            h3 { "Bottles" }
            @if v.bottles.is_empty() {
                p.empty { "no bottles: run `bottle apply`" }
            }
            @for (name, b) in v.bottles {
                div.bottle data-bottle=(name) {
                    h4 { (name) }
                    p.meta {
                        "provider " (dash(&b.provider)) " · runtime " (dash(&b.runtime))
                        " · image " span.mono { (dash(&b.image)) }
                        " · age " (age(b.created, v.now))
                    }
                    table.nodes {
                        thead { tr { th { "node" } th { "object" } th { "state" } th { "readiness" } } }
                        tbody {
                            @for n in &b.nodes {
                                tr {
                                    td { (n.node) }
                                    td.mono { (n.object) }
                                    td { (n.state) }
                                    @match &n.ready {
                                        Some(r) if r.ready => td.ready { "ready" },
                                        Some(r) => td.notready { "NOT READY: " (r.detail) },
                                        None => td {},
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        }
    }
    .into_string()
}

fn proposal_row(f: &Found, v: &StateView<'_>) -> Markup {
    let status = f.status_at(v.now);
    html! {
        tr.proposal data-id=(f.proposal.id) data-status=(status) {
            td.mono { (f.proposal.id) }
            td { (f.bottle()) }
            td.what {
                @match &f.proposal.ask {
                    Ask::Host { host } => { "host " span.mono.host { (host) } },
                    Ask::Dockerfile { dockerfile } => {
                        details {
                            summary { "Dockerfile (diff against the current one)" }
                            (dockerfile_diff(v.current.get(f.bottle()).map(String::as_str), dockerfile))
                        }
                    },
                }
            }
            td { p.reason { (f.proposal.reason) } }
            td.status {
                (status)
                @if let Some(left) = f.left(v.now).filter(|_| status == "approved") { " (" (left) " left)" }
                @if let Some(r) = f.decision.as_ref().and_then(|d| d.reason.as_ref()) { br; span.why { (r) } }
            }
            td { (age(f.proposal.created, v.now)) }
            td.actions {
                @if f.decision.is_none() {
                    form.approve method="post" action={ "/approve" "?token=" (v.token) } {
                        input type="hidden" name="project" value=(v.project);
                        input type="hidden" name="id" value=(f.proposal.id);
                        input type="text" name="for" placeholder="for (e.g. 2h), empty: until revoked" size="18";
                        button type="submit" { "Approve" }
                    }
                    form.deny method="post" action={ "/deny" "?token=" (v.token) } {
                        input type="hidden" name="project" value=(v.project);
                        input type="hidden" name="id" value=(f.proposal.id);
                        input type="text" name="reason" placeholder="reason" size="18";
                        button type="submit" { "Deny" }
                    }
                } @else if f.decision.as_ref().map(|d| d.verdict) == Some(Verdict::Approved) {
                    form.revoke method="post" action={ "/revoke" "?token=" (v.token) } {
                        input type="hidden" name="project" value=(v.project);
                        input type="hidden" name="id" value=(f.proposal.id);
                        button type="submit" { "Revoke" }
                    }
                }
            }
        }
    }
}

/// A proposed Dockerfile as a line diff against the current one (all added when the
/// current one is not known).
fn dockerfile_diff(current: Option<&str>, proposed: &str) -> Markup {
    let diff = similar::TextDiff::from_lines(current.unwrap_or(""), proposed);
    html! {
        @if current.is_none() { p.note { "(the current Dockerfile is not known: start the console with -f)" } }
        pre.diff {
            @for change in diff.iter_all_changes() {
                @let (class, sign) = match change.tag() {
                    similar::ChangeTag::Delete => ("del", "-"),
                    similar::ChangeTag::Insert => ("add", "+"),
                    similar::ChangeTag::Equal => ("ctx", " "),
                };
                span class=(class) { (sign) " " (change.value().trim_end_matches('\n')) "\n" }
            }
        }
    }
}

/// A project's part (`Some`), or the whole live part, when the engine could not be read.
pub fn error_fragment(project: Option<&str>, why: &str) -> String {
    match project {
        Some(p) => html! {
            section.project data-project=(p) {
                h2 { "project " (p) }
                p.error { "cannot read the project: " (why) }
            }
        },
        None => html! { p.error { "cannot read the engine: " (why) } },
    }
    .into_string()
}

/// A refused action, with the way back.
pub fn refusal(token: &str, why: &str) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head { meta charset="utf-8"; title { "refused" } link rel="stylesheet" href={ "/static/console.css?token=" (token) }; }
            body { p.error { "refused: " (why) } p { a href={ "/?token=" (token) } { "back to the console" } } }
        }
    }
}

fn dash(s: &str) -> &str {
    if s.is_empty() { "-" } else { s }
}

fn age(since: u64, now: u64) -> String {
    if since == 0 {
        return "-".into();
    }
    crate::cli::queue::age(now.saturating_sub(since))
}
