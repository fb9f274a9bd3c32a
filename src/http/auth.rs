//! API keys, their scopes, and the per-key rate limit.

use std::collections::HashMap;
use std::fmt;
use std::num::NonZeroU32;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::Response;
use governor::clock::{Clock, DefaultClock};
use governor::state::keyed::HashMapStateStore;
use governor::{Quota, RateLimiter};

use super::error::ApiError;
use super::stream_token::StreamTokens;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    Read,
    Reserve,
    /// Movements over HTTP (`POST /v1/movements`).
    Write,
    Admin,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Reserve => "reserve",
            Scope::Write => "write",
            Scope::Admin => "admin",
        }
    }
}

/// What one key may do: its scopes and, for a key bound to a location (`@TW001`), the one
/// location whose holds it sees and changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub scopes: Vec<Scope>,
    pub location_id: Option<String>,
}

/// Keys and what each may do. Parsed from `key=scope|scope,key2=*,key3=reserve@TW001`. A key
/// may be given as `sha256:<64 hex digits>` (its SHA-256, as `omnistock keys generate`
/// prints it), so that no plaintext key sits in configuration.
#[derive(Clone, Default)]
pub struct ApiKeys {
    keys: HashMap<String, Grant>,
    hashed: Vec<([u8; 32], Grant)>,
}

impl fmt::Debug for ApiKeys {
    // Keys are secrets: never print them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiKeys({} keys)", self.keys.len() + self.hashed.len())
    }
}

/// The prefix of a key configured by its SHA-256.
pub const SHA256_PREFIX: &str = "sha256:";

/// SHA-256 of a presented key.
pub fn key_digest(key: &str) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, key.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Lower-case hex of a digest (the configured form).
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `sha256:<hex>` → the digest; None when the hex part is not 64 hex digits.
fn parse_digest(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Equality whose time does not depend on where the digests differ.
fn same_digest(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

impl FromStr for ApiKeys {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut keys = HashMap::new();
        let mut hashed: Vec<([u8; 32], Grant)> = Vec::new();
        for entry in s.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (key, scopes) = entry
                .split_once('=')
                .ok_or_else(|| format!("API key entry without `=scopes`: {:?}", redact(entry)))?;
            let key = key.trim();
            let (scopes, location_id) = match scopes.split_once('@') {
                Some((scopes, location)) => {
                    let location = location.trim();
                    if !crate::domain::ids::is_valid_location_id(location) {
                        return Err(format!(
                            "API key {:?} is bound to an invalid location id {location:?}",
                            redact(key)
                        ));
                    }
                    (scopes, Some(location.to_owned()))
                }
                None => (scopes, None),
            };
            let digest = match key.strip_prefix(SHA256_PREFIX) {
                Some(hex) => Some(parse_digest(hex.trim()).ok_or_else(|| {
                    format!(
                        "API key {:?}: `sha256:` must be followed by 64 hex digits",
                        redact(key)
                    )
                })?),
                None => None,
            };
            if digest.is_none() && key.len() < 8 {
                return Err(format!(
                    "API key {:?} is shorter than 8 characters",
                    redact(key)
                ));
            }
            let mut granted = Vec::new();
            for scope in scopes.split('|').map(str::trim) {
                match scope {
                    "*" => {
                        granted.extend([Scope::Read, Scope::Reserve, Scope::Write, Scope::Admin])
                    }
                    "read" => granted.push(Scope::Read),
                    "reserve" => granted.push(Scope::Reserve),
                    "write" => granted.push(Scope::Write),
                    "admin" => granted.push(Scope::Admin),
                    other => {
                        return Err(format!(
                            "unknown scope {other:?} (use read, reserve, write, admin or *)"
                        ))
                    }
                }
            }
            granted.sort();
            granted.dedup();
            let grant = Grant {
                scopes: granted,
                location_id,
            };
            let twice = match digest {
                Some(d) => {
                    let seen = hashed.iter().any(|(h, _)| h == &d);
                    hashed.push((d, grant));
                    seen
                }
                None => keys.insert(key.to_owned(), grant).is_some(),
            };
            if twice {
                return Err(format!("API key {:?} is listed twice", redact(key)));
            }
        }
        Ok(ApiKeys { keys, hashed })
    }
}

fn redact(key: &str) -> String {
    key.chars().take(3).chain("…".chars()).collect()
}

impl ApiKeys {
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty() && self.hashed.is_empty()
    }

    pub fn scopes(&self, key: &str) -> Option<&[Scope]> {
        self.grant(key).map(|g| g.scopes.as_slice())
    }

    /// What `key` may do: a plaintext entry, else an entry of its SHA-256. Every hashed entry
    /// is compared, each in constant time, so the answer's timing tells nothing of which
    /// configured digest came close.
    pub fn grant(&self, key: &str) -> Option<&Grant> {
        if let Some(g) = self.keys.get(key) {
            return Some(g);
        }
        if self.hashed.is_empty() {
            return None;
        }
        let digest = key_digest(key);
        let mut found = None;
        for (h, g) in &self.hashed {
            if same_digest(h, &digest) && found.is_none() {
                found = Some(g);
            }
        }
        found
    }
}

/// The caller, once its key is known: handlers ask it for the scope they need, and whether
/// it may touch a location's holds.
#[derive(Debug, Clone)]
pub struct Caller {
    grant: Grant,
}

impl Caller {
    /// What this caller may do (`GET /v1/whoami`, stream tokens).
    pub fn grant(&self) -> &Grant {
        &self.grant
    }

    pub fn require(&self, scope: Scope) -> Result<(), ApiError> {
        if self.grant.scopes.contains(&scope) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(scope))
        }
    }

    /// The location this key is bound to, if any.
    pub fn location_id(&self) -> Option<&str> {
        self.grant.location_id.as_deref()
    }

    /// Whether this key sees and changes holds at `location_id`: any, unless it is bound.
    pub fn covers(&self, location_id: &str) -> bool {
        self.location_id().is_none_or(|own| own == location_id)
    }

    /// For an action at `location_id` (a new hold): 403 outside a bound key's location.
    pub fn require_location(&self, location_id: &str) -> Result<(), ApiError> {
        match self.location_id() {
            Some(own) if own != location_id => Err(ApiError::OtherLocation(own.to_owned())),
            _ => Ok(()),
        }
    }
}

type KeyedLimiter = RateLimiter<String, HashMapStateStore<String>, DefaultClock>;

/// Authentication state shared by the middleware.
#[derive(Clone)]
pub struct Auth {
    keys: Arc<ApiKeys>,
    limiter: Arc<KeyedLimiter>,
    clock: DefaultClock,
    stream_tokens: StreamTokens,
}

impl Auth {
    pub fn new(keys: ApiKeys, per_second: u32, stream_tokens: StreamTokens) -> Self {
        let rate = NonZeroU32::new(per_second.max(1)).unwrap_or(NonZeroU32::MIN);
        Auth {
            keys: Arc::new(keys),
            limiter: Arc::new(RateLimiter::hashmap(Quota::per_second(rate))),
            clock: DefaultClock::default(),
            stream_tokens,
        }
    }
}

/// The live stream's token (`GET /v1/stream?token=`), for a browser's `EventSource`, which
/// cannot send a header. Accepted on that one route only.
fn stream_token(req: &Request) -> Option<&str> {
    if req.method() != axum::http::Method::GET || req.uri().path() != "/v1/stream" {
        return None;
    }
    req.uri()
        .query()?
        .split('&')
        .find_map(|pair| pair.strip_prefix("token="))
}

/// Middleware for `/v1`: finds the key (`Authorization: Bearer KEY` or `X-Api-Key: KEY`),
/// enforces its rate limit and hands the [`Caller`] to the handlers.
pub async fn authenticate(
    State(auth): State<Auth>,
    mut req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let headers = req.headers();
    let has_key = headers.contains_key(AUTHORIZATION) || headers.contains_key("x-api-key");
    if let Some(token) = stream_token(&req).filter(|_| !has_key) {
        let grant =
            auth.stream_tokens
                .verify(token, chrono::Utc::now())
                .ok_or(ApiError::Unauthorized(
                    "stream token invalid or expired: get a new one from POST /v1/stream/token",
                ))?;
        req.extensions_mut().insert(Caller { grant });
        return Ok(next.run(req).await);
    }
    let key = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        // The scheme is case-insensitive (RFC 9110); the key itself is not.
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, key)| key)
        .or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()))
        .map(str::trim)
        .ok_or(ApiError::Unauthorized(
            "no API key: send `Authorization: Bearer <key>`",
        ))?;
    let grant = auth
        .keys
        .grant(key)
        .ok_or(ApiError::Unauthorized("unknown API key"))?
        .clone();
    if let Err(not_until) = auth.limiter.check_key(&key.to_owned()) {
        let wait = not_until.wait_time_from(auth.clock.now());
        return Err(ApiError::RateLimited(wait.max(Duration::from_secs(1))));
    }
    req.extensions_mut().insert(Caller { grant });
    Ok(next.run(req).await)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_keys_and_scopes() {
        let k: ApiKeys = "checkout-123=read|reserve, ops-key-456=*"
            .parse()
            .expect("valid");
        assert_eq!(
            k.scopes("checkout-123"),
            Some(&[Scope::Read, Scope::Reserve][..])
        );
        assert_eq!(
            k.scopes("ops-key-456"),
            Some(&[Scope::Read, Scope::Reserve, Scope::Write, Scope::Admin][..])
        );
        assert_eq!(k.scopes("nope"), None);
        assert!("".parse::<ApiKeys>().expect("empty is valid").is_empty());
    }

    #[test]
    fn binds_a_key_to_a_location() {
        let k: ApiKeys = "store-7-tablet=read|reserve@TW001, ops-key-456=*"
            .parse()
            .expect("valid");
        let g = k.grant("store-7-tablet").expect("known");
        assert_eq!(g.scopes, [Scope::Read, Scope::Reserve]);
        assert_eq!(g.location_id.as_deref(), Some("TW001"));
        assert_eq!(k.grant("ops-key-456").expect("known").location_id, None);
        let bound = Caller { grant: g.clone() };
        assert!(bound.covers("TW001") && !bound.covers("TW002"));
        assert!(bound.require_location("TW002").is_err());
        assert!("store-7-tablet=read@".parse::<ApiKeys>().is_err());
        assert!("store-7-tablet=read@TW.1".parse::<ApiKeys>().is_err());
    }

    #[test]
    fn a_key_configured_by_its_hash_is_known_by_the_key() {
        let key = "osk_0123456789abcdef";
        let config = format!(
            "{SHA256_PREFIX}{}=read|reserve@TW001",
            hex(&key_digest(key))
        );
        let k: ApiKeys = config.parse().expect("valid");
        let g = k.grant(key).expect("the key itself authenticates");
        assert_eq!(g.scopes, [Scope::Read, Scope::Reserve]);
        assert_eq!(g.location_id.as_deref(), Some("TW001"));
        assert!(k.grant("osk_0123456789abcdeF").is_none());
        // The digest itself is not a key.
        assert!(k.grant(&config[..config.find('=').expect("=")]).is_none());
        assert!(!k.is_empty());
        assert!("sha256:abc=read".parse::<ApiKeys>().is_err());
        assert!(format!("sha256:{}=read", "g".repeat(64))
            .parse::<ApiKeys>()
            .is_err());
        let twice = format!("{config},{config}");
        assert!(twice.parse::<ApiKeys>().is_err());
    }

    #[test]
    fn rejects_bad_entries() {
        assert!("short=read".parse::<ApiKeys>().is_err());
        assert!("longenough".parse::<ApiKeys>().is_err());
        assert!("longenough=writer".parse::<ApiKeys>().is_err());
        assert_eq!(
            "longenough=write"
                .parse::<ApiKeys>()
                .expect("write is a scope")
                .scopes("longenough"),
            Some(&[Scope::Write][..])
        );
        assert!("longenough=read,longenough=admin"
            .parse::<ApiKeys>()
            .is_err());
        assert!(
            !format!("{:?}", "secretkey1=read".parse::<ApiKeys>().expect("ok")).contains("secret")
        );
    }
}
