//! /etc/passwd as reeve reads it for user filters: any bytes, from text or
//! from a file, give a database, never a panic; malformed lines are skipped
//! and every name the database knows resolves to a uid that has a name.
#![no_main]

use libfuzzer_sys::fuzz_target;
use reeve::users::UserDb;

fn check(db: &UserDb, text: &str) {
    for line in text.lines() {
        if let Some(name) = line.split(':').next() {
            if let Some(uid) = db.uid_of(name) {
                assert!(
                    db.name_of(uid).is_some(),
                    "uid {uid} of {name:?} has no name"
                );
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        check(&UserDb::from_passwd(text), text);
    }
    // The file path: lines that are not UTF-8 are skipped one by one.
    let path = std::env::temp_dir().join(format!("reeve-fuzz-passwd-{}", std::process::id()));
    std::fs::write(&path, data).expect("write the passwd file");
    let db = UserDb::load_from(&path).expect("read the passwd file");
    check(&db, &String::from_utf8_lossy(data));
    std::fs::remove_file(&path).expect("remove the passwd file");
});
