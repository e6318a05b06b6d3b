//! OIDC tokens as credentials: the configured issuers, their signing keys (discovered,
//! fetched, cached, refreshed on an unknown key id and on a schedule), and the checks a
//! token must pass before it names anyone.
//!
//! Checks, in order: the header's algorithm is on the issuer's allowlist (never `none`,
//! never HMAC, so a public key can never serve as an HMAC secret); the unverified `iss`
//! picks the issuer; the key id is one of the issuer's keys (and the key's own `alg`, when
//! it says one, is the header's); the signature verifies; `iss`, `aud`, `exp`, `nbf` and
//! `iat` hold within the leeway; the user-name claim is there.

use std::collections::HashMap;
use std::str::FromStr;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use gatehouse_config::IssuerConfig;
use gatehouse_core::Actor;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;

use crate::actor_of;

/// Unknown key ids trigger a fetch of the issuer's keys at most this often, so a stream of
/// tokens with made-up key ids cannot turn the gateway into a load on the provider.
const MIN_REFETCH: Duration = Duration::from_secs(10);
/// How long fetching discovery or keys may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a token was refused; recorded in the ledger, never shown to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenFailure {
    #[error("not a well-formed JWT")]
    Malformed,
    #[error("algorithm not allowed")]
    AlgorithmNotAllowed,
    #[error("issuer not configured")]
    UnknownIssuer,
    #[error("signing key not known to the issuer")]
    UnknownKey,
    #[error("signature does not verify")]
    BadSignature,
    #[error("expired")]
    Expired,
    #[error("not valid yet")]
    NotYetValid,
    #[error("issued in the future")]
    IssuedInFuture,
    #[error("not for this audience")]
    WrongAudience,
    #[error("wrong issuer")]
    WrongIssuer,
    #[error("a required claim is missing")]
    MissingClaim,
    #[error("the issuer's signing keys cannot be fetched")]
    KeysUnavailable,
    #[error("no claim rule of the issuer matches")]
    NoMatchingRule,
    /// The user name is an e-mail claim the issuer does not say it verified.
    #[error("the e-mail address is not verified")]
    UnverifiedEmail,
}

impl TokenFailure {
    pub fn reason(self) -> &'static str {
        match self {
            TokenFailure::Malformed => "token_malformed",
            TokenFailure::UnverifiedEmail => "token_email_unverified",
            TokenFailure::AlgorithmNotAllowed => "token_algorithm_not_allowed",
            TokenFailure::UnknownIssuer => "token_unknown_issuer",
            TokenFailure::UnknownKey => "token_unknown_key",
            TokenFailure::BadSignature => "token_bad_signature",
            TokenFailure::Expired => "token_expired",
            TokenFailure::NotYetValid => "token_not_yet_valid",
            TokenFailure::IssuedInFuture => "token_issued_in_future",
            TokenFailure::WrongAudience => "token_wrong_audience",
            TokenFailure::WrongIssuer => "token_wrong_issuer",
            TokenFailure::MissingClaim => "token_missing_claim",
            TokenFailure::KeysUnavailable => "token_keys_unavailable",
            TokenFailure::NoMatchingRule => "token_no_matching_rule",
        }
    }
}

/// A token that passed every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedToken {
    /// Its principal is named within the issuer: `<issuer>/<user name>`.
    pub actor: Actor,
    /// The user name the token names (its user-name claim, or its claim rule's identity):
    /// what the client must sign in as.
    pub username: String,
    /// The configured issuer's name.
    pub issuer: String,
    /// `jti` when the token has one, else `sub`: what the ledger records to tell tokens
    /// apart (never the token).
    pub token_id: String,
    /// The claims a claim rule matched on (e.g. repository and branch of a CI job), as
    /// evidence of which job signed in.
    pub matched_claims: Vec<(String, String)>,
}

/// Whether a presented password looks like a JWT (three base64url parts, a JSON header).
pub fn looks_like_jwt(text: &str) -> bool {
    text.starts_with("eyJ") && text.split('.').count() == 3
}

/// Every configured issuer.
#[derive(Debug, Default)]
pub struct Oidc {
    issuers: Vec<Issuer>,
}

#[derive(Debug)]
struct Issuer {
    config: IssuerConfig,
    algorithms: Vec<Algorithm>,
    http: reqwest::Client,
    keys: tokio::sync::Mutex<KeyCache>,
}

#[derive(Default)]
struct KeyCache {
    keys: HashMap<String, (DecodingKey, Option<String>)>,
    fetched: Option<Instant>,
    last_attempt: Option<Instant>,
}

impl std::fmt::Debug for KeyCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyCache")
            .field("kids", &self.keys.keys().collect::<Vec<_>>())
            .field("fetched", &self.fetched)
            .finish()
    }
}

impl Oidc {
    /// The issuers of a validated config. Keys are fetched on first use, so a provider that
    /// is down when the gateway starts only refuses its own tokens until it is back.
    pub fn new(issuers: &[IssuerConfig]) -> Result<Oidc, String> {
        let http = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .build()
            .map_err(|e| format!("HTTP client: {e}"))?;
        let issuers = issuers
            .iter()
            .map(|config| {
                let algorithms = config
                    .algorithms
                    .iter()
                    .map(|a| {
                        Algorithm::from_str(a)
                            .map_err(|_| format!("issuers.{}.algorithms: {a:?}", config.name))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(Issuer {
                    config: config.clone(),
                    algorithms,
                    http: http.clone(),
                    keys: tokio::sync::Mutex::new(KeyCache::default()),
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(Oidc { issuers })
    }

    pub fn is_empty(&self) -> bool {
        self.issuers.is_empty()
    }

    /// Checks `token` and maps it to an identity; `now` is unix seconds.
    pub async fn verify(&self, token: &str, now: i64) -> Result<VerifiedToken, TokenFailure> {
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(_), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenFailure::Malformed);
        };
        // The algorithm is read by hand first: `none` and HMAC are refused by name before
        // any library decides what they mean.
        let header = decode_json(header)?;
        let alg = header["alg"].as_str().ok_or(TokenFailure::Malformed)?;
        if alg.eq_ignore_ascii_case("none") || alg.starts_with("HS") {
            return Err(TokenFailure::AlgorithmNotAllowed);
        }
        let alg = Algorithm::from_str(alg).map_err(|_| TokenFailure::AlgorithmNotAllowed)?;
        let claimed_iss = decode_json(payload)?["iss"]
            .as_str()
            .map(str::to_string)
            .ok_or(TokenFailure::MissingClaim)?;
        let issuer = self
            .issuers
            .iter()
            .find(|i| i.config.issuer == claimed_iss)
            .ok_or(TokenFailure::UnknownIssuer)?;
        if !issuer.algorithms.contains(&alg) {
            return Err(TokenFailure::AlgorithmNotAllowed);
        }
        let kid = header["kid"].as_str().ok_or(TokenFailure::UnknownKey)?;
        let (key, key_alg) = issuer.key(kid).await?;
        if key_alg.is_some_and(|a| Algorithm::from_str(&a).ok() != Some(alg)) {
            return Err(TokenFailure::AlgorithmNotAllowed);
        }
        let claims = issuer.check(token, alg, &key, now)?;
        let config = &issuer.config;
        let (username, groups, matched_claims) = named_by(config, &claims)?;
        let username = username.as_str();
        // Named within the issuer: two issuers, or an issuer and a configured key, never
        // share a principal (configured names cannot contain '/').
        let mut actor = actor_of(
            &principal_name(&config.name, username),
            config.kind,
            &groups,
        );
        actor.idp = Some(config.name.clone());
        let token_id = claims["jti"]
            .as_str()
            .or(claims["sub"].as_str())
            .unwrap_or(username)
            .to_string();
        Ok(VerifiedToken {
            actor,
            username: username.to_string(),
            issuer: config.name.clone(),
            token_id,
            matched_claims,
        })
    }
}

/// The user name, groups and matched claims a token's claims give under `config`: the
/// user-name claim (an e-mail only when the issuer verified it) and the groups claim, or
/// the first claim rule that matches.
#[allow(clippy::type_complexity)]
fn named_by(
    config: &IssuerConfig,
    claims: &Value,
) -> Result<(String, Vec<String>, Vec<(String, String)>), TokenFailure> {
    Ok(if config.claim_rules.is_empty() {
        let username = claims[&config.username_claim]
            .as_str()
            .filter(|u| !u.is_empty())
            .ok_or(TokenFailure::MissingClaim)?
            .to_string();
        // Anyone can put any address in their profile: an e-mail names a person only
        // when the issuer says it checked it.
        if config.username_claim == "email" && !email_verified(claims) {
            return Err(TokenFailure::UnverifiedEmail);
        }
        let groups: Vec<String> = match &claims[&config.groups_claim] {
            Value::Array(items) => items
                .iter()
                .filter_map(|g| g.as_str().map(str::to_string))
                .collect(),
            Value::String(one) => vec![one.clone()],
            _ => Vec::new(),
        };
        (username, groups, Vec::new())
    } else {
        let (rule, matched) = config
            .claim_rules
            .iter()
            .find_map(|rule| rule_matches(rule, claims).map(|m| (rule, m)))
            .ok_or(TokenFailure::NoMatchingRule)?;
        (rule.identity.clone(), rule.groups.clone(), matched)
    })
}

/// The principal of `username` as issuer `issuer` names it.
pub fn principal_name(issuer: &str, username: &str) -> String {
    format!("{issuer}/{username}")
}

/// Whether the token says its e-mail address was verified (`email_verified`: true, or
/// "true" as some providers send it).
fn email_verified(claims: &Value) -> bool {
    match &claims["email_verified"] {
        Value::Bool(b) => *b,
        Value::String(s) => s == "true",
        _ => false,
    }
}

/// The claims `rule` matched on, if every claim it lists is a string matching its pattern.
fn rule_matches(
    rule: &gatehouse_config::ClaimRule,
    claims: &Value,
) -> Option<Vec<(String, String)>> {
    rule.claims
        .iter()
        .map(|(name, pattern)| {
            let value = claims[name].as_str()?;
            glob_match(pattern, value).then(|| (name.clone(), value.to_string()))
        })
        .collect()
}

/// Claim values are matched by the shared wildcard match (`*` any run, `?` one character).
pub use gatehouse_core::glob_match;

fn decode_json(part: &str) -> Result<Value, TokenFailure> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part.trim_end_matches('='))
        .map_err(|_| TokenFailure::Malformed)?;
    let value: Value = serde_json::from_slice(&bytes).map_err(|_| TokenFailure::Malformed)?;
    if value.is_object() {
        Ok(value)
    } else {
        Err(TokenFailure::Malformed)
    }
}

impl Issuer {
    /// Signature and registered claims; returns the claims.
    fn check(
        &self,
        token: &str,
        alg: Algorithm,
        key: &DecodingKey,
        now: i64,
    ) -> Result<Value, TokenFailure> {
        let config = &self.config;
        let mut validation = Validation::new(alg);
        validation.leeway = config.leeway.as_secs();
        validation.validate_nbf = true;
        validation.set_issuer(&[&config.issuer]);
        validation.set_audience(&config.audiences);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        let data =
            jsonwebtoken::decode::<Value>(token, key, &validation).map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => TokenFailure::Expired,
                ErrorKind::ImmatureSignature => TokenFailure::NotYetValid,
                ErrorKind::InvalidAudience => TokenFailure::WrongAudience,
                ErrorKind::InvalidIssuer => TokenFailure::WrongIssuer,
                ErrorKind::MissingRequiredClaim(_) => TokenFailure::MissingClaim,
                ErrorKind::InvalidAlgorithm => TokenFailure::AlgorithmNotAllowed,
                ErrorKind::InvalidSignature => TokenFailure::BadSignature,
                _ => TokenFailure::Malformed,
            })?;
        let claims = data.claims;
        // The library leaves `iat` alone; a token from the future means a broken or
        // hostile clock at the issuer.
        if claims["iat"]
            .as_i64()
            .is_some_and(|iat| iat > now + config.leeway.as_secs() as i64)
        {
            return Err(TokenFailure::IssuedInFuture);
        }
        Ok(claims)
    }

    /// The key with id `kid`, fetching the issuer's keys when they are stale or `kid` is
    /// new (at most every [`MIN_REFETCH`]).
    async fn key(&self, kid: &str) -> Result<(DecodingKey, Option<String>), TokenFailure> {
        let mut cache = self.keys.lock().await;
        let now = Instant::now();
        let stale = cache
            .fetched
            .is_none_or(|at| now.duration_since(at) >= self.config.jwks_refresh);
        let unknown = !cache.keys.contains_key(kid);
        let may_fetch = cache
            .last_attempt
            .is_none_or(|at| now.duration_since(at) >= MIN_REFETCH);
        if (stale || unknown) && may_fetch {
            cache.last_attempt = Some(now);
            match self.fetch_keys().await {
                Ok(keys) => {
                    tracing::info!(issuer = %self.config.name, keys = keys.len(), "fetched the issuer's signing keys");
                    cache.keys = keys;
                    cache.fetched = Some(now);
                }
                Err(e) => {
                    tracing::warn!(issuer = %self.config.name, error = %e, "cannot fetch the issuer's signing keys");
                    if cache.fetched.is_none() {
                        return Err(TokenFailure::KeysUnavailable);
                    }
                }
            }
        }
        cache.keys.get(kid).cloned().ok_or(TokenFailure::UnknownKey)
    }

    /// Discovery, then the key set it names.
    async fn fetch_keys(&self) -> Result<HashMap<String, (DecodingKey, Option<String>)>, String> {
        let issuer = self.config.issuer.trim_end_matches('/');
        let url = format!("{issuer}/.well-known/openid-configuration");
        let discovery: Value = self.get_json(&url).await?;
        // OpenID Connect Discovery §4.3: the document must name the issuer it was fetched for.
        if discovery["issuer"].as_str() != Some(self.config.issuer.as_str()) {
            return Err(format!(
                "{url} names issuer {}, not {}",
                discovery["issuer"], self.config.issuer
            ));
        }
        let jwks_uri = discovery["jwks_uri"]
            .as_str()
            .ok_or_else(|| format!("{url} has no jwks_uri"))?;
        let set: JwkSet = serde_json::from_value(self.get_json(jwks_uri).await?)
            .map_err(|e| format!("{jwks_uri}: not a JWK set: {e}"))?;
        let mut keys = HashMap::new();
        for jwk in &set.keys {
            let Some(kid) = jwk.common.key_id.clone() else {
                continue;
            };
            match DecodingKey::from_jwk(jwk) {
                Ok(key) => {
                    let alg = jwk.common.key_algorithm.map(|a| a.to_string());
                    keys.insert(kid, (key, alg));
                }
                Err(e) => {
                    tracing::warn!(issuer = %self.config.name, kid, error = %e, "skipping a key the gateway cannot use")
                }
            }
        }
        Ok(keys)
    }

    async fn get_json(&self, url: &str) -> Result<Value, String> {
        crate::login::get_json(&self.http, url).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_config::IdentityKind;

    fn b64(v: &Value) -> String {
        URL_SAFE_NO_PAD.encode(v.to_string())
    }

    fn issuer() -> IssuerConfig {
        IssuerConfig {
            name: "test".into(),
            issuer: "http://127.0.0.1:9".into(),
            audiences: vec!["gatehouse".into()],
            algorithms: vec!["RS256".into()],
            leeway: Duration::from_secs(60),
            username_claim: "sub".into(),
            groups_claim: "groups".into(),
            kind: IdentityKind::Service,
            jwks_refresh: Duration::from_secs(3600),
            claim_rules: Vec::new(),
        }
    }

    async fn refused(token: &str) -> TokenFailure {
        let oidc = Oidc::new(&[issuer()]).unwrap();
        oidc.verify(token, 1_000).await.unwrap_err()
    }

    #[tokio::test]
    async fn refusals_before_any_key_is_needed() {
        let claims = serde_json::json!({"iss": "http://127.0.0.1:9", "sub": "ci", "aud": "gatehouse", "exp": 2_000});
        let token =
            |header: Value, claims: &Value| format!("{}.{}.c2ln", b64(&header), b64(claims));
        assert_eq!(refused("not-a-token").await, TokenFailure::Malformed);
        assert_eq!(refused("eyJ.eyJ.x").await, TokenFailure::Malformed);
        for alg in ["none", "None", "HS256", "HS512"] {
            assert_eq!(
                refused(&token(serde_json::json!({"alg": alg, "kid": "k"}), &claims)).await,
                TokenFailure::AlgorithmNotAllowed,
                "{alg}"
            );
        }
        // Allowed in general, but not by this issuer.
        assert_eq!(
            refused(&token(
                serde_json::json!({"alg": "ES256", "kid": "k"}),
                &claims
            ))
            .await,
            TokenFailure::AlgorithmNotAllowed
        );
        let elsewhere = serde_json::json!({"iss": "https://other.example", "sub": "ci"});
        assert_eq!(
            refused(&token(
                serde_json::json!({"alg": "RS256", "kid": "k"}),
                &elsewhere
            ))
            .await,
            TokenFailure::UnknownIssuer
        );
        assert_eq!(
            refused(&token(serde_json::json!({"alg": "RS256"}), &claims)).await,
            TokenFailure::UnknownKey
        );
        // Port 9 (discard) is closed here: no keys can be fetched, so nothing verifies.
        assert_eq!(
            refused(&token(
                serde_json::json!({"alg": "RS256", "kid": "k"}),
                &claims
            ))
            .await,
            TokenFailure::KeysUnavailable
        );
        assert!(looks_like_jwt(&token(
            serde_json::json!({"alg": "RS256"}),
            &claims
        )));
        assert!(!looks_like_jwt("gh_0123"));
    }

    #[test]
    fn claim_patterns_match_whole_values() {
        assert!(glob_match("refs/heads/main", "refs/heads/main"));
        assert!(!glob_match("refs/heads/main", "refs/heads/main2"));
        assert!(glob_match("refs/heads/*", "refs/heads/feature/x"));
        assert!(!glob_match("refs/heads/*", "refs/tags/v1"));
        assert!(glob_match("acme/*-api", "acme/payments-api"));
        assert!(!glob_match("acme/*-api", "acme/payments-api-old"));
        assert!(glob_match("*", ""));
        assert!(glob_match("a*b*c", "abc") && glob_match("a*b*c", "a-b-b-c"));
        assert!(!glob_match("a*b*c", "acb"));
        let rule = gatehouse_config::ClaimRule {
            claims: [("repository", "acme/api"), ("ref", "refs/heads/*")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            identity: "ci:api".into(),
            groups: vec![],
        };
        let job = serde_json::json!({"repository": "acme/api", "ref": "refs/heads/main"});
        assert_eq!(
            rule_matches(&rule, &job),
            Some(vec![
                ("ref".to_string(), "refs/heads/main".to_string()),
                ("repository".to_string(), "acme/api".to_string())
            ])
        );
        let fork = serde_json::json!({"repository": "mallory/api", "ref": "refs/heads/main"});
        assert_eq!(rule_matches(&rule, &fork), None);
        let missing = serde_json::json!({"repository": "acme/api"});
        assert_eq!(rule_matches(&rule, &missing), None);
        let not_a_string = serde_json::json!({"repository": "acme/api", "ref": 7});
        assert_eq!(rule_matches(&rule, &not_a_string), None);
    }

    #[test]
    fn identities_are_named_within_their_issuer_and_emails_must_be_verified() {
        let mut config = issuer();
        let (name, _, _) = named_by(&config, &serde_json::json!({"sub": "alice"})).unwrap();
        assert_eq!(name, "alice");
        assert_eq!(principal_name("okta", &name), "okta/alice");
        assert_ne!(
            principal_name("okta", "alice"),
            principal_name("azure", "alice")
        );

        config.username_claim = "email".into();
        let email = |verified: Value| {
            named_by(
                &config,
                &serde_json::json!({"sub": "1", "email": "a@example.com", "email_verified": verified}),
            )
        };
        assert_eq!(email(Value::Bool(true)).unwrap().0, "a@example.com");
        assert_eq!(
            email(Value::String("true".into())).unwrap().0,
            "a@example.com"
        );
        for unverified in [Value::Bool(false), Value::Null, Value::String("yes".into())] {
            assert_eq!(
                email(unverified.clone()).unwrap_err(),
                TokenFailure::UnverifiedEmail,
                "{unverified}"
            );
        }
        assert_eq!(
            named_by(&config, &serde_json::json!({"sub": "1"})).unwrap_err(),
            TokenFailure::MissingClaim
        );
    }
}
