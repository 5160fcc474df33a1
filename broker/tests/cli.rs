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
        .env("SWITCHBOARD_BROKER_LIMITS__WINDOW", "0")
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
        .env("SWITCHBOARD_BROKER_LIMITS__PAGE_SIZE", "lots")
        .output()
        .expect("run broker");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("page_size"), "{err}");
}

/// Runs `cmd` to its end, killing it if it is still running after 20 s (a broker that should have
/// refused to start but did not).
fn output_within_bound(mut cmd: Command) -> std::process::Output {
    let child = cmd
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run broker");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(std::time::Duration::from_secs(20)) {
        Ok(out) => out.expect("wait for broker"),
        Err(_) => {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            panic!("the broker started instead of refusing its settings");
        }
    }
}

/// Runs the broker with `settings` as its settings file and returns (exit code, stderr).
fn refused_with_file(settings: &str) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("typo.toml");
    std::fs::write(&path, settings).expect("write settings");
    let mut cmd = broker();
    cmd.arg("--config")
        .arg(&path)
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path());
    let out = output_within_bound(cmd);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn a_misspelt_key_in_the_settings_file_is_refused_once_naming_key_and_file() {
    for (text, key) in [
        ("[limits]\nwindw = 64\n", "windw"),
        ("[limitz]\nwindow = 64\n", "limitz"),
    ] {
        let (code, err) = refused_with_file(text);
        assert_eq!(code, Some(1), "{err}");
        assert!(err.contains(&format!("unknown field `{key}`")), "{err}");
        assert!(err.contains("typo.toml"), "{err}");
        assert_eq!(err.matches("unknown field").count(), 1, "said twice: {err}");
    }
}

#[test]
fn a_misspelt_log_level_is_refused() {
    let (code, err) = refused_with_file("[log]\nlevel = \"infoo\"\n");
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("log.level"), "{err}");
}

#[test]
fn an_unknown_environment_key_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cmd = broker();
    cmd.env("SWITCHBOARD_BROKER_LIMITS__WINDW", "64")
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path());
    let out = output_within_bound(cmd);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("windw"), "{err}");
}

#[test]
fn absurd_worker_counts_are_refused() {
    let (code, err) = refused_with_file("workers = 100000\n");
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("`workers`"), "{err}");
}

/// The client's documented variables, exported in the broker's shell, leave the broker alone.
#[test]
fn the_clients_environment_does_not_reach_the_broker() {
    use std::io::{BufRead, BufReader};
    use std::sync::mpsc;
    use std::time::Duration;

    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = broker()
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .env("SWITCHBOARD_TLS", "true")
        .env("SWITCHBOARD_SERVER", "127.0.0.1:1")
        .env("SWITCHBOARD_ID", "alice")
        .env("SWITCHBOARD_TOKEN", "secret")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start broker");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let listening = loop {
        match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(line) if line.contains("listening on") => break true,
            Ok(line) => seen.push(line),
            Err(_) => break false,
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(listening, "the broker did not start: {seen:#?}");
}
