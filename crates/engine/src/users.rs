//! Users and API keys: generating keys, hashing them, resolving a bearer key to a user.
//!
//! Keys are 32 random bytes (`ab_` + base64url); only their SHA-256 is stored. A slow
//! password hash is not needed: the key is high-entropy, so a fast hash cannot be brute
//! forced, and every request pays for the lookup.

use agentbox_store::{ApiKeyRecord, Store, StoreError, UserRecord};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::time::now_ms;

/// How many leading characters of a key identify it (`ab_` plus 8).
pub const KEY_PREFIX_LEN: usize = 11;

/// What `users create` shows once: the only time the key is visible.
#[derive(Debug, Clone, serde::Serialize)]
pub struct NewUserCredentials {
    pub user_id: Uuid,
    pub api_key: String,
    pub webhook_secret: String,
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).expect("the OS random source works");
    b
}

/// A fresh API key.
pub fn generate_api_key() -> String {
    format!("ab_{}", URL_SAFE_NO_PAD.encode(random_bytes::<32>()))
}

/// A fresh Standard Webhooks signing secret.
pub fn generate_webhook_secret() -> String {
    format!("whsec_{}", STANDARD.encode(random_bytes::<24>()))
}

/// The stored form of a key.
pub fn hash_api_key(key: &str) -> String {
    Sha256::digest(key.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// Creates a user with one key and a webhook secret.
pub async fn create_user(store: &dyn Store, name: &str) -> Result<NewUserCredentials, StoreError> {
    let now = now_ms();
    let user = UserRecord {
        id: Uuid::new_v4(),
        name: name.to_owned(),
        webhook_secret: generate_webhook_secret(),
        default_environment_id: None,
        created_at_ms: now,
    };
    let api_key = generate_api_key();
    let key = ApiKeyRecord {
        prefix: api_key[..KEY_PREFIX_LEN].to_owned(),
        hash: hash_api_key(&api_key),
        user_id: user.id,
        created_at_ms: now,
        revoked_at_ms: None,
    };
    store.create_user(&user, &key).await?;
    Ok(NewUserCredentials { user_id: user.id, api_key, webhook_secret: user.webhook_secret })
}

/// The user a bearer key belongs to, if the key is known and not revoked.
pub async fn authenticate(store: &dyn Store, key: &str) -> Result<Option<UserRecord>, StoreError> {
    if !key.starts_with("ab_") || key.len() > 128 {
        return Ok(None);
    }
    store.user_by_key_hash(&hash_api_key(key)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_distinct_and_hash_to_64_hex_characters() {
        let (a, b) = (generate_api_key(), generate_api_key());
        assert_ne!(a, b);
        assert!(a.starts_with("ab_") && a.len() == 46);
        let h = hash_api_key(&a);
        assert_eq!(h.len(), 64);
        assert!(!h.contains(&a[3..]));
        assert!(generate_webhook_secret().starts_with("whsec_"));
    }
}
