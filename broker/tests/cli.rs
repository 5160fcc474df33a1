//! The `switchboard-broker` binary refuses bad settings with a message naming the key.

use std::process::Command;

fn broker() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_switchboard-broker"));
    // Run where no settings.toml is found, with no stray SWITCHBOARD_* from the caller.
    cmd.current_dir(std::env::temp_dir());
    for (key, _) in std::env::vars() {
        if key.starts_with("SWITCHBOARD_") {
            cmd.env_remove(key);
        }
    }
    cmd
}

#[test]
fn an_invalid_environment_override_names_the_key() {
    let out = broker()
        .env("SWITCHBOARD_LIMITS__WINDOW", "0")
        .output()
        .expect("run broker");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("limits.window"), "{err}");
}

#[test]
fn a_bad_listen_flag_names_the_key() {
    let out = broker()
        .args(["--listen", "not-an-address"])
        .output()
        .expect("run broker");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("`listen`"), "{err}");
}

#[test]
fn a_missing_config_file_is_an_error() {
    let out = broker()
        .args(["--config", "/nonexistent/switchboard.toml"])
        .output()
        .expect("run broker");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/switchboard.toml"));
}

#[test]
fn a_wrongly_typed_value_names_the_key() {
    let out = broker()
        .env("SWITCHBOARD_LIMITS__PAGE_SIZE", "lots")
        .output()
        .expect("run broker");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("page_size"), "{err}");
}
