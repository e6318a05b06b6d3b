//! Identity: turning a presented credential into an [`Actor`]. Today that is an API key,
//! either configured in `[[identities]]` or managed in the state store (`keys create`);
//! OIDC tokens come next.

pub mod login;
pub mod oidc;
pub mod throttle;

use std::sync::Arc;

use gatehouse_config::{IdentityConfig, IdentityKind};
use gatehouse_core::{Actor, ActorKind};
use gatehouse_store::{ManagedKey, Store};
use sha2::{Digest, Sha256};

/// Why a sign-in failed. Recorded in the ledger; the client only ever hears "authentication
/// failed", so it cannot learn which part was wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthFailure {
    #[error("unknown identity")]
    UnknownIdentity,
    #[error("wrong API key")]
    WrongKey,
    #[error("no password given")]
    NoPassword,
    #[error("unknown API key id")]
    UnknownKey,
    #[error("revoked API key")]
    RevokedKey,
    #[error("expired API key")]
    ExpiredKey,
    /// The state store could not be read: the sign-in is refused, never waved through.
    #[error("key store unavailable")]
    StoreUnavailable,
    #[error("token refused: {0}")]
    Token(oidc::TokenFailure),
    /// A valid token for someone other than the user name the client gave.
    #[error("the token names another user")]
    UserMismatch,
}

impl AuthFailure {
    /// Short machine-readable reason for audit entries.
    pub fn reason(self) -> &'static str {
        match self {
            AuthFailure::UnknownIdentity => "unknown_identity",
            AuthFailure::WrongKey => "wrong_key",
            AuthFailure::NoPassword => "no_password",
            AuthFailure::UnknownKey => "unknown_key",
            AuthFailure::RevokedKey => "revoked_key",
            AuthFailure::ExpiredKey => "expired_key",
            AuthFailure::StoreUnavailable => "store_unavailable",
            AuthFailure::Token(why) => why.reason(),
            AuthFailure::UserMismatch => "user_mismatch",
        }
    }
}

/// The hash stored in the config for an API key: `sha256:<hex>`.
///
/// API keys are 32 random bytes, so a plain SHA-256 cannot be brute-forced and keeps the
/// per-connection check in the microseconds (a password hash would cost milliseconds).
pub fn hash_key(key: &str) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(key.as_bytes())))
}

/// A new random API key: `gh_` and 64 hex characters (32 random bytes).
pub fn generate_key() -> Result<String, String> {
    let mut raw = [0u8; 32];
    getrandom::fill(&mut raw).map_err(|e| format!("no randomness: {e}"))?;
    Ok(format!("gh_{}", hex::encode(raw)))
}

/// Prefix of managed keys: `ghk_<16 hex id>_<64 hex secret>`. The id is public (it is
/// what the ledger and `keys list` show); the secret part is never stored.
const MANAGED_PREFIX: &str = "ghk_";

/// A new managed key: its id and the whole key text (shown once to its owner).
pub fn new_managed_key() -> Result<(String, String), String> {
    let mut raw = [0u8; 40];
    getrandom::fill(&mut raw).map_err(|e| format!("no randomness: {e}"))?;
    let id = hex::encode(&raw[..8]);
    let key = format!("{MANAGED_PREFIX}{id}_{}", hex::encode(&raw[8..]));
    Ok((id, key))
}

/// The id inside a managed key's text, if `key` has the managed-key shape.
pub fn managed_key_id(key: &str) -> Option<&str> {
    let rest = key.strip_prefix(MANAGED_PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    (hex(id, 16) && hex(secret, 64)).then_some(id)
}

/// Decides a sign-in with a managed key: `stored` is the key found under the presented
/// key's id, `now` unix seconds. Pure, so every rule is tested without a database.
///
/// The hash is compared first, so only the holder of the real key ever learns (through the
/// ledger) that it was revoked or expired; a guess with a known id is just a wrong key.
pub fn check_managed(
    stored: &ManagedKey,
    name: &str,
    key: &str,
    now: i64,
) -> Result<Actor, AuthFailure> {
    if !constant_time_eq(hash_key(key).as_bytes(), stored.key_hash.as_bytes()) {
        return Err(AuthFailure::WrongKey);
    }
    if stored.name != name {
        // The key is real but belongs to another identity.
        return Err(AuthFailure::WrongKey);
    }
    if stored.revoked_at.is_some() {
        return Err(AuthFailure::RevokedKey);
    }
    if stored.expires_at.is_some_and(|at| at <= now) {
        return Err(AuthFailure::ExpiredKey);
    }
    Ok(actor_of(&stored.name, stored.kind, &stored.groups))
}

fn actor_of(name: &str, kind: IdentityKind, groups: &[String]) -> Actor {
    Actor {
        id: name.to_string(),
        kind: match kind {
            IdentityKind::Human => ActorKind::Human,
            IdentityKind::Agent => ActorKind::Agent,
            IdentityKind::Service => ActorKind::Service,
        },
        idp: Some("apikey".into()),
        groups: groups.to_vec(),
    }
}

/// Who signed in, and with which key (`config:<name>` for a configured key, the id of a
/// managed one): the ledger records the key id, never the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authenticated {
    pub actor: Actor,
    pub key_id: String,
    /// For a token matched by a claim rule: the claims it matched (which CI job).
    pub matched_claims: Vec<(String, String)>,
}

/// Every way a password can be checked: an OIDC token from a configured issuer, an API
/// key from the state store, or one from `[[identities]]`.
#[derive(Debug, Clone, Default)]
pub struct Authenticator {
    config: ApiKeys,
    store: Option<Store>,
    oidc: Arc<oidc::Oidc>,
}

impl Authenticator {
    pub fn new(config: ApiKeys, store: Option<Store>) -> Self {
        Authenticator {
            config,
            store,
            oidc: Arc::default(),
        }
    }

    /// Also accept tokens from these issuers.
    pub fn with_oidc(mut self, oidc: oidc::Oidc) -> Self {
        self.oidc = Arc::new(oidc);
        self
    }

    /// Checks `key` for identity `name`. A managed key is looked up in the store at every
    /// sign-in, so a revocation takes effect for the next connection.
    pub async fn authenticate(&self, name: &str, key: &str) -> Result<Authenticated, AuthFailure> {
        if !self.oidc.is_empty() && oidc::looks_like_jwt(key) {
            let token = self
                .oidc
                .verify(key, unix_now())
                .await
                .map_err(AuthFailure::Token)?;
            if token.username != name {
                return Err(AuthFailure::UserMismatch);
            }
            return Ok(Authenticated {
                actor: token.actor,
                key_id: format!("oidc:{}:{}", token.issuer, token.token_id),
                matched_claims: token.matched_claims,
            });
        }
        let Some(id) = managed_key_id(key) else {
            let actor = self.config.authenticate(name, key)?;
            let key_id = format!("config:{}", actor.id);
            return Ok(Authenticated {
                actor,
                key_id,
                matched_claims: Vec::new(),
            });
        };
        let Some(store) = &self.store else {
            return Err(AuthFailure::UnknownKey);
        };
        let stored = match store.key(id).await {
            Ok(Some(stored)) => stored,
            Ok(None) => return Err(AuthFailure::UnknownKey),
            Err(e) => {
                tracing::error!(error = %e, "cannot read API keys from the state store");
                return Err(AuthFailure::StoreUnavailable);
            }
        };
        let actor = check_managed(&stored, name, key, unix_now())?;
        Ok(Authenticated {
            actor,
            key_id: stored.id,
            matched_claims: Vec::new(),
        })
    }
}

/// Seconds since the Unix epoch (the shared clock).
pub use gatehouse_core::clock::unix_secs as unix_now;

/// The configured identities, ready for lookups.
#[derive(Debug, Clone, Default)]
pub struct ApiKeys {
    identities: Vec<IdentityConfig>,
}

impl ApiKeys {
    pub fn new(identities: &[IdentityConfig]) -> Self {
        ApiKeys {
            identities: identities.to_vec(),
        }
    }

    /// Checks `key` for identity `name` and returns who it is.
    pub fn authenticate(&self, name: &str, key: &str) -> Result<Actor, AuthFailure> {
        if key.is_empty() {
            return Err(AuthFailure::NoPassword);
        }
        // Hash even for unknown names so both failures take the same time.
        let presented = hash_key(key);
        let Some(identity) = self.identities.iter().find(|i| i.name == name) else {
            return Err(AuthFailure::UnknownIdentity);
        };
        if !constant_time_eq(
            presented.as_bytes(),
            identity.key_hash.to_ascii_lowercase().as_bytes(),
        ) {
            return Err(AuthFailure::WrongKey);
        }
        Ok(actor_of(&identity.name, identity.kind, &identity.groups))
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> ApiKeys {
        ApiKeys::new(&[IdentityConfig {
            name: "alice".into(),
            kind: IdentityKind::Human,
            groups: vec!["dba".into()],
            key_hash: hash_key("gh_right"),
        }])
    }

    #[test]
    fn right_key_gives_the_actor_wrong_ones_fail_with_a_reason() {
        let actor = keys().authenticate("alice", "gh_right").unwrap();
        assert_eq!(actor.id, "alice");
        assert_eq!(actor.kind, ActorKind::Human);
        assert_eq!(actor.groups, vec!["dba".to_string()]);
        assert_eq!(
            keys().authenticate("alice", "gh_wrong"),
            Err(AuthFailure::WrongKey)
        );
        assert_eq!(
            keys().authenticate("bob", "gh_right"),
            Err(AuthFailure::UnknownIdentity)
        );
        assert_eq!(
            keys().authenticate("alice", ""),
            Err(AuthFailure::NoPassword)
        );
    }

    fn stored(key: &str) -> ManagedKey {
        ManagedKey {
            id: managed_key_id(key).unwrap().to_string(),
            name: "agent:reporting".into(),
            kind: IdentityKind::Agent,
            groups: vec!["analysts".into()],
            key_hash: hash_key(key),
            created_at: 1_000,
            expires_at: Some(2_000),
            revoked_at: None,
            revoked_reason: None,
        }
    }

    #[test]
    fn managed_keys_are_checked_for_hash_owner_revocation_and_expiry() {
        let (id, key) = new_managed_key().unwrap();
        assert_eq!(managed_key_id(&key), Some(id.as_str()));
        let s = stored(&key);
        let actor = check_managed(&s, "agent:reporting", &key, 1_999).unwrap();
        assert_eq!(actor.kind, ActorKind::Agent);
        assert_eq!(actor.groups, vec!["analysts".to_string()]);
        let check = |s: &ManagedKey, name: &str, key: &str, now| check_managed(s, name, key, now);
        assert_eq!(
            check(&s, "agent:reporting", &key, 2_000),
            Err(AuthFailure::ExpiredKey)
        );
        assert_eq!(
            check(&s, "someone-else", &key, 1_500),
            Err(AuthFailure::WrongKey)
        );
        let forged = format!("ghk_{id}_{}", "0".repeat(64));
        assert_eq!(
            check(&s, "agent:reporting", &forged, 1_500),
            Err(AuthFailure::WrongKey)
        );
        let revoked = ManagedKey {
            revoked_at: Some(1_200),
            ..s.clone()
        };
        assert_eq!(
            check(&revoked, "agent:reporting", &key, 1_500),
            Err(AuthFailure::RevokedKey)
        );
        // A revoked key presented with the wrong secret is only a wrong key.
        assert_eq!(
            check(&revoked, "agent:reporting", &forged, 1_500),
            Err(AuthFailure::WrongKey)
        );
        let forever = ManagedKey {
            expires_at: None,
            ..s
        };
        assert!(check(&forever, "agent:reporting", &key, i64::MAX).is_ok());
    }

    #[test]
    fn only_the_managed_shape_is_read_as_a_managed_key() {
        let (_, key) = new_managed_key().unwrap();
        assert!(key.starts_with("ghk_") && key.len() == 4 + 16 + 1 + 64);
        for not_managed in [
            "gh_0123",
            "ghk_",
            "ghk_0123456789abcdef",
            "ghk_0123456789abcdef_short",
            "ghk_0123456789abcdeg_0000000000000000000000000000000000000000000000000000000000000000",
        ] {
            assert_eq!(managed_key_id(not_managed), None, "{not_managed}");
        }
    }

    #[tokio::test]
    async fn the_authenticator_uses_config_keys_and_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_in(dir.path()).await.unwrap();
        let (id, key) = new_managed_key().unwrap();
        store
            .insert_key(
                &ManagedKey {
                    expires_at: None,
                    ..stored(&key)
                },
                "test",
            )
            .await
            .unwrap();
        let auth = Authenticator::new(keys(), Some(store.clone()));
        let by_config = auth.authenticate("alice", "gh_right").await.unwrap();
        assert_eq!(by_config.key_id, "config:alice");
        let managed = auth.authenticate("agent:reporting", &key).await.unwrap();
        assert_eq!(managed.key_id, id);
        store
            .revoke_key(&id, None, unix_now(), "test")
            .await
            .unwrap();
        assert_eq!(
            auth.authenticate("agent:reporting", &key).await,
            Err(AuthFailure::RevokedKey),
            "a revocation counts from the next sign-in"
        );
        let (_, unknown) = new_managed_key().unwrap();
        assert_eq!(
            auth.authenticate("agent:reporting", &unknown).await,
            Err(AuthFailure::UnknownKey)
        );
        // A store that cannot be read refuses, it never lets anyone in.
        store.close().await;
        assert_eq!(
            auth.authenticate("agent:reporting", &key).await,
            Err(AuthFailure::StoreUnavailable)
        );
    }

    #[test]
    fn generated_keys_are_unique_and_hash_to_the_config_format() {
        let (a, b) = (generate_key().unwrap(), generate_key().unwrap());
        assert_ne!(a, b);
        assert!(a.starts_with("gh_") && a.len() == 67);
        let h = hash_key(&a);
        assert!(h.starts_with("sha256:") && h.len() == 71);
    }
}
