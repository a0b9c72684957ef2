//! Config loader: a Centrifugo configuration text as `rotor checkconfig` and start-up read
//! it. The first byte picks the format (JSON, YAML or TOML, as the file's extension would);
//! the rest is the file's text, loaded by `config::load_text` (parse, deserialize into
//! `Config` with key paths on errors, unknown and unsupported keys), then validated
//! (`config::validate`), its engines resolved and serialized back (`Config::to_value`).
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use rotor::config;

fuzz_target!(|data: &[u8]| {
    let [format, text @ ..] = data else { return };
    let Ok(text) = std::str::from_utf8(text) else { return };
    let path = match format % 3 {
        0 => Path::new("config.json"),
        1 => Path::new("config.yaml"),
        _ => Path::new("config.toml"),
    };
    let Ok(loaded) = config::load_text(path, text, &[]) else { return };
    let _ = config::validate(&loaded.config);
    let _ = loaded.config.engines();
    let _ = loaded.config.to_value();
});
