//! `pipelock.image`: the bottle's firewall policy rendered in the YAML schema of the
//! upstream pipelock project (luckyPipewrench/pipelock, config `version: 1`), for a
//! bottle that runs that project's image instead of `bottle sidecar pipelock`.
//!
//! The mapping, from the same [`Config`] the built-in sidecar reads:
//! - `mode: strict` with `api_allowlist` = `egress.allow` plus route hosts. Upstream's
//!   `*.suffix` also matches the apex `suffix` (bottle's does not).
//! - `ssrf.ip_allowlist` = `egress.allow_cidrs`.
//! - `tls_interception` with the bottle CA (mounted at the same path as for the built-in
//!   sidecar); `passthrough_domains` = `tls_passthrough` routes and the credentialed
//!   routes: upstream pipelock cannot exempt egress's injected credential from its
//!   default DLP patterns on one route, so those routes are not intercepted.
//! - DLP: `request_body_scanning` with headers, the upstream defaults
//!   (`include_defaults`), plus the manifest's `dlp.rules` (gitleaks TOML) as patterns.
//! - `response_scanning` (upstream's default injection patterns) enabled with
//!   `egress.responses` as its action (`block` or `warn`), disabled for `off`.
//! - JSON logs on stdout (`bottle logs NAME --node pipelock`), allowed and blocked.
//!
//! The YAML is written by hand (strings as JSON strings, which YAML reads the same), so
//! the output is stable and its golden file is exact.

use std::fmt::Write as _;

use bottle_contract::pipelock::{Config, Responses};
use bottle_secretscan::RuleSet;

/// Where the rendered file is mounted in the upstream image's container.
pub const MOUNT: &str = "/config";
/// The rendered file inside the config volume.
pub const FILE: &str = "pipelock.yaml";

/// The upstream image's command line: listen where egress expects pipelock.
pub fn command(port: u16) -> Vec<String> {
    [
        "run".to_string(),
        "--listen".into(),
        format!("0.0.0.0:{port}"),
        "--config".into(),
        format!("{MOUNT}/{FILE}"),
    ]
    .to_vec()
}

fn quote(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

fn list(out: &mut String, indent: &str, key: &str, items: &[String]) {
    if items.is_empty() {
        let _ = writeln!(out, "{indent}{key}: []");
        return;
    }
    let _ = writeln!(out, "{indent}{key}:");
    for i in items {
        let _ = writeln!(out, "{indent}  - {}", quote(i));
    }
}

/// The upstream pipelock configuration for `cfg`, with the bottle CA at `ca_cert` and
/// `ca_key` and the proxy on `port`.
pub fn render(cfg: &Config, ca_cert: &str, ca_key: &str, port: u16) -> String {
    let mut out = String::new();
    out.push_str("# pipelock configuration rendered by bottle from bottles.yaml: do not edit.\n");
    out.push_str("version: 1\nmode: strict\nenforce: true\nexplain_blocks: false\n");
    let mut allow: Vec<String> = Vec::new();
    for h in cfg.allow.iter().chain(&cfg.routes) {
        if !allow.contains(h) {
            allow.push(h.clone());
        }
    }
    list(&mut out, "", "api_allowlist", &allow);
    let _ = writeln!(
        out,
        "fetch_proxy:\n  listen: {}",
        quote(&format!("0.0.0.0:{port}"))
    );
    out.push_str("forward_proxy:\n  enabled: true\n  sni_verification: true\n");
    out.push_str("tls_interception:\n  enabled: true\n");
    let _ = writeln!(
        out,
        "  ca_cert: {}\n  ca_key: {}",
        quote(ca_cert),
        quote(ca_key)
    );
    let mut passthrough: Vec<String> = cfg.passthrough.clone();
    for r in cfg.route_headers.iter().filter(|r| r.header.is_some()) {
        if !passthrough.contains(&r.host) {
            passthrough.push(r.host.clone());
        }
    }
    list(&mut out, "  ", "passthrough_domains", &passthrough);
    let dlp = cfg.dlp.enabled;
    let _ = writeln!(
        out,
        "request_body_scanning:\n  enabled: {dlp}\n  action: block\n  scan_headers: {dlp}\n  header_mode: all"
    );
    let _ = writeln!(out, "dlp:\n  include_defaults: {dlp}");
    let custom = match (&cfg.dlp.rules_toml, dlp) {
        (Some(t), true) => RuleSet::from_toml(t).ok(),
        _ => None,
    };
    match custom {
        Some(rules) if !rules.rules().is_empty() => {
            out.push_str("  patterns:\n");
            for r in rules.rules() {
                let _ = writeln!(
                    out,
                    "    - name: {}\n      regex: {}\n      severity: high",
                    quote(&r.id),
                    quote(r.pattern())
                );
            }
        }
        _ => out.push_str("  patterns: []\n"),
    }
    // `egress.responses`: upstream scans responses for injection too (its own patterns).
    let (scan, action) = match cfg.responses {
        Responses::Block => (true, "block"),
        Responses::Warn => (true, "warn"),
        Responses::Off => (false, "warn"),
    };
    let _ = writeln!(
        out,
        "response_scanning:\n  enabled: {scan}\n  action: {action}\n  include_defaults: true"
    );
    out.push_str("ssrf:\n");
    list(&mut out, "  ", "ip_allowlist", &cfg.allow_cidrs);
    out.push_str(
        "logging:\n  format: json\n  output: stdout\n  include_allowed: true\n  include_blocked: true\n",
    );
    out
}

#[cfg(test)]
#[allow(
    clippy::disallowed_methods,
    reason = "a golden file on disk, rewritten on request"
)]
mod tests {
    use super::*;
    use bottle_contract::pipelock::{DlpConfig, RouteHeader};

    /// The rendering of a policy with every feature, against `testdata/`.
    #[test]
    fn rendering_matches_the_golden_file() {
        let cfg = Config {
            allow: vec!["pypi.org".into(), "*.pythonhosted.org".into()],
            routes: vec!["api.anthropic.com".into(), "chatgpt.com".into()],
            allow_cidrs: vec!["10.20.0.0/16".into()],
            dlp: DlpConfig {
                enabled: true,
                rules_toml: Some(
                    "[[rules]]\nid = \"acme-token\"\nregex = '''acme_[a-z0-9]{32}'''\nkeywords = [\"acme_\"]\n"
                        .into(),
                ),
                rules_error: None,
            },
            passthrough: vec!["chatgpt.com".into()],
            route_headers: vec![RouteHeader {
                host: "api.anthropic.com".into(),
                path_prefix: None,
                header: Some("authorization".into()),
                model: true,
            }],
            upstream_ca: None,
            responses: Default::default(),
        };
        let got = render(&cfg, "/etc/bottle/ca/ca.crt", "/etc/bottle/ca/ca.key", 8888);
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/src/nodes/testdata/upstream-pipelock.yaml"
        );
        if std::env::var_os("BOTTLE_UPDATE_GOLDEN").is_some() {
            std::fs::write(path, &got).unwrap();
        }
        let want = std::fs::read_to_string(path).unwrap();
        assert_eq!(
            got, want,
            "rendering changed; BOTTLE_UPDATE_GOLDEN=1 rewrites the file"
        );
        // It is YAML, and says what the policy says.
        let v: serde_json::Value = serde_saphyr::from_str(&got).unwrap();
        assert_eq!(v["mode"], "strict");
        assert_eq!(v["api_allowlist"][1], "*.pythonhosted.org");
        assert_eq!(
            v["tls_interception"]["passthrough_domains"][1],
            "api.anthropic.com"
        );
        assert_eq!(v["dlp"]["patterns"][0]["regex"], "acme_[a-z0-9]{32}");
        assert_eq!(v["ssrf"]["ip_allowlist"][0], "10.20.0.0/16");
    }

    #[test]
    fn dlp_off_turns_scanning_off() {
        let got = render(&Config::default(), "/c", "/k", 8888);
        let v: serde_json::Value = serde_saphyr::from_str(&got).unwrap();
        assert_eq!(v["request_body_scanning"]["enabled"], false);
        assert_eq!(v["dlp"]["include_defaults"], false);
        assert_eq!(v["api_allowlist"], serde_json::json!([]));
    }
}
