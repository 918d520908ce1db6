//! Codex on the host's ChatGPT login (`agents.<name>.host_login: true`): the one place
//! that knows Codex's `auth.json`, both the host's (read at load, see
//! `manifest/validate.rs`) and the stand-in the agent gets (written into its home volume
//! by `nodes::agent`).
//!
//! The agent never holds a real token. Codex decodes its `id_token` without checking the
//! signature (it reads the e-mail, the plan and the account from the claims), so the
//! agent's file carries an unsigned token with those claims only, placeholder access and
//! refresh tokens, and a `last_refresh` far in the future, so Codex never refreshes by
//! itself (it refreshes when `last_refresh` is older than eight days, or after a 401).
//! Egress replaces the bearer on the ChatGPT backend's Codex path
//! ([`HOST`] + [`PATH_PREFIX`]) with the host's access token, read at every manifest
//! load. Nothing refreshes the host's token but the host's own Codex: OpenAI rotates
//! refresh tokens, so a refresh made anywhere else would log the host's Codex out.

use std::path::PathBuf;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

use crate::Secret;

/// The ChatGPT backend's host, which Codex calls on a ChatGPT login.
pub const HOST: &str = "chatgpt.com";
/// The path egress injects the token on: Codex's model API (`/responses`, `/models`).
/// Nothing else of the backend (conversations, cloud tasks under `/backend-api/wham`) is
/// routed, so the real token opens nothing but Codex's model.
pub const PATH_PREFIX: &str = "/backend-api/codex";
/// The agent's copy, relative to its home.
pub const AGENT_FILE: &str = ".codex/auth.json";
/// What the agent holds instead of the access and refresh tokens.
pub const PLACEHOLDER: &str = "bottle-placeholder";
/// `last_refresh` in the agent's file: Codex refreshes nothing dated after
/// eight days ago.
const NEVER_STALE: &str = "2999-01-01T00:00:00Z";
/// The claims object of an OpenAI id token that Codex reads.
const AUTH_CLAIMS: &str = "https://api.openai.com/auth";

/// The host's ChatGPT login, as read from its `auth.json`. Its `Debug` shows no token
/// (a [`Secret`]'s).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CodexLogin {
    /// Where it was read from (absolute).
    pub path: PathBuf,
    /// The access token: egress sends it as the bearer; never given to the agent.
    pub access_token: Secret,
    /// The ChatGPT account (workspace) id: not a credential; Codex sends it itself as
    /// `ChatGPT-Account-Id`.
    pub account_id: String,
    /// The claims Codex shows: e-mail, plan, user id (not credentials).
    pub email: Option<String>,
    pub plan: Option<String>,
    pub user_id: Option<String>,
}

/// Why a host `auth.json` is not a usable ChatGPT login.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoginError {
    #[error("it is not JSON: {0}")]
    Json(String),
    #[error(
        "it holds an API key, not a ChatGPT login: give the bottle an egress route with `roles: [openai-base-url]` instead"
    )]
    ApiKey,
    #[error("it has no `tokens` (log in on the host with `codex login`)")]
    NoTokens,
    #[error("`tokens.{0}` is missing or not a string")]
    Missing(&'static str),
    #[error(
        "`tokens.access_token` cannot be sent as a header (empty, or spaces or control characters)"
    )]
    BadToken,
    #[error("`tokens.id_token` is not a JWT whose claims Codex can read")]
    IdToken,
    #[error("neither `tokens.account_id` nor the id token names a ChatGPT account")]
    NoAccount,
}

/// Read a host `auth.json`. The error never quotes a token.
pub fn parse(contents: &[u8]) -> Result<CodexLogin, LoginError> {
    let root: Value =
        serde_json::from_slice(contents).map_err(|e| LoginError::Json(e.to_string()))?;
    let api_key = root
        .get("OPENAI_API_KEY")
        .and_then(Value::as_str)
        .is_some_and(|k| !k.is_empty());
    let tokens = match root.get("tokens") {
        Some(t) if t.is_object() => t,
        _ if api_key => return Err(LoginError::ApiKey),
        _ => return Err(LoginError::NoTokens),
    };
    let string = |key: &'static str| {
        tokens
            .get(key)
            .and_then(Value::as_str)
            .ok_or(LoginError::Missing(key))
    };
    let access = string("access_token")?;
    let header_safe = !access.is_empty() && access.bytes().all(|b| b.is_ascii_graphic());
    if !header_safe {
        return Err(LoginError::BadToken);
    }
    let claims = id_claims(string("id_token")?).ok_or(LoginError::IdToken)?;
    let auth = claims.get(AUTH_CLAIMS);
    let claim = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_string);
    let account_id = tokens
        .get("account_id")
        .and_then(Value::as_str)
        .filter(|a| !a.is_empty())
        .map(str::to_string)
        .or_else(|| claim(auth.and_then(|a| a.get("chatgpt_account_id"))))
        .ok_or(LoginError::NoAccount)?;
    Ok(CodexLogin {
        path: PathBuf::new(),
        access_token: Secret::new(access),
        account_id,
        email: claim(claims.get("email")),
        plan: claim(auth.and_then(|a| a.get("chatgpt_plan_type"))),
        user_id: claim(auth.and_then(|a| a.get("chatgpt_user_id").or_else(|| a.get("user_id")))),
    })
}

/// The claims of a JWT, decoded without any check of its signature (as Codex does).
fn id_claims(jwt: &str) -> Option<Value> {
    let mut parts = jwt.split('.');
    let (_, payload, _) = (parts.next()?, parts.next()?, parts.next()?);
    let bytes = URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    serde_json::from_slice::<Value>(&bytes)
        .ok()
        .filter(Value::is_object)
}

/// A JWT of `header`, `claims` and `signature`, each part base64url-encoded.
fn jwt(header: &Value, claims: &Value, signature: &str) -> String {
    let [header, claims] = [header, claims].map(|v| URL_SAFE_NO_PAD.encode(v.to_string()));
    format!("{header}.{claims}.{}", URL_SAFE_NO_PAD.encode(signature))
}

/// An unsigned JWT (`alg: none`, a placeholder signature) holding `claims`.
fn unsigned_jwt(claims: &Value) -> String {
    jwt(&json!({"alg": "none", "typ": "JWT"}), claims, PLACEHOLDER)
}

impl CodexLogin {
    /// The agent's `auth.json`: the claims Codex reads, no real token, never stale. A
    /// function of the login's identity only, so a token refreshed on the host changes
    /// egress's token file and not the agent's home.
    pub fn agent_auth_json(&self) -> String {
        let mut auth = serde_json::Map::new();
        auth.insert("chatgpt_account_id".into(), json!(self.account_id));
        if let Some(plan) = &self.plan {
            auth.insert("chatgpt_plan_type".into(), json!(plan));
        }
        if let Some(user) = &self.user_id {
            auth.insert("chatgpt_user_id".into(), json!(user));
        }
        let mut claims = serde_json::Map::new();
        if let Some(email) = &self.email {
            claims.insert("email".into(), json!(email));
        }
        claims.insert(AUTH_CLAIMS.into(), Value::Object(auth));
        let claims = Value::Object(claims);
        // A far `exp` too, for a Codex that reads expiry from the access token.
        let access = unsigned_jwt(&json!({"exp": 32_503_680_000_u64, "placeholder": true}));
        let file = json!({
            "OPENAI_API_KEY": null,
            "tokens": {
                "id_token": unsigned_jwt(&claims),
                "access_token": access,
                "refresh_token": PLACEHOLDER,
                "account_id": self.account_id,
            },
            "last_refresh": NEVER_STALE,
        });
        serde_json::to_string_pretty(&file).unwrap_or_default()
    }
}

/// A host `auth.json` holding `access` and an id token with these claims (tests).
#[cfg(any(test, feature = "test-util"))]
pub fn host_auth_json(access: &str, refresh: &str, account: &str, email: &str) -> String {
    let claims = json!({
        "email": email,
        "exp": 1_900_000_000_u64,
        AUTH_CLAIMS: {"chatgpt_account_id": account, "chatgpt_plan_type": "pro", "chatgpt_user_id": "user-1"},
    });
    // A signed token's shape: the signature is random-looking bytes.
    let id_token = jwt(
        &json!({"alg": "RS256", "typ": "JWT"}),
        &claims,
        "real-signature-bytes-0123456789",
    );
    json!({
        "OPENAI_API_KEY": null,
        "tokens": {
            "id_token": id_token,
            "access_token": access,
            "refresh_token": refresh,
            "account_id": account,
        },
        "last_refresh": "2026-11-30T10:00:00Z",
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ACCESS: &str = "eyJhbGciOi.real-access-token.sig";
    const REFRESH: &str = "rt_real-refresh-token";

    #[test]
    fn a_host_login_is_read_and_its_token_kept_secret() {
        let text = host_auth_json(ACCESS, REFRESH, "acct-42", "dev@example.com");
        let login = parse(text.as_bytes()).expect("parses");
        assert_eq!(login.access_token.expose(), ACCESS);
        assert_eq!(login.account_id, "acct-42");
        assert_eq!(login.email.as_deref(), Some("dev@example.com"));
        assert_eq!(login.plan.as_deref(), Some("pro"));
        assert_eq!(login.user_id.as_deref(), Some("user-1"));
        assert!(!format!("{login:?}").contains(ACCESS));
    }

    #[test]
    fn the_agents_file_has_the_claims_and_no_token() {
        let text = host_auth_json(ACCESS, REFRESH, "acct-42", "dev@example.com");
        let login = parse(text.as_bytes()).expect("parses");
        let agent = login.agent_auth_json();
        for secret in [ACCESS, REFRESH, "real-signature"] {
            assert!(!agent.contains(secret), "{secret} in {agent}");
        }
        let v: Value = serde_json::from_str(&agent).expect("json");
        let tokens = &v["tokens"];
        assert_eq!(tokens["refresh_token"], PLACEHOLDER);
        assert_eq!(tokens["account_id"], "acct-42");
        assert_eq!(v["last_refresh"], NEVER_STALE);
        // Codex reads the same claims from the stand-in as from the real token.
        let claims = id_claims(tokens["id_token"].as_str().unwrap()).expect("claims");
        assert_eq!(claims["email"], "dev@example.com");
        assert_eq!(claims[AUTH_CLAIMS]["chatgpt_account_id"], "acct-42");
        assert_eq!(claims[AUTH_CLAIMS]["chatgpt_plan_type"], "pro");
        assert!(claims.get("exp").is_none());
        // The stand-in reads back as a login of the same account, with no real token.
        let again = parse(agent.as_bytes()).expect("the agent's file parses");
        assert_eq!(again.account_id, login.account_id);
        assert_ne!(again.access_token, login.access_token);
    }

    #[test]
    fn a_refreshed_host_token_leaves_the_agents_file_alone() {
        let a = parse(host_auth_json(ACCESS, REFRESH, "acct", "e@x").as_bytes()).unwrap();
        let b = parse(host_auth_json("eyJ.new.token", "rt_new", "acct", "e@x").as_bytes()).unwrap();
        assert_ne!(a.access_token, b.access_token);
        assert_eq!(a.agent_auth_json(), b.agent_auth_json());
    }

    #[test]
    fn what_is_no_chatgpt_login_says_why() {
        let cases: [(&str, LoginError); 5] = [
            ("{", LoginError::Json(String::new())),
            (r#"{"OPENAI_API_KEY": "sk-x"}"#, LoginError::ApiKey),
            (r#"{"OPENAI_API_KEY": null}"#, LoginError::NoTokens),
            (
                r#"{"tokens": {"id_token": "a.e30.c"}}"#,
                LoginError::Missing("access_token"),
            ),
            (
                r#"{"tokens": {"id_token": "a.e30.c", "access_token": "x y"}}"#,
                LoginError::BadToken,
            ),
        ];
        for (text, want) in cases {
            let got = parse(text.as_bytes()).expect_err(text);
            match want {
                LoginError::Json(_) => assert!(matches!(got, LoginError::Json(_)), "{got:?}"),
                w => assert_eq!(got, w, "{text}"),
            }
        }
        let no_account = r#"{"tokens": {"id_token": "a.e30.c", "access_token": "tok"}}"#;
        assert_eq!(parse(no_account.as_bytes()), Err(LoginError::NoAccount));
        let bad_jwt = r#"{"tokens": {"id_token": "nope", "access_token": "tok"}}"#;
        assert_eq!(parse(bad_jwt.as_bytes()), Err(LoginError::IdToken));
    }
}
