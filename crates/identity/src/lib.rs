//! Identity: turning a presented credential into an [`Actor`]. Today that is an API key
//! checked against `[[identities]]` in the config; OIDC tokens and managed keys come next.

use gatehouse_config::{IdentityConfig, IdentityKind};
use gatehouse_core::{Actor, ActorKind};
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
}

impl AuthFailure {
    /// Short machine-readable reason for audit entries.
    pub fn reason(self) -> &'static str {
        match self {
            AuthFailure::UnknownIdentity => "unknown_identity",
            AuthFailure::WrongKey => "wrong_key",
            AuthFailure::NoPassword => "no_password",
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
        Ok(Actor {
            id: identity.name.clone(),
            kind: match identity.kind {
                IdentityKind::Human => ActorKind::Human,
                IdentityKind::Agent => ActorKind::Agent,
                IdentityKind::Service => ActorKind::Service,
            },
            idp: Some("apikey".into()),
            groups: identity.groups.clone(),
        })
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

    #[test]
    fn generated_keys_are_unique_and_hash_to_the_config_format() {
        let (a, b) = (generate_key().unwrap(), generate_key().unwrap());
        assert_ne!(a, b);
        assert!(a.starts_with("gh_") && a.len() == 67);
        let h = hash_key(&a);
        assert!(h.starts_with("sha256:") && h.len() == 71);
    }
}
