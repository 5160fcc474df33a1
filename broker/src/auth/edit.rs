//! Changing the credentials file the way an operator left it.
//!
//! `passwd` edits one client's table in place through a format-preserving TOML document, so every
//! comment, blank line and key order a person wrote survives, and it writes nothing the broker would
//! refuse: the edited text is compiled exactly as [`Auth::load`] compiles it before it replaces the
//! file.

use std::path::{Path, PathBuf};

use toml_edit::{value, Array, DocumentMut, Item, Table};

use super::file::write_atomically;
use super::{Auth, AuthError, CredentialsFile};

/// The credentials file open for editing; nothing is written until [`CredentialsEdit::save`].
#[derive(Debug)]
pub struct CredentialsEdit {
    path: PathBuf,
    doc: DocumentMut,
}

impl CredentialsEdit {
    /// Opens `path`. With `create`, a missing file is a new, empty one (only `passwd add` creates a
    /// file); without it a missing file is an error, so a typo in `--file` is never an empty list.
    pub fn open(path: &Path, create: bool) -> Result<Self, AuthError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => String::new(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(AuthError::Missing { path: path.into() })
            }
            Err(cause) => {
                return Err(AuthError::Read {
                    path: path.into(),
                    cause,
                })
            }
        };
        let doc = text
            .parse::<DocumentMut>()
            .map_err(|e| AuthError::Invalid {
                path: path.into(),
                reason: e.to_string(),
            })?;
        Ok(Self {
            path: path.into(),
            doc,
        })
    }

    /// Whether `id` has an entry.
    pub fn contains(&self, id: &str) -> bool {
        self.doc
            .get("clients")
            .and_then(|clients| clients.get(id))
            .is_some()
    }

    /// Sets `id`'s token hash, adding the client if it is new (its rules stay as they were).
    pub fn set_hash(&mut self, id: &str, hash: &str) -> Result<(), AuthError> {
        self.client(id)?.insert("hash", value(hash));
        Ok(())
    }

    /// Where `id` may connect from; empty means anywhere (the key is removed).
    pub fn set_networks(&mut self, id: &str, networks: &[String]) -> Result<(), AuthError> {
        let client = self.client(id)?;
        if networks.is_empty() {
            client.remove("networks");
        } else {
            client.insert("networks", value(array(networks)));
        }
        Ok(())
    }

    /// Whom `id` may send to (globs); `None` means anyone (the key is removed).
    pub fn set_may_send_to(&mut self, id: &str, globs: Option<&[String]>) -> Result<(), AuthError> {
        let client = self.client(id)?;
        match globs {
            None => {
                client.remove("may_send_to");
            }
            Some(globs) => {
                client.insert("may_send_to", value(array(globs)));
            }
        }
        Ok(())
    }

    /// Removes `id`; false if it had no entry.
    pub fn remove(&mut self, id: &str) -> bool {
        self.doc
            .get_mut("clients")
            .and_then(Item::as_table_like_mut)
            .and_then(|clients| clients.remove(id))
            .is_some()
    }

    /// Checks the edited file as the broker would load it, then replaces the file atomically.
    pub fn save(&self) -> Result<(), AuthError> {
        let text = self.doc.to_string();
        let file: CredentialsFile = toml::from_str(&text).map_err(|e| AuthError::Invalid {
            path: self.path.clone(),
            reason: e.to_string(),
        })?;
        Auth::from_credentials(&self.path, file)?;
        write_atomically(&self.path, &text)
    }

    /// `id`'s table, created (as `[clients.ID]`, without an empty `[clients]` header) if missing.
    fn client(&mut self, id: &str) -> Result<&mut Table, AuthError> {
        let not_a_table = |what: String| AuthError::Invalid {
            path: self.path.clone(),
            reason: format!("{what} is not a table"),
        };
        let clients = self.doc.entry("clients").or_insert_with(|| {
            let mut table = Table::new();
            table.set_implicit(true);
            Item::Table(table)
        });
        let clients = clients
            .as_table_mut()
            .ok_or_else(|| not_a_table("`clients`".into()))?;
        clients
            .entry(id)
            .or_insert_with(|| Item::Table(Table::new()))
            .as_table_mut()
            .ok_or_else(|| not_a_table(format!("`clients.{id}`")))
    }
}

fn array(items: &[String]) -> Array {
    items.iter().map(String::as_str).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::hash_token;

    const HAND_WRITTEN: &str = "\
# Who may talk to the broker. Ask ops before adding a client.

[clients.bob]   # the billing service
hash = \"HASH\"
networks = [\"10.0.0.0/8\"]   # office only
";

    fn hand_written() -> (tempfile::TempDir, PathBuf, String) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("credentials.toml");
        let text = HAND_WRITTEN.replace("HASH", &hash_token("b").expect("hash"));
        std::fs::write(&path, &text).expect("write");
        (dir, path, text)
    }

    #[test]
    fn adding_and_removing_a_client_keeps_what_a_person_wrote() {
        let (_dir, path, original) = hand_written();
        let mut edit = CredentialsEdit::open(&path, false).expect("open");
        edit.set_hash("alice", &hash_token("a").expect("hash"))
            .expect("set");
        edit.set_may_send_to("alice", Some(&["bob".into()]))
            .expect("rules");
        edit.save().expect("save");
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(text.starts_with(&original), "{text}");
        assert!(text.contains("[clients.alice]"), "{text}");
        let auth = Auth::load(&path).expect("the broker loads it");
        let local = "127.0.0.1".parse().expect("ip");
        let grant = auth.check("alice", Some("a"), local).expect("alice");
        assert!(grant.may_send_to("bob") && !grant.may_send_to("carol"));

        let mut edit = CredentialsEdit::open(&path, false).expect("open");
        assert!(edit.remove("alice") && !edit.remove("alice"));
        edit.save().expect("save");
        assert_eq!(std::fs::read_to_string(&path).expect("read"), original);
    }

    #[test]
    fn clearing_a_rule_removes_its_key_and_keeps_the_rest() {
        let (_dir, path, _) = hand_written();
        let mut edit = CredentialsEdit::open(&path, false).expect("open");
        edit.set_networks("bob", &[]).expect("set");
        edit.save().expect("save");
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(!text.contains("networks"), "{text}");
        assert!(text.contains("# the billing service"), "{text}");
    }

    #[test]
    fn an_edit_the_broker_would_refuse_is_not_written() {
        let (_dir, path, original) = hand_written();
        let mut edit = CredentialsEdit::open(&path, false).expect("open");
        edit.set_networks("bob", &["10.0.0.0/33".into()])
            .expect("set");
        let err = edit.save().expect_err("refused").to_string();
        assert!(err.contains("10.0.0.0/33"), "{err}");
        // A client without a token hash is refused too (`passwd set` on a new id would make one).
        let mut edit = CredentialsEdit::open(&path, false).expect("open");
        edit.set_networks("carol", &["10.0.0.0/8".into()])
            .expect("set");
        let err = edit.save().expect_err("refused").to_string();
        assert!(err.contains("hash"), "{err}");
        assert_eq!(std::fs::read_to_string(&path).expect("read"), original);
    }

    #[test]
    fn a_missing_file_is_created_only_when_asked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("typo.toml");
        let err = CredentialsEdit::open(&path, false).expect_err("missing");
        assert!(
            err.to_string().contains("typo.toml does not exist"),
            "{err}"
        );
        let mut edit = CredentialsEdit::open(&path, true).expect("create");
        edit.set_hash("alice", &hash_token("a").expect("hash"))
            .expect("set");
        edit.save().expect("save");
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(text.starts_with("[clients.alice]"), "{text}");
    }
}
