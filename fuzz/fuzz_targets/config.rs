//! The config file (parsed, validated, and compiled into a registry the way a reload does)
//! and the overrides state file, both from the same YAML text.
#![no_main]

use std::path::Path;

use keygate::auth::{OverrideState, Overrides, Registry};
use keygate::config::{parse_yaml, validate, Config};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let file = Path::new("/etc/keygate/keygate.yaml");
    match parse_yaml::<Config>(file, text) {
        Ok(config) => {
            if validate(file, &config).is_ok() {
                let registry = Registry::from_config(&config);
                assert_eq!(registry.consumers().len(), config.inline_consumers().len());
                let _ = registry.referenced_credentials();
                let _ = keygate::config::restart_only_changes(&config, &config);
            }
        }
        Err(e) => {
            // Errors name the file and never run on without bound.
            let message = e.to_string();
            assert!(
                message.starts_with("/etc/keygate/keygate.yaml: "),
                "{message}"
            );
        }
    }

    if let Ok(state) = serde_yaml::from_str::<OverrideState>(text) {
        // What keygate writes back reads back the same.
        let written = serde_yaml::to_string(&state).expect("state serializes");
        let read: OverrideState = serde_yaml::from_str(&written).expect("written state reads");
        assert_eq!(read, state);
        let overrides = Overrides::compile(&state);
        for id in &state.revoked_keys {
            assert!(overrides.key_revoked(id));
        }
    }
});
