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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    Read,
    Reserve,
    Admin,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Reserve => "reserve",
            Scope::Admin => "admin",
        }
    }
}

/// Keys and the scopes each holds. Parsed from `key=scope|scope,key2=*`.
#[derive(Clone, Default)]
pub struct ApiKeys {
    keys: HashMap<String, Vec<Scope>>,
}

impl fmt::Debug for ApiKeys {
    // Keys are secrets: never print them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiKeys({} keys)", self.keys.len())
    }
}

impl FromStr for ApiKeys {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut keys = HashMap::new();
        for entry in s.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (key, scopes) = entry
                .split_once('=')
                .ok_or_else(|| format!("API key entry without `=scopes`: {:?}", redact(entry)))?;
            let key = key.trim();
            if key.len() < 8 {
                return Err(format!(
                    "API key {:?} is shorter than 8 characters",
                    redact(key)
                ));
            }
            let mut granted = Vec::new();
            for scope in scopes.split('|').map(str::trim) {
                match scope {
                    "*" => granted.extend([Scope::Read, Scope::Reserve, Scope::Admin]),
                    "read" => granted.push(Scope::Read),
                    "reserve" => granted.push(Scope::Reserve),
                    "admin" => granted.push(Scope::Admin),
                    other => {
                        return Err(format!(
                            "unknown scope {other:?} (use read, reserve, admin or *)"
                        ))
                    }
                }
            }
            granted.sort();
            granted.dedup();
            if keys.insert(key.to_owned(), granted).is_some() {
                return Err(format!("API key {:?} is listed twice", redact(key)));
            }
        }
        Ok(ApiKeys { keys })
    }
}

fn redact(key: &str) -> String {
    key.chars().take(3).chain("…".chars()).collect()
}

impl ApiKeys {
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn scopes(&self, key: &str) -> Option<&[Scope]> {
        self.keys.get(key).map(Vec::as_slice)
    }
}

/// The caller, once its key is known: handlers ask it for the scope they need.
#[derive(Debug, Clone)]
pub struct Caller {
    scopes: Vec<Scope>,
}

impl Caller {
    pub fn require(&self, scope: Scope) -> Result<(), ApiError> {
        if self.scopes.contains(&scope) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(scope))
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
}

impl Auth {
    pub fn new(keys: ApiKeys, per_second: u32) -> Self {
        let rate = NonZeroU32::new(per_second.max(1)).unwrap_or(NonZeroU32::MIN);
        Auth {
            keys: Arc::new(keys),
            limiter: Arc::new(RateLimiter::hashmap(Quota::per_second(rate))),
            clock: DefaultClock::default(),
        }
    }
}

/// Middleware for `/v1`: finds the key (`Authorization: Bearer KEY` or `X-Api-Key: KEY`),
/// enforces its rate limit and hands the [`Caller`] to the handlers.
pub async fn authenticate(
    State(auth): State<Auth>,
    mut req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let headers = req.headers();
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
    let scopes = auth
        .keys
        .scopes(key)
        .ok_or(ApiError::Unauthorized("unknown API key"))?
        .to_vec();
    if let Err(not_until) = auth.limiter.check_key(&key.to_owned()) {
        let wait = not_until.wait_time_from(auth.clock.now());
        return Err(ApiError::RateLimited(wait.max(Duration::from_secs(1))));
    }
    req.extensions_mut().insert(Caller { scopes });
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
            Some(&[Scope::Read, Scope::Reserve, Scope::Admin][..])
        );
        assert_eq!(k.scopes("nope"), None);
        assert!("".parse::<ApiKeys>().expect("empty is valid").is_empty());
    }

    #[test]
    fn rejects_bad_entries() {
        assert!("short=read".parse::<ApiKeys>().is_err());
        assert!("longenough".parse::<ApiKeys>().is_err());
        assert!("longenough=write".parse::<ApiKeys>().is_err());
        assert!("longenough=read,longenough=admin"
            .parse::<ApiKeys>()
            .is_err());
        assert!(
            !format!("{:?}", "secretkey1=read".parse::<ApiKeys>().expect("ok")).contains("secret")
        );
    }
}
