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
    // Brokers of parallel tests must not meet on the default admin port.
    cmd.env("SWITCHBOARD_BROKER_ADMIN__LISTEN", "127.0.0.1:0");
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

/// A broker started from `cmd`, once it says it is listening; killed when dropped.
struct Listening(std::process::Child);

impl Listening {
    fn start(mut cmd: Command) -> Listening {
        use std::io::{BufRead, BufReader};
        use std::sync::mpsc;
        use std::time::Duration;

        let mut child = cmd
            .args(["--listen", "127.0.0.1:0"])
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
        let child = Listening(child);
        let mut seen = Vec::new();
        loop {
            match rx.recv_timeout(Duration::from_secs(20)) {
                Ok(line) if line.contains("listening on") => return child,
                Ok(line) => seen.push(line),
                Err(_) => panic!("the broker did not start: {seen:#?}"),
            }
        }
    }
}

impl Drop for Listening {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The client's documented variables, exported in the broker's shell, leave the broker alone.
#[test]
fn the_clients_environment_does_not_reach_the_broker() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cmd = broker();
    cmd.arg("--data-dir")
        .arg(dir.path())
        .env("SWITCHBOARD_TLS", "true")
        .env("SWITCHBOARD_SERVER", "127.0.0.1:1")
        .env("SWITCHBOARD_ID", "alice")
        .env("SWITCHBOARD_TOKEN", "secret");
    let _broker = Listening::start(cmd);
}

/// Two brokers on one data directory would number from the same high-water mark and delete each
/// other's entries: the second is refused, and told which process holds the directory.
#[test]
fn a_second_broker_on_the_same_data_directory_is_refused_naming_the_first() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cmd = broker();
    cmd.arg("--data-dir").arg(dir.path());
    let first = Listening::start(cmd);
    let mut second = broker();
    second
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path());
    let out = output_within_bound(second);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("in use by another broker"), "{err}");
    assert!(err.contains(&format!("pid {}", first.0.id())), "{err}");
    drop(first);
    // Once the first is gone (killed: the kernel drops its lock), the directory is free again.
    let mut again = broker();
    again.arg("--data-dir").arg(dir.path());
    let _third = Listening::start(again);
}

/// An admin port another process holds refuses the start with one line naming the key, and no
/// panic: every listener is bound before any actor starts (a Router started and then dropped with
/// the runtime used to panic in its `started`).
#[test]
fn an_admin_port_in_use_is_refused_naming_the_key_without_a_panic() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a port");
    let addr = taken.local_addr().expect("its address");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cmd = broker();
    cmd.env("SWITCHBOARD_BROKER_ADMIN__LISTEN", addr.to_string())
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path());
    let out = output_within_bound(cmd);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("admin.listen") && err.contains(&addr.to_string()),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

/// `passwd list` and `passwd remove` on a file that is not there (a typo in `--file`) say so and exit
/// 1, rather than listing nothing and succeeding.
#[test]
fn passwd_on_a_missing_file_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("typo.toml");
    for args in [vec!["passwd", "list"], vec!["passwd", "remove"]] {
        let mut cmd = broker();
        cmd.args(&args).arg("--file").arg(&missing);
        if args[1] == "remove" {
            cmd.arg("alice");
        }
        let out = output_within_bound(cmd);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains("typo.toml does not exist"), "{args:?}: {err}");
    }
    assert!(!missing.exists(), "nothing was created");
}

/// Runs `switchboard-broker passwd ARGS --file FILE` with `stdin`, bounded; (exit code, stdout,
/// stderr).
fn passwd(file: &std::path::Path, args: &[&str], stdin: &str) -> (Option<i32>, String, String) {
    use std::io::Write;
    let mut child = broker()
        .arg("passwd")
        .args(args)
        .arg("--file")
        .arg(file)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run passwd");
    let mut input = child.stdin.take().expect("stdin");
    input.write_all(stdin.as_bytes()).expect("token");
    drop(input);
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(std::time::Duration::from_secs(20)) {
        Ok(out) => out.expect("wait for passwd"),
        Err(_) => {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            panic!("passwd {args:?} did not finish");
        }
    };
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    (out.status.code(), text(&out.stdout), text(&out.stderr))
}

/// An operator's hand-edited file: `passwd add`, `set` and `remove` change one client's entry and
/// keep every comment and line of the others.
#[test]
fn passwd_keeps_a_hand_edited_file_and_sets_rules() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("credentials.toml");
    let (code, _, err) = passwd(&file, &["add", "bob"], "b-token\n");
    assert_eq!(code, Some(0), "{err}");
    let bob = std::fs::read_to_string(&file).expect("read");
    let hand_written = format!("# Ask ops before adding a client.\n\n# bob is billing\n{bob}");
    std::fs::write(&file, &hand_written).expect("write");

    let (code, _, err) = passwd(&file, &["add", "alice", "--network", "10.0.0.0/8"], "a\n");
    assert_eq!(code, Some(0), "{err}");
    let (code, _, err) = passwd(&file, &["set", "alice", "--may-send-to", "bob*"], "");
    assert_eq!(code, Some(0), "{err}");
    let (code, listed, err) = passwd(&file, &["list"], "");
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(listed, "alice networks=10.0.0.0/8 may_send_to=bob*\nbob\n");
    let text = std::fs::read_to_string(&file).expect("read");
    assert!(text.starts_with(&hand_written), "{text}");

    let (code, _, err) = passwd(&file, &["set", "alice", "--any-network", "--anyone"], "");
    assert_eq!(code, Some(0), "{err}");
    let (_, listed, _) = passwd(&file, &["list"], "");
    assert_eq!(listed, "alice\nbob\n");
    let (code, _, err) = passwd(&file, &["remove", "alice"], "");
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(std::fs::read_to_string(&file).expect("read"), hand_written);
}

/// A rule the broker would refuse, or a `set` on a client that is not there, is an error that
/// names it, and the file stays as it was.
#[test]
fn passwd_refuses_rules_the_broker_would_refuse() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("credentials.toml");
    let (code, _, err) = passwd(&file, &["add", "alice"], "a\n");
    assert_eq!(code, Some(0), "{err}");
    let before = std::fs::read_to_string(&file).expect("read");
    for (args, says) in [
        (
            vec!["set", "alice", "--network", "10.0.0.0/33"],
            "10.0.0.0/33",
        ),
        (vec!["set", "alice", "--may-send-to", "bo[b"], "bo[b"),
        (vec!["set", "carol", "--anyone"], "carol is not in"),
        (vec!["set", "alice"], "nothing to set"),
    ] {
        let (code, _, err) = passwd(&file, &args, "");
        assert_eq!(code, Some(1), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
    let (code, _, err) = passwd(
        &file,
        &["set", "alice", "--network", "::1", "--any-network"],
        "",
    );
    assert_eq!(code, Some(2), "conflicting flags are a usage error: {err}");
    assert_eq!(std::fs::read_to_string(&file).expect("read"), before);
}

/// `passwd add --generate-token` prints a fresh token, alone on stdout, that the broker accepts.
#[test]
fn passwd_generates_a_token_the_broker_accepts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("credentials.toml");
    let (code, token, err) = passwd(&file, &["add", "alice", "--generate-token"], "");
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("added alice"), "{err}");
    let token = token.trim_end();
    assert_eq!(token.len(), 43, "256 bits in URL-safe base64: {token}");
    let (_, again, _) = passwd(&file, &["add", "alice", "--generate-token"], "");
    assert_ne!(again.trim_end(), token, "each token is fresh");
    let auth = switchboard_broker::auth::Auth::load(&file).expect("load");
    let local = "127.0.0.1".parse().expect("ip");
    assert!(auth.check("alice", Some(again.trim_end()), local).is_ok());
    assert!(auth.check("alice", Some(token), local).is_err(), "replaced");
}
