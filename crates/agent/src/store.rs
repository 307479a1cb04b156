//! Conversation history in an embedded SQLite database under the state directory
//! ($XDG_STATE_HOME/nanoclaw/agent.db, mode 0600): `--resume` and `--list` read it.

use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use rusqlite::{params, Connection, OptionalExtension};

use crate::msg::Msg;

pub struct Store {
    db: Connection,
}

/// One conversation as `--list` shows it.
pub struct Summary {
    pub id: String,
    pub created: String,
    pub workspace: String,
    pub messages: i64,
    pub title: String,
}

/// Where a conversation was started.
pub struct Meta {
    pub workspace: String,
    pub policy: String,
}

pub fn default_path() -> Result<PathBuf> {
    let state = match std::env::var_os("XDG_STATE_HOME").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => {
            let home = std::env::var_os("HOME")
                .ok_or_else(|| anyhow!("neither XDG_STATE_HOME nor HOME is set"))?;
            PathBuf::from(home).join(".local/state")
        }
    };
    Ok(state.join("nanoclaw").join("agent.db"))
}

impl Store {
    pub fn open(path: &Path) -> Result<Store> {
        if let Some(dir) = path.parent() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        // Created 0600 before SQLite sees it: the history holds tool output.
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("cannot make {} private", path.display()))?;
        let db = Connection::open(path)
            .with_context(|| format!("cannot open the history database {}", path.display()))?;
        db.busy_timeout(std::time::Duration::from_secs(10))?;
        // WAL without a sync per commit: a crash may lose the last messages, never corrupt
        // the database; the audit log (fsynced) is the record that must survive.
        db.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;")
            .with_context(|| format!("cannot set up {}", path.display()))?;
        db.execute_batch(
            "CREATE TABLE IF NOT EXISTS conversations (
                 id TEXT PRIMARY KEY, created TEXT NOT NULL, workspace TEXT NOT NULL,
                 policy TEXT NOT NULL, title TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS messages (
                 conversation TEXT NOT NULL, seq INTEGER NOT NULL, turn INTEGER NOT NULL,
                 body TEXT NOT NULL, PRIMARY KEY (conversation, seq));",
        )
        .with_context(|| format!("cannot set up {}", path.display()))?;
        Ok(Store { db })
    }

    pub fn create(&self, id: &str, workspace: &str, policy: &str, title: &str) -> Result<()> {
        let title: String = title.chars().take(80).collect();
        self.db.execute(
            "INSERT INTO conversations (id, created, workspace, policy, title)
             VALUES (?1, strftime('%Y-%m-%dT%H:%M:%SZ','now'), ?2, ?3, ?4)",
            params![id, workspace, policy, title],
        )?;
        Ok(())
    }

    pub fn meta(&self, id: &str) -> Result<Option<Meta>> {
        Ok(self
            .db
            .query_row(
                "SELECT workspace, policy FROM conversations WHERE id = ?1",
                params![id],
                |row| {
                    Ok(Meta {
                        workspace: row.get(0)?,
                        policy: row.get(1)?,
                    })
                },
            )
            .optional()?)
    }

    pub fn history(&self, id: &str) -> Result<Vec<Msg>> {
        let mut statement = self
            .db
            .prepare("SELECT body FROM messages WHERE conversation = ?1 ORDER BY seq")?;
        let rows = statement.query_map(params![id], |row| row.get::<_, String>(0))?;
        let mut history = Vec::new();
        for row in rows {
            let body = row?;
            history.push(
                serde_json::from_str(&body)
                    .with_context(|| format!("conversation {id} holds an unreadable message"))?,
            );
        }
        Ok(history)
    }

    pub fn push(&self, id: &str, turn: u64, msg: &Msg) -> Result<()> {
        let body = serde_json::to_string(msg)?;
        self.db.execute(
            "INSERT INTO messages (conversation, seq, turn, body) VALUES (?1,
               (SELECT COALESCE(MAX(seq), 0) + 1 FROM messages WHERE conversation = ?1), ?2, ?3)",
            params![id, turn as i64, body],
        )?;
        Ok(())
    }

    pub fn list(&self) -> Result<Vec<Summary>> {
        let mut statement = self.db.prepare(
            "SELECT c.id, c.created, c.workspace, c.title,
                    (SELECT COUNT(*) FROM messages m WHERE m.conversation = c.id)
             FROM conversations c ORDER BY c.created, c.rowid",
        )?;
        let rows = statement.query_map([], |row| {
            Ok(Summary {
                id: row.get(0)?,
                created: row.get(1)?,
                workspace: row.get(2)?,
                title: row.get(3)?,
                messages: row.get(4)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }
}
