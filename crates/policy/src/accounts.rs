//! The host's accounts, as `/etc/passwd` and `/etc/group` name them, for the lint's
//! `host-user` rule: a sandbox that runs as a real account's uid (or gid) acts as that
//! account on the host wherever the two meet (files it owns in a mount, files it creates).
//!
//! This module only reads those two files; it must never change them, and never treat an
//! unreadable file as "no accounts" silently (the lint says it could not check). Accounts
//! that only NSS modules know (LDAP, sssd, systemd's dynamic users) are not seen.

use std::collections::BTreeMap;

const PASSWD: &str = "/etc/passwd";
const GROUP: &str = "/etc/group";

/// Ids to names, from the host's account files.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct HostAccounts {
    pub(crate) users: BTreeMap<u32, String>,
    pub(crate) groups: BTreeMap<u32, String>,
    /// A file that could not be read, and why.
    pub(crate) unreadable: Option<String>,
}

impl HostAccounts {
    pub(crate) fn of_this_host() -> Self {
        let mut unreadable = None;
        let mut read = |path: &str| {
            std::fs::read_to_string(path).unwrap_or_else(|e| {
                unreadable.get_or_insert_with(|| format!("{path}: {e}"));
                String::new()
            })
        };
        let passwd = read(PASSWD);
        let group = read(GROUP);
        HostAccounts {
            unreadable,
            ..HostAccounts::parse(&passwd, &group)
        }
    }

    /// Parses passwd and group text: `name:password:ID:...` lines; others are skipped.
    pub(crate) fn parse(passwd: &str, group: &str) -> Self {
        HostAccounts {
            users: ids(passwd),
            groups: ids(group),
            unreadable: None,
        }
    }
}

fn ids(text: &str) -> BTreeMap<u32, String> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let mut fields = line.split(':');
            let name = fields.next()?;
            let id = fields.nth(1)?.parse().ok()?;
            Some((id, name.to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_come_from_the_third_field() {
        let accounts = HostAccounts::parse(
            "root:x:0:0:root:/root:/bin/sh\n# comment\nme:x:1000:1000::/home/me:/bin/bash\nbad\n",
            "root:x:0:\nstaff:x:50:me\n",
        );
        assert_eq!(accounts.users.get(&1000).map(String::as_str), Some("me"));
        assert_eq!(accounts.users.len(), 2);
        assert_eq!(accounts.groups.get(&50).map(String::as_str), Some("staff"));
    }
}
