//! Samples for every built-in rule, chunk-boundary cases and the streaming property.
//! Secret-shaped strings are assembled at run time so this file holds none verbatim.

use super::*;
use crate::test_support::rnd;
use proptest::prelude::*;

pub(crate) const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
pub(crate) const UPPER32: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
pub(crate) const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
pub(crate) const URLSAFE: &[u8] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-";
pub(crate) const DIGITS: &[u8] = b"0123456789";
pub(crate) const HEX: &[u8] = b"0123456789abcdef";
const LETTERS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const BECH32_UPPER: &[u8] = b"QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L";

/// (rule id, text that must be found, texts that must not be found by that rule).
pub(crate) fn samples() -> Vec<(&'static str, String, Vec<String>)> {
    let pem_body = rnd(9, 64, B64);
    vec![
        (
            "aws-access-key-id",
            format!("aws_access_key_id = AKIA{}", rnd(1, 16, UPPER32)),
            vec![
                "AKIAIOSFODNN7EXAMPLE".into(),
                "aws_access_key_id = akiaiosfodnn7example".into(),
                format!("AKIA{}", "X".repeat(16)),
                format!("id = AKIA{}", rnd(1, 12, UPPER32)),
                "Trip to ASIA and more".into(),
            ],
        ),
        (
            "aws-secret-access-key",
            format!("AWS_SECRET_ACCESS_KEY=\"{}\"", rnd(2, 40, B64)),
            vec![
                "AWS_SECRET_ACCESS_KEY=\"${AWS_SECRET_ACCESS_KEY}\"".into(),
                format!("aws_secret_access_key = {}", "a".repeat(40)),
            ],
        ),
        (
            "github-pat",
            format!("token: ghp_{}", rnd(3, 36, ALNUM)),
            vec![
                format!("token: ghp_{}", "x".repeat(36)),
                format!("ghp_{}", rnd(3, 20, ALNUM)),
            ],
        ),
        (
            "github-oauth",
            format!("gho_{}", rnd(4, 36, ALNUM)),
            vec![format!("gho_{}", rnd(4, 35, ALNUM))],
        ),
        (
            "github-app-token",
            format!("GH_TOKEN=ghs_{}", rnd(5, 36, ALNUM)),
            vec![
                format!("ghs_{}_suffix", rnd(5, 30, ALNUM)),
                format!("ghu_{}", "0".repeat(36)),
            ],
        ),
        (
            "github-refresh-token",
            format!("ghr_{}", rnd(6, 76, ALNUM)),
            vec!["ghr_tooShort123".into()],
        ),
        (
            "github-fine-grained-pat",
            format!("github_pat_{}_{}", rnd(7, 22, ALNUM), rnd(8, 59, ALNUM)),
            vec![format!("github_pat_{}", rnd(7, 40, ALNUM))],
        ),
        (
            "gitlab-pat",
            format!("GITLAB_TOKEN=glpat-{}", rnd(10, 20, URLSAFE)),
            vec!["glpat-short".into(), format!("glpat-{}", "x".repeat(20))],
        ),
        (
            "gitlab-token",
            format!("CI_DEPLOY=gldt-{}", rnd(40, 20, URLSAFE)),
            vec!["gldt-short".into(), "glrt-".to_string() + &"0".repeat(20)],
        ),
        (
            "slack-token",
            format!(
                "xoxb-{}-{}-{}",
                rnd(11, 12, DIGITS),
                rnd(12, 13, DIGITS),
                rnd(13, 24, ALNUM)
            ),
            vec![
                "xoxb-not-a-token".into(),
                format!("xoxb-{}", rnd(11, 12, DIGITS)),
                format!("xoxb-123456789012-1234567890123-{}", "x".repeat(24)),
            ],
        ),
        (
            "slack-app-token",
            format!(
                "xapp-1-A{}-{}-{}",
                rnd(41, 10, UPPER32),
                rnd(42, 13, DIGITS),
                rnd(43, 64, HEX)
            ),
            vec!["xapp-1-A1-2-3".into()],
        ),
        (
            "slack-webhook-url",
            format!(
                "https://hooks.slack.com/services/T{}/B{}/{}",
                rnd(14, 8, UPPER32),
                rnd(15, 8, UPPER32),
                rnd(16, 24, ALNUM)
            ),
            vec!["see https://hooks.slack.com/services/ for docs".into()],
        ),
        (
            "stripe-live-key",
            format!("STRIPE_KEY=sk_live_{}", rnd(17, 24, ALNUM)),
            vec![
                format!("STRIPE_PUBLISHABLE_KEY=pk_live_{}", rnd(17, 24, ALNUM)),
                "sk_live_short".into(),
                format!("sk_live_{}", "0".repeat(24)),
            ],
        ),
        (
            "stripe-test-key",
            format!("Authorization: Bearer rk_test_{}", rnd(44, 99, ALNUM)),
            vec![
                format!("pk_test_{}", rnd(44, 99, ALNUM)),
                "sk_test_xxxxxxxxxxxxxxxxxxxxxxxxxxxx".into(),
            ],
        ),
        (
            "stripe-webhook-secret",
            format!("STRIPE_WEBHOOK_SECRET=whsec_{}", rnd(45, 32, ALNUM)),
            vec!["whsec_...".into()],
        ),
        (
            "sendgrid-api-key",
            format!("SENDGRID_API_KEY=SG.{}.{}", rnd(46, 22, URLSAFE), rnd(47, 43, URLSAFE)),
            vec!["msg.send(SG.config)".into(), format!("SG.{}", rnd(46, 22, URLSAFE))],
        ),
        (
            "openai-api-key",
            format!("sk-{}T3BlbkFJ{}", rnd(18, 20, ALNUM), rnd(19, 20, ALNUM)),
            vec![format!("sk-{}", rnd(18, 48, ALNUM))],
        ),
        (
            "openai-project-key",
            format!("OPENAI_API_KEY=sk-proj-{}", rnd(20, 120, URLSAFE)),
            vec!["sk-proj-abc".into(), format!("sk-proj-{}", "a".repeat(60))],
        ),
        (
            "anthropic-api-key",
            format!("x-api-key: sk-ant-api03-{}AA", rnd(21, 93, URLSAFE)),
            vec![
                "sk-ant-api03-...".into(),
                format!("sk-ant-{}", rnd(21, 40, ALNUM)),
            ],
        ),
        (
            "gcp-api-key",
            format!("key=AIza{}&q=1", rnd(22, 35, URLSAFE)),
            vec![format!("AIza{}", rnd(22, 20, URLSAFE))],
        ),
        (
            "google-oauth-client-secret",
            format!("\"client_secret\": \"GOCSPX-{}\"", rnd(48, 28, URLSAFE)),
            vec!["GOCSPX-short".into()],
        ),
        (
            "huggingface-token",
            format!("HF_TOKEN=hf_{}", rnd(49, 34, LETTERS)),
            vec![
                "self.hf_modelnameforcausallmwithvaluehead = 1".into(),
                format!("hf_{}", rnd(49, 20, LETTERS)),
            ],
        ),
        (
            "pypi-upload-token",
            format!("password = pypi-AgEIcHlwaS5vcmc{}", rnd(50, 150, URLSAFE)),
            vec!["pypi-AgEIcHlwaS5vcmc".into(), format!("pypi-{}", rnd(50, 150, URLSAFE))],
        ),
        (
            "vault-token",
            format!("VAULT_TOKEN=hvs.{}", rnd(51, 95, URLSAFE)),
            vec!["hvs.short".into(), format!("s.{}", rnd(51, 24, ALNUM))],
        ),
        (
            "digitalocean-token",
            format!("DO_TOKEN=dop_v1_{}", rnd(52, 64, HEX)),
            vec![format!("dop_v1_{}", rnd(52, 40, HEX))],
        ),
        (
            "databricks-token",
            format!("DATABRICKS_TOKEN=dapi{}", rnd(53, 32, HEX)),
            vec!["dapi_version = 2".into(), format!("dapi{}", rnd(53, 20, HEX))],
        ),
        (
            "shopify-token",
            format!("X-Shopify-Access-Token: shpat_{}", rnd(54, 32, HEX)),
            vec![format!("shpat_{}", rnd(54, 16, HEX))],
        ),
        (
            "linear-api-key",
            format!("LINEAR_API_KEY=lin_api_{}", rnd(55, 40, ALNUM)),
            vec!["lin_api_key".into()],
        ),
        (
            "postman-api-key",
            format!("x-api-key: PMAK-{}-{}", rnd(56, 24, HEX), rnd(57, 34, HEX)),
            vec![format!("PMAK-{}", rnd(56, 24, HEX))],
        ),
        (
            "grafana-token",
            format!("GRAFANA_TOKEN=glsa_{}_{}", rnd(58, 32, ALNUM), rnd(59, 8, HEX)),
            vec!["glc_short".into()],
        ),
        (
            "age-secret-key",
            format!("AGE-SECRET-KEY-1{}", rnd(60, 58, BECH32_UPPER)),
            vec!["AGE-SECRET-KEY-1".into()],
        ),
        (
            "telegram-bot-token",
            format!("bot{}:AA{}", rnd(61, 10, DIGITS), rnd(62, 33, URLSAFE)),
            vec!["time 12:AA".into()],
        ),
        (
            "azure-storage-key",
            format!(
                "DefaultEndpointsProtocol=https;AccountName=x;AccountKey={}==;",
                rnd(63, 86, B64)
            ),
            vec!["AccountKey=;".into()],
        ),
        (
            "private-key",
            format!("-----BEGIN RSA PRIVATE KEY-----\n{pem_body}\n{pem_body}\n"),
            vec![
                "the header -----BEGIN RSA PRIVATE KEY----- alone, in docs".into(),
                "-----BEGIN PRIVATE KEY-----\n...\n-----END PRIVATE KEY-----".into(),
                format!("-----BEGIN CERTIFICATE-----\n{pem_body}\n"),
                format!("-----BEGIN PUBLIC KEY-----\n{pem_body}\n"),
            ],
        ),
        (
            "jwt",
            format!(
                "Authorization: Bearer eyJ{}.eyJ{}.{}",
                rnd(23, 30, URLSAFE),
                rnd(24, 60, URLSAFE),
                rnd(25, 43, URLSAFE)
            ),
            vec!["eyJhbGciOiJIUzI1NiJ9 alone".into()],
        ),
        (
            "npm-access-token",
            format!(
                "//registry.npmjs.org/:_authToken=npm_{}",
                rnd(26, 36, ALNUM)
            ),
            vec![
                format!("npm_{}", rnd(26, 20, ALNUM)),
                "npm_config_cache".into(),
            ],
        ),
        (
            "ethereum-private-key",
            format!("PRIVATE_KEY=0x{}", rnd(64, 64, HEX)),
            vec![
                // A transaction hash: 64 hex digits, no private-key name.
                format!("{{\"hash\": \"0x{}\"}}", rnd(64, 64, HEX)),
                // Above the group order.
                format!("private_key = \"{}\"", "f".repeat(60) + "ffff"),
            ],
        ),
        (
            "card-number",
            format!("card=\"{}\"", crate::tests_dlp::pan("51", 16, 65)),
            vec![
                format!("card={}", crate::tests_dlp::bad_luhn(&crate::tests_dlp::pan("51", 16, 65))),
                format!("order {}", crate::tests_dlp::pan("9", 16, 66)),
                format!("id: 1{}", rnd(65, 18, DIGITS)),
            ],
        ),
        (
            "iban",
            format!("IBAN: {}", crate::tests_dlp::iban("DE", &rnd(66, 18, DIGITS))),
            vec![
                crate::tests_dlp::iban("DE", &rnd(66, 18, DIGITS)).replacen("DE", "DX", 1),
                format!("SHA: DE12{}", rnd(66, 18, DIGITS)),
            ],
        ),
        (
            "bitcoin-wif-key",
            format!("wif {}", crate::tests_dlp::wif(67, true)),
            vec![crate::tests_dlp::corrupt(&crate::tests_dlp::wif(67, true))],
        ),
        (
            "bitcoin-address",
            format!("send to {}", crate::tests_dlp::p2pkh(68)),
            vec![
                crate::tests_dlp::corrupt(&crate::tests_dlp::p2pkh(68)),
                format!("1{}", rnd(68, 33, ALNUM)),
            ],
        ),
        (
            "bip39-seed-phrase",
            format!("my wallet words: {}", crate::tests_dlp::mnemonic(69, 16)),
            vec![
                "abandon ability able about above absent absorb abstract absurd abuse access accident.".into(),
                "please check that every value here looks right before sending these results along".into(),
            ],
        ),
        (
            "generic-api-key",
            format!("api_key = \"{}\"", rnd(27, 32, ALNUM)),
            vec![
                "api_key = process.env.OPENAI_API_KEY".into(),
                "api_key = \"your_api_key_here_please\"".into(),
                "api_key: aaaaaaaaaaaaaaaaaaaaaaaa".into(),
                "let api_key = get_api_key_from_config();".into(),
                "client_secret = config.client_secret_value".into(),
            ],
        ),
    ]
}

fn ids(findings: &[Finding]) -> Vec<&str> {
    findings.iter().map(|f| f.rule_id.as_str()).collect()
}

#[test]
fn every_builtin_rule_compiles_and_has_samples() {
    let rules = RuleSet::builtin();
    let samples = samples();
    for r in rules.rules() {
        assert!(
            samples
                .iter()
                .any(|(id, _, neg)| *id == r.id && !neg.is_empty()),
            "rule {} has no positive and negative samples",
            r.id
        );
    }
    assert_eq!(rules.rules().len(), samples.len());
}

#[test]
fn positive_samples_are_found_with_their_rule() {
    let rules = RuleSet::builtin();
    for (id, text, _) in samples() {
        let f = rules.scan(text.as_bytes());
        assert!(ids(&f).contains(&id), "{id} not found in its sample: {f:?}");
        for x in &f {
            let secret = &text[x.offset as usize..][..x.len];
            assert!(!x.hash.contains(secret));
            assert!(!format!("{x}").contains(secret) && !format!("{x:?}").contains(secret));
            assert!(x.offset as usize + x.len <= text.len());
        }
    }
}

#[test]
fn negative_samples_are_not_found_by_their_rule() {
    let rules = RuleSet::builtin();
    for (id, _, negs) in samples() {
        for n in negs {
            let f = rules.scan(n.as_bytes());
            assert!(!ids(&f).contains(&id), "{id} fired on {n:?}: {f:?}");
        }
    }
}

#[test]
fn findings_point_at_the_secret() {
    let rules = RuleSet::builtin();
    let secret = format!("ghp_{}", rnd(3, 36, ALNUM));
    let text = format!("line one\nexport GITHUB_TOKEN={secret}\nmore\n");
    let f = rules.scan(text.as_bytes());
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(&text[f[0].offset as usize..][..f[0].len], secret);
    assert_eq!(f[0].rule_id, "github-pat");
    assert!(!format!("{}", f[0]).contains(&secret[4..]));
}

#[test]
fn a_secret_split_across_chunks_is_found() {
    let rules = RuleSet::builtin();
    let secret = format!("sk-ant-api03-{}AA", rnd(21, 93, URLSAFE));
    let text = format!(
        "{}\nkey: {secret}\n{}",
        "x".repeat(10_000),
        "y".repeat(10_000)
    );
    let whole = rules.scan(text.as_bytes());
    assert_eq!(ids(&whole), ["anthropic-api-key"]);
    let at = text.find(&secret).unwrap();
    // Split inside the keyword, right after it, inside the secret, one byte at a time.
    for cut in [at + 3, at + 7, at + 20, at + secret.len() - 1] {
        let mut s = StreamScanner::new(&rules);
        let mut got = s.push(&text.as_bytes()[..cut]);
        got.extend(s.push(&text.as_bytes()[cut..]));
        got.extend(s.finish());
        assert_eq!(got, whole, "cut at {cut}");
    }
    let mut s = StreamScanner::new(&rules);
    let mut got = Vec::new();
    for b in text.as_bytes() {
        got.extend(s.push(std::slice::from_ref(b)));
    }
    got.extend(s.finish());
    assert_eq!(got, whole);
}

#[test]
fn memory_stays_bounded_and_safe_offset_trails_the_input() {
    let rules = RuleSet::builtin();
    let mut s = StreamScanner::new(&rules);
    let line = b"let api_key = config.value; // token handling\n";
    for _ in 0..20_000 {
        assert!(s.push(line).is_empty());
        assert!(s.buf.len() <= BACK + FORWARD + 64 + line.len() * (LINES_AFTER + 1));
        assert!(s.safe_offset() <= s.position());
    }
    assert!(s.safe_offset() + (BACK as u64) + 4096 >= s.position());
    assert!(s.finish().is_empty());
    assert_eq!(s.safe_offset(), s.position());
}

#[test]
fn no_finding_touches_bytes_declared_safe() {
    let rules = RuleSet::builtin();
    let secret = format!("ghp_{}", rnd(3, 36, ALNUM));
    let text = format!("{}{secret} tail\n", "a ".repeat(3000));
    let at = text.find(&secret).unwrap() as u64;
    let mut s = StreamScanner::new(&rules);
    for chunk in text.as_bytes().chunks(7) {
        let before = s.safe_offset();
        let f = s.push(chunk);
        if !f.is_empty() {
            assert!(before <= at, "bytes of the secret were declared safe");
        }
    }
}

#[test]
fn gitleaks_toml_features() {
    let toml = r#"
        title = "custom"
        [allowlist]
        regexes = ['''^CANARY''']
        [[rules]]
        id = "acme"
        description = "Acme key"
        regex = '''acme_(?:live)_([a-z0-9]{12})'''
        keywords = ["acme_"]
        tags = ["x"]
        [[rules.allowlists]]
        stopwords = ["ab0000001234"]
        [[rules]]
        id = "other"
        regex = '''\bZZ[0-9]{6}\b'''
        keywords = ["zz"]
        entropy = 2.5
        [[rules.allowlists]]
        condition = "AND"
        regexTarget = "line"
        regexes = ['''test''']
        paths = ['''.*''']
    "#;
    let rules = RuleSet::from_toml(toml).unwrap();
    let f = rules.scan(b"x acme_live_ab12cd34ef56 y");
    assert_eq!(ids(&f), ["acme"]);
    assert_eq!(f[0].len, 12, "secretGroup defaults to the first group");
    // A stopword is a whole secret, never a substring of one.
    assert!(rules.scan(b"acme_live_ab0000001234").is_empty());
    assert_eq!(ids(&rules.scan(b"acme_live_ab0000001235")), ["acme"]);
    // Entropy of 11111111 is 0: below the threshold.
    assert!(rules.scan(b"ZZ111111").is_empty());
    // An AND allowlist with paths never applies to a stream.
    assert_eq!(ids(&rules.scan(b"test ZZ193847")), ["other"]);
    for (bad, what) in [
        (
            "[[rules]]\nid='a'\nregex='('\nkeywords=['a']",
            "does not compile",
        ),
        ("[[rules]]\nid='a'\nregex='a'", "no keywords"),
        ("[[rules]]\nid='a'\npath='x'\nkeywords=['a']", "no regex"),
        (
            "[[rules]]\nid='a'\nregex='a'\nkeywords=['a']\nsecretGroup=2",
            "secretGroup",
        ),
        (
            "[[rules]]\nid='a'\nregex='a'\nkeywords=['a']\nkeyword=['a']",
            "unknown field",
        ),
        ("title='t'", "no rules"),
    ] {
        let e = RuleSet::from_toml(bad).unwrap_err();
        // The message and its causes, each once (the message does not repeat its source).
        let e = bottle_contract::ErrorChain(&e).to_string();
        assert!(e.contains(what), "{bad}: {e}");
    }
}

#[test]
fn entropy_is_shannon() {
    assert_eq!(shannon_entropy(b""), 0.0);
    assert_eq!(shannon_entropy(b"aaaa"), 0.0);
    assert!((shannon_entropy(b"abcd") - 2.0).abs() < 1e-9);
}

fn corpus() -> String {
    let mut s = String::new();
    for (i, (_, pos, neg)) in samples().into_iter().enumerate() {
        s.push_str(&format!("fn f{i}() {{\n    let v = \"{pos}\";\n"));
        for n in neg {
            s.push_str(&n);
            s.push('\n');
        }
        s.push_str("}\n");
    }
    s
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn streaming_equals_whole_buffer(cuts in proptest::collection::vec(0usize..4000, 0..40)) {
        let rules = RuleSet::builtin();
        let text = corpus();
        let bytes = text.as_bytes();
        let whole = rules.scan(bytes);
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c * bytes.len() / 4000).collect();
        cuts.sort();
        let mut s = StreamScanner::new(&rules);
        let mut got = Vec::new();
        let mut prev = 0;
        for c in cuts.into_iter().chain([bytes.len()]) {
            got.extend(s.push(&bytes[prev..c]));
            prev = c;
        }
        got.extend(s.finish());
        got.sort();
        prop_assert_eq!(got, whole);
    }
}

#[test]
fn corpus_recall_and_false_positives() {
    let rules = RuleSet::builtin();
    let f = rules.scan(corpus().as_bytes());
    let samples = samples();
    for (id, _, _) in &samples {
        assert!(ids(&f).contains(id), "{id} missing in corpus scan");
    }
    // generic-api-key also names a few specific keys assigned to a key-like variable;
    // every finding is at a planted secret, and each secret is found once per rule.
    let offsets: std::collections::BTreeSet<u64> = f.iter().map(|x| x.offset).collect();
    assert_eq!(
        offsets.len(),
        samples.len(),
        "one secret per positive sample: {f:?}"
    );
    // Beyond one finding per secret, only generic-api-key (a vendor key assigned to an
    // *_API_KEY variable is both).
    let specific = f.iter().filter(|x| x.rule_id != "generic-api-key").count();
    assert_eq!(specific + 1, samples.len(), "{f:?}");
}
