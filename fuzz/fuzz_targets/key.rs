//! Consumer key parsing and checksum, stored key hashes and key ids: the text a client sends
//! in a credential header, and what config, state files and the admin API name keys by.
#![no_main]

use keygate::auth::key::{self, KeyEnv};
use keygate::auth::{KeyHash, KeyId};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let text = text.as_ref();

    if let Ok(parsed) = key::parse(text) {
        // A key that parses is exactly kg_<env>_<30 base62>_<6 base62>, and its env is the
        // one it spells.
        assert_eq!(parsed.as_str(), text);
        assert_eq!(text.len(), 3 + 5 + 30 + 1 + 6);
        assert!(key::looks_like_key(text));
        let env = match parsed.env {
            KeyEnv::Live => "live",
            KeyEnv::Test => "test",
        };
        assert!(text.starts_with(&format!("kg_{env}_")));
        assert!(text.bytes().all(|b| b == b'_' || b.is_ascii_alphanumeric()));
        // The stored form round-trips and names the same key id.
        let hash = KeyHash::of(text);
        let stored: KeyHash = hash.to_string().parse().expect("hash text parses");
        assert!(stored == hash);
        assert_eq!(stored.key_id(), hash.key_id());
    }

    if let Ok(hash) = text.parse::<KeyHash>() {
        // Upper- or lowercase hex reads; the canonical text is lowercase and reads back equal.
        let canonical = hash.to_string();
        assert_eq!(canonical, text.to_ascii_lowercase());
        assert!(canonical.parse::<KeyHash>().expect("canonical hash parses") == hash);
        let id = hash.key_id().to_string();
        assert_eq!(
            id.parse::<KeyId>()
                .expect("derived key id parses")
                .to_string(),
            id
        );
    }

    if let Ok(id) = text.parse::<KeyId>() {
        // Only the canonical spelling parses, so display gives the input back.
        assert_eq!(id.to_string(), text);
        let yaml = serde_yaml::to_string(&id).expect("key id serializes");
        assert_eq!(
            serde_yaml::from_str::<KeyId>(&yaml).expect("key id yaml"),
            id
        );
    }
});
