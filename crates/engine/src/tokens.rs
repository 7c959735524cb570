//! Scoped, expiring link tokens for the live view and the CDP endpoint.
//!
//! A token is `<session id>.<scope>.<expiry ms>.<base64url HMAC-SHA256>` signed with a
//! 32-byte server secret kept in the data dir (`token.key`, mode 0600, created once,
//! atomically). Tokens carry no user data and are deterministic for the same claims, so
//! the session object shows a stable URL. A verifier must also check that the session is
//! still live: a token outlives nothing.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use uuid::Uuid;

/// What a token lets its holder do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenScope {
    /// Watch the live view.
    View,
    /// Watch and send input through the live view.
    Control,
    /// Speak CDP to the session's browser.
    Cdp,
}

impl TokenScope {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::View => "view",
            Self::Control => "control",
            Self::Cdp => "cdp",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "view" => Self::View,
            "control" => Self::Control,
            "cdp" => Self::Cdp,
            _ => return None,
        })
    }
}

/// What a valid token says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claims {
    pub session_id: Uuid,
    pub scope: TokenScope,
    pub expires_at_ms: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token is malformed")]
    Malformed,
    #[error("the token's signature does not match")]
    BadSignature,
    #[error("the token has expired")]
    Expired,
}

/// Signs and verifies tokens with the server secret.
pub struct TokenKey([u8; 32]);

impl TokenKey {
    /// Reads the key file, or creates it (0600, written to a temp file then renamed).
    pub fn load_or_create(path: &Path) -> std::io::Result<Self> {
        match std::fs::read(path) {
            Ok(bytes) if bytes.len() == 32 => {
                let mut k = [0u8; 32];
                k.copy_from_slice(&bytes);
                return Ok(Self(k));
            }
            Ok(_) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{} is not a 32-byte key; delete it to make a new one (live links then stop working)", path.display()),
                ));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let mut k = [0u8; 32];
        getrandom::fill(&mut k).map_err(|e| std::io::Error::other(e.to_string()))?;
        let tmp = path.with_extension("tmp");
        let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
        f.write_all(&k)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        Ok(Self(k))
    }

    #[cfg(test)]
    pub(crate) fn from_bytes(k: [u8; 32]) -> Self {
        Self(k)
    }

    fn mac(&self, payload: &str) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(payload.as_bytes());
        mac
    }

    pub fn sign(&self, claims: &Claims) -> String {
        let payload = format!("{}.{}.{}", claims.session_id, claims.scope.as_str(), claims.expires_at_ms);
        let sig = URL_SAFE_NO_PAD.encode(self.mac(&payload).finalize().into_bytes());
        format!("{payload}.{sig}")
    }

    pub fn verify(&self, token: &str, now_ms: i64) -> Result<Claims, TokenError> {
        let (payload, sig) = token.rsplit_once('.').ok_or(TokenError::Malformed)?;
        let sig = URL_SAFE_NO_PAD.decode(sig).map_err(|_| TokenError::Malformed)?;
        // Constant-time comparison.
        self.mac(payload).verify_slice(&sig).map_err(|_| TokenError::BadSignature)?;
        let mut parts = payload.split('.');
        let (Some(sid), Some(scope), Some(exp), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            return Err(TokenError::Malformed);
        };
        let claims = Claims {
            session_id: Uuid::parse_str(sid).map_err(|_| TokenError::Malformed)?,
            scope: TokenScope::parse(scope).ok_or(TokenError::Malformed)?,
            expires_at_ms: exp.parse().map_err(|_| TokenError::Malformed)?,
        };
        if claims.expires_at_ms <= now_ms {
            return Err(TokenError::Expired);
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: i64) -> Claims {
        Claims { session_id: Uuid::new_v4(), scope: TokenScope::Control, expires_at_ms: exp }
    }

    #[test]
    fn a_signed_token_verifies_until_it_expires() {
        let key = TokenKey::from_bytes([7; 32]);
        let c = claims(1_000);
        let t = key.sign(&c);
        assert_eq!(key.verify(&t, 999), Ok(c));
        assert_eq!(key.verify(&t, 1_000), Err(TokenError::Expired));
    }

    #[test]
    fn a_tampered_or_foreign_token_is_refused() {
        let key = TokenKey::from_bytes([7; 32]);
        let t = key.sign(&claims(1_000));
        let upgraded = t.replacen("control", "view", 1);
        assert_eq!(key.verify(&upgraded, 0), Err(TokenError::BadSignature));
        assert_eq!(TokenKey::from_bytes([8; 32]).verify(&t, 0), Err(TokenError::BadSignature));
        assert_eq!(key.verify("garbage", 0), Err(TokenError::Malformed));
    }

    #[test]
    fn the_key_file_is_created_once_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token.key");
        let a = TokenKey::load_or_create(&path).unwrap();
        let b = TokenKey::load_or_create(&path).unwrap();
        assert_eq!(a.0, b.0);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    }
}
