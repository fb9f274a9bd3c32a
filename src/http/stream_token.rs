//! Live-stream tokens: a browser's `EventSource` cannot send an `Authorization` header, and an
//! API key must never ride in a URL (proxy logs, browser history). A page trades its key for a
//! short-lived token (`POST /v1/stream/token`) that opens `GET /v1/stream?token=` and nothing
//! else. The token is signed (HMAC-SHA256), so any daemon sharing the secret accepts it without
//! shared state; it carries only what the stream needs: its expiry and the key's location.

use chrono::{DateTime, TimeZone, Utc};
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};

use super::auth::{Grant, Scope};

/// How long a token may be used to open a stream. An open stream is not cut when its token
/// expires; a page that reconnects later fetches a new one.
pub const TOKEN_TTL_SECONDS: i64 = 300;
/// Shortest secret accepted from the configuration.
pub const MIN_SECRET_LEN: usize = 32;
const VERSION: &str = "s1";
/// Marks a key bound to no location: not a character a location id may hold.
const ANY_LOCATION: &str = "~";

#[derive(Clone)]
pub struct StreamTokens {
    key: hmac::Key,
}

impl std::fmt::Debug for StreamTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StreamTokens(..)")
    }
}

impl StreamTokens {
    /// From the configured secret, or a random one for this process (single-node).
    pub fn new(secret: Option<&str>) -> Result<Self, String> {
        let bytes = match secret {
            Some(s) if s.len() >= MIN_SECRET_LEN => s.as_bytes().to_vec(),
            Some(_) => {
                return Err(format!(
                    "OMNISTOCK_STREAM_SECRET must be at least {MIN_SECRET_LEN} characters"
                ))
            }
            None => {
                let mut b = vec![0u8; 32];
                SystemRandom::new()
                    .fill(&mut b)
                    .map_err(|_| "no system randomness for the stream secret".to_owned())?;
                b
            }
        };
        Ok(StreamTokens {
            key: hmac::Key::new(hmac::HMAC_SHA256, &bytes),
        })
    }

    /// A token for a caller with `grant`, valid until the returned time.
    pub fn issue(&self, grant: &Grant, now: DateTime<Utc>) -> (String, DateTime<Utc>) {
        let expires = now.timestamp().saturating_add(TOKEN_TTL_SECONDS);
        let location = grant.location_id.as_deref().unwrap_or(ANY_LOCATION);
        let payload = format!("{VERSION}.{expires}.{location}");
        let tag = hmac::sign(&self.key, payload.as_bytes());
        let token = format!("{payload}.{}", hex(tag.as_ref()));
        let expires_at = Utc.timestamp_opt(expires, 0).single().unwrap_or(now);
        (token, expires_at)
    }

    /// What a valid, unexpired token grants: reading the stream, at the key's location.
    pub fn verify(&self, token: &str, now: DateTime<Utc>) -> Option<Grant> {
        let (payload, tag) = token.rsplit_once('.')?;
        let tag = unhex(tag)?;
        hmac::verify(&self.key, payload.as_bytes(), &tag).ok()?;
        let mut parts = payload.split('.');
        let (version, expires, location) = (parts.next()?, parts.next()?, parts.next()?);
        if version != VERSION || parts.next().is_some() {
            return None;
        }
        let expires: i64 = expires.parse().ok()?;
        if now.timestamp() > expires {
            return None;
        }
        Some(Grant {
            scopes: vec![Scope::Read],
            location_id: (location != ANY_LOCATION).then(|| location.to_owned()),
        })
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 || !s.is_ascii() {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    fn grant(location: Option<&str>) -> Grant {
        Grant {
            scopes: vec![Scope::Read, Scope::Reserve],
            location_id: location.map(str::to_owned),
        }
    }

    #[test]
    fn a_token_opens_the_stream_until_it_expires() {
        let t = StreamTokens::new(None).expect("random secret");
        let now = Utc::now();
        let (token, expires_at) = t.issue(&grant(Some("TW001")), now);
        let lasts = (expires_at - now).num_seconds();
        assert!(
            (TOKEN_TTL_SECONDS - 1..=TOKEN_TTL_SECONDS).contains(&lasts),
            "{lasts}"
        );
        let g = t.verify(&token, now).expect("valid");
        assert_eq!(
            g.scopes,
            [Scope::Read],
            "a token grants reading, nothing else"
        );
        assert_eq!(g.location_id.as_deref(), Some("TW001"));
        assert!(t
            .verify(&token, now + Duration::seconds(TOKEN_TTL_SECONDS + 1))
            .is_none());
        let (any, _) = t.issue(&grant(None), now);
        assert_eq!(t.verify(&any, now).expect("valid").location_id, None);
    }

    #[test]
    fn a_changed_or_foreign_token_is_refused() {
        let t = StreamTokens::new(Some(&"s".repeat(32))).expect("secret");
        let now = Utc::now();
        let (token, _) = t.issue(&grant(Some("TW001")), now);
        // Another location, a later expiry, a cut signature, another secret.
        assert!(t.verify(&token.replace("TW001", "TW002"), now).is_none());
        let (_, rest) = token.split_once('.').expect("dots");
        let (_, rest) = rest.split_once('.').expect("dots");
        assert!(t.verify(&format!("s1.99999999999.{rest}"), now).is_none());
        assert!(t.verify(&token[..token.len() - 2], now).is_none());
        let other = StreamTokens::new(Some(&"o".repeat(32))).expect("secret");
        assert!(other.verify(&token, now).is_none());
        for junk in ["", ".", "s1..", "s1.1.~.zz", "é.é", "s1.1.~.ab.cd"] {
            assert!(t.verify(junk, now).is_none(), "{junk:?}");
        }
        assert!(StreamTokens::new(Some("short")).is_err());
    }
}
