//! The CLI's TOML configuration parser. Property: no panic, whatever the text; an accepted
//! text round-trips through serialization.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mcp_oidc_cli::config::Settings;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(settings) = Settings::from_toml(text) {
        let json = serde_json::to_value(&settings).expect("settings serialize");
        let back: Settings = serde_json::from_value(json.clone()).expect("settings deserialize");
        assert_eq!(serde_json::to_value(&back).expect("serialize"), json);
    }
});
