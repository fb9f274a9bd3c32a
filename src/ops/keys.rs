//! `omnistock keys generate`: a new random API key and the configuration entry that names it
//! by its SHA-256, so the plaintext need only reach the client that uses it.

use ring::rand::{SecureRandom, SystemRandom};

use crate::http::auth::{hex, key_digest, SHA256_PREFIX};

/// Prefix of generated keys: recognisable in a leaked log or a secret scanner's rules.
pub const KEY_PREFIX: &str = "osk_";
/// 32 random bytes: 256 bits, beyond any guessing.
const KEY_BYTES: usize = 32;

/// A fresh key from the operating system's CSPRNG.
pub fn generate() -> anyhow::Result<String> {
    let mut bytes = [0u8; KEY_BYTES];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| anyhow::anyhow!("the system random generator failed"))?;
    Ok(format!("{KEY_PREFIX}{}", hex(&bytes)))
}

/// The `OMNISTOCK_API_KEYS` entry for `key`: `sha256:<hex>=<scopes>[@location]`.
pub fn config_entry(key: &str, scopes: &str, location: Option<&str>) -> String {
    let at = location.map(|l| format!("@{l}")).unwrap_or_default();
    format!("{SHA256_PREFIX}{}={scopes}{at}", hex(&key_digest(key)))
}

/// What the command prints: the key (once; it is not stored anywhere) and the entry.
pub fn report(key: &str, entry: &str) -> String {
    format!(
        "key:    {key}\n\
         config: {entry}\n\
         \n\
         Give the key to its client (sent as `Authorization: Bearer <key>`); it is shown only\n\
         now. Add the config entry to OMNISTOCK_API_KEYS (entries are comma-separated).\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::auth::ApiKeys;

    #[test]
    fn a_generated_key_authenticates_through_its_entry() {
        let key = generate().expect("random");
        assert!(key.starts_with(KEY_PREFIX) && key.len() == KEY_PREFIX.len() + 64);
        assert_ne!(key, generate().expect("random"), "fresh every time");
        let entry = config_entry(&key, "read|reserve", Some("TW001"));
        assert!(!entry.contains(&key[KEY_PREFIX.len()..]), "{entry}");
        let keys: ApiKeys = entry.parse().expect("the entry parses");
        let g = keys.grant(&key).expect("known");
        assert_eq!(g.location_id.as_deref(), Some("TW001"));
        assert!(keys.grant(&generate().expect("random")).is_none());
    }
}

/// `omnistock keys ...`.
#[derive(clap::Subcommand)]
pub enum Command {
    /// Print a new random API key and its `sha256:` entry for OMNISTOCK_API_KEYS.
    Generate {
        /// Scopes of the entry: `read|reserve|write|admin` joined by `|`, or `*`.
        #[arg(long, default_value = "read", value_parser = valid_scopes)]
        scopes: String,
        /// Bind the key to one location.
        #[arg(long, value_parser = valid_location)]
        location: Option<String>,
    },
}

fn valid_scopes(s: &str) -> Result<String, String> {
    format!("placeholder-key={s}").parse::<crate::http::auth::ApiKeys>()?;
    Ok(s.to_owned())
}

fn valid_location(s: &str) -> Result<String, String> {
    if crate::domain::ids::is_valid_location_id(s) {
        Ok(s.to_owned())
    } else {
        Err("not a location id ([A-Za-z0-9_-]{1,64})".into())
    }
}

pub fn run(cmd: Command) -> anyhow::Result<()> {
    match cmd {
        Command::Generate { scopes, location } => {
            let key = generate()?;
            let entry = config_entry(&key, &scopes, location.as_deref());
            // The entry must be one the daemon accepts: check it here rather than at its start.
            entry
                .parse::<crate::http::auth::ApiKeys>()
                .map_err(|e| anyhow::anyhow!("not a valid entry: {e}"))?;
            print!("{}", report(&key, &entry));
            Ok(())
        }
    }
}
