//! Where a daemon keeps its state when `--state-dir` does not say: one directory per client id,
//! where the XDG base directory specification puts state.

use std::path::{Path, PathBuf};

/// `$XDG_STATE_HOME/switchboard/ID`, else `$HOME/.local/state/switchboard/ID` (the XDG default),
/// else `./.switchboard-state/ID`; the id is made safe as one path component.
pub(crate) fn default_state_dir(id: &str) -> PathBuf {
    let absolute = |var: &str| {
        std::env::var_os(var)
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
    };
    let base = if let Some(state) = absolute("XDG_STATE_HOME") {
        state.join("switchboard")
    } else if let Some(home) = absolute("HOME") {
        home.join(".local/state/switchboard")
    } else {
        Path::new(".switchboard-state").to_path_buf()
    };
    base.join(path_component(id))
}

/// A client id as a file name: ASCII letters, digits and `-_.@+` stay, every other byte (and a
/// leading dot) becomes `%XX`, so `a/b` and `..` cannot leave the directory.
fn path_component(id: &str) -> String {
    let mut out = String::with_capacity(id.len());
    for (i, byte) in id.bytes().enumerate() {
        let plain =
            byte.is_ascii_alphanumeric() || b"-_@+".contains(&byte) || (byte == b'.' && i > 0);
        if plain {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_become_safe_file_names() {
        assert_eq!(path_component("bob@host-1"), "bob@host-1");
        assert_eq!(path_component("a/b"), "a%2Fb");
        assert_eq!(path_component(".."), "%2E.");
        assert_eq!(path_component("ünï"), "%C3%BCn%C3%AF");
    }
}
