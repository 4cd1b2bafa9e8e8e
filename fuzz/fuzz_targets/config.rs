//! JSON config parser: any bytes give a `Result`, never a panic, and a config
//! that parses prints to JSON that parses back to the same config.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let users = reeve::users::UserDb::from_passwd(
        "root:x:0:0::/root:/bin/sh\nencoder:x:1001:1001::/home/e:/bin/sh\n",
    );
    if let Ok(cfg) = reeve::config::Config::from_json(data, &users) {
        let again = reeve::config::Config::from_json(cfg.to_pretty_json().as_bytes(), &users)
            .expect("printed config must parse");
        assert_eq!(cfg, again);
    }
});
