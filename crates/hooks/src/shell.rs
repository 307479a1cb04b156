//! The shell text the hook hands back to the agent: its own shell runs it on the host.
//!
//! Everything the model wrote reaches that shell single-quoted, so the host shell
//! evaluates none of it. Leading `cd DIR &&` / `cd DIR;` whose DIR is a plain word (no
//! expansion, no glob, no quote the host could misread) are split off here, so that the
//! hook can check where each goes and keep them on the host side: the agent's shell then
//! changes directory for its later calls as it would have without the hook. The host side
//! never gets the model's word, only `cd -P -- 'ABS'` to the canonical directory the hook
//! checked (`host_cd`): absolute, so `CDPATH` and the shell's idea of its directory (a
//! logical `..` through a symlink) cannot send it elsewhere; `-P`, so the shell's `$PWD` is
//! that very path. This module must never pass anything else of the command to the host
//! shell unquoted.

/// `text` as one single-quoted shell word: `'` becomes `'\''`; newlines, `$`, backquotes
/// and backslashes stay literal inside the quotes.
pub fn quote(text: &str) -> String {
    let mut quoted = String::with_capacity(text.len() + 2);
    quoted.push('\'');
    for c in text.chars() {
        if c == '\'' {
            quoted.push_str("'\\''");
        } else {
            quoted.push(c);
        }
    }
    quoted.push('\'');
    quoted
}

/// How a leading `cd` is joined to what follows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Separator {
    /// `cd DIR && REST`: REST runs only if the cd succeeded.
    And,
    /// `cd DIR; REST` (or a newline): REST runs either way.
    Then,
}

impl Separator {
    pub fn as_str(self) -> &'static str {
        match self {
            Separator::And => " && ",
            Separator::Then => "; ",
        }
    }
}

/// One leading plain `cd DIR` of a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeadingCd<'a> {
    /// The directory: the word's value, quotes removed, as the model wrote it.
    pub dir: String,
    /// What joins it to what follows.
    pub sep: Separator,
    /// The command from this `cd` on, verbatim: what runs sandboxed instead if the hook
    /// cannot check where this `cd` goes.
    pub from: &'a str,
}

/// A command split into its leading plain `cd`s and the rest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split<'a> {
    pub cds: Vec<LeadingCd<'a>>,
    /// The rest of the command, verbatim but for leading blanks (may be empty after
    /// `cd DIR;`).
    pub rest: &'a str,
}

/// The host-side `cd` into `dir`, a canonical absolute directory the hook checked.
pub fn host_cd(dir: &str) -> String {
    format!("cd -P -- {}", quote(dir))
}

/// Splits the leading `cd DIR &&` / `cd DIR;` / `cd DIR<newline>` of `command` off,
/// repeatedly. Anything that is not certainly a plain cd to a literal directory ends the
/// split and stays in the rest (which then runs sandboxed, cd included).
pub fn split_leading_cds(command: &str) -> Split<'_> {
    let mut split = Split {
        cds: Vec::new(),
        rest: command,
    };
    while let Some((cd, rest)) = leading_cd(split.rest) {
        split.cds.push(cd);
        split.rest = rest;
    }
    split
}

/// Whether `text` is empty as a command: nothing but the blanks and newlines sh skips.
/// Not `str::trim`, whose whitespace (`\v`, `\f`, `\r`, Unicode spaces) is a command
/// name to sh.
pub fn is_empty_command(text: &str) -> bool {
    text.chars().all(|c| is_blank(c) || c == '\n')
}

fn is_blank(c: char) -> bool {
    c == ' ' || c == '\t'
}

/// Characters of an unquoted word that no shell expands or splits on.
fn is_plain(c: char) -> bool {
    c.is_ascii_alphanumeric() || "_./+-@%:,=".contains(c)
}

/// The leading plain `cd` of `command`, and the command after it.
fn leading_cd(command: &str) -> Option<(LeadingCd<'_>, &str)> {
    let text = command.trim_start_matches(|c| is_blank(c) || c == '\n');
    let after_cd = text.strip_prefix("cd")?;
    let word = after_cd.trim_start_matches(is_blank);
    if word.len() == after_cd.len() {
        return None; // `cdx`, or `cd` alone
    }
    let (dir, after_word) = literal_word(word)?;
    if dir.is_empty() || dir.starts_with('-') {
        return None; // `cd ''`, `cd -`, `cd -P x`: options and OLDPWD stay sandboxed
    }
    let after_word = after_word.trim_start_matches(is_blank);
    let (sep, rest) = if let Some(rest) = after_word.strip_prefix("&&") {
        if rest.starts_with('&') || is_empty_command(rest) {
            return None; // not a plain `&&` list: leave it whole
        }
        (Separator::And, rest)
    } else if let Some(rest) = after_word.strip_prefix(';') {
        if rest.starts_with(';') || rest.starts_with('&') {
            return None;
        }
        (Separator::Then, rest)
    } else if let Some(rest) = after_word.strip_prefix('\n') {
        (Separator::Then, rest)
    } else if after_word.is_empty() {
        (Separator::Then, after_word)
    } else {
        return None; // `cd x | y`, `cd x > f`, `cd x &`, `cd a b`, ...
    };
    let cd = LeadingCd {
        dir,
        sep,
        from: text,
    };
    Some((cd, rest.trim_start_matches(|c| is_blank(c) || c == '\n')))
}

/// A word whose value the shell takes literally: plain characters, or `'...'`, or `"..."`
/// without `$`, backquote, backslash or `!`. Returns its value and what follows it, which
/// must end the word.
fn literal_word(text: &str) -> Option<(String, &str)> {
    let (value, rest) = if let Some(inner) = text.strip_prefix('\'') {
        let end = inner.find('\'')?;
        (&inner[..end], &inner[end + 1..])
    } else if let Some(inner) = text.strip_prefix('"') {
        let end = inner.find('"')?;
        let value = &inner[..end];
        if value.contains(['$', '`', '\\', '!']) {
            return None;
        }
        (value, &inner[end + 1..])
    } else {
        let end = text.find(|c: char| !is_plain(c)).unwrap_or(text.len());
        (&text[..end], &text[end..])
    };
    match rest.chars().next() {
        None => Some((value.to_string(), rest)),
        Some(c) if is_blank(c) || c == ';' || c == '&' || c == '\n' => {
            Some((value.to_string(), rest))
        }
        Some(_) => None, // `cd a"b"`, `cd $HOME`, `cd x*`, `cd ~`: not plain
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cds(command: &str) -> (Vec<(String, Separator)>, &str) {
        let split = split_leading_cds(command);
        let cds = split.cds.into_iter().map(|cd| (cd.dir, cd.sep)).collect();
        (cds, split.rest)
    }

    fn dirs(cds: &[(&str, Separator)]) -> Vec<(String, Separator)> {
        cds.iter().map(|(d, s)| (d.to_string(), *s)).collect()
    }

    #[test]
    fn quote_survives_the_shell() {
        for text in [
            "plain",
            "it's",
            "''",
            "a\nb",
            "$(id) `id` ${HOME} \\ \" !",
            "",
            "'\\''",
        ] {
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(format!("printf %s {}", quote(text)))
                .output()
                .unwrap();
            assert_eq!(String::from_utf8(out.stdout).unwrap(), text, "{text:?}");
        }
    }

    #[test]
    fn plain_leading_cds_are_split_off() {
        assert_eq!(
            cds("cd sub && make"),
            (dirs(&[("sub", Separator::And)]), "make")
        );
        assert_eq!(cds("cd sub; ls"), (dirs(&[("sub", Separator::Then)]), "ls"));
        assert_eq!(cds("cd sub\nls"), (dirs(&[("sub", Separator::Then)]), "ls"));
        assert_eq!(cds("cd sub"), (dirs(&[("sub", Separator::Then)]), ""));
        assert_eq!(
            cds("  cd 'a b' && cd \"c\" && x"),
            (dirs(&[("a b", Separator::And), ("c", Separator::And)]), "x")
        );
        assert_eq!(
            cds("cd /abs/p-1.2_x && y"),
            (dirs(&[("/abs/p-1.2_x", Separator::And)]), "y")
        );
    }

    #[test]
    fn anything_not_plain_stays_in_the_rest() {
        for command in [
            "cd $HOME && ls",
            "cd ~ && ls",
            "cd `pwd` && ls",
            "cd $(pwd) && ls",
            "cd x* && ls",
            "cd - && ls",
            "cd -P x && ls",
            "cd a b && ls",
            "cd x | cat",
            "cd x > f",
            "cd x & ls",
            "cd x &&",
            "cd \"$x\" && ls",
            "cd 'x'y && ls",
            "cd '' && ls",
            "cd x;; ls",
            "cdx && ls",
            "cd",
            "echo; cd x && ls",
            "cd {a,b} && ls",
        ] {
            let split = split_leading_cds(command);
            assert!(split.cds.is_empty(), "{command:?} split into {split:?}");
            assert_eq!(split.rest, command);
        }
    }

    #[test]
    fn each_cd_keeps_the_command_from_it_on() {
        let split = split_leading_cds("  cd 'a b' && cd c;\ncd d && ls");
        let from: Vec<&str> = split.cds.iter().map(|cd| cd.from).collect();
        assert_eq!(
            from,
            [
                "cd 'a b' && cd c;\ncd d && ls",
                "cd c;\ncd d && ls",
                "cd d && ls"
            ]
        );
        assert_eq!(split.rest, "ls");
    }

    #[test]
    fn only_sh_blanks_make_an_empty_command() {
        assert!(is_empty_command(" \t\n"));
        assert!(is_empty_command(""));
        for text in ["\x0b", "\x0c", "\r", "\u{a0}", "\u{2003}"] {
            assert!(!is_empty_command(text), "{text:?}");
            // Nor may such a character end a `&&` list early: it is the command after it.
            let split = split_leading_cds(&format!("cd sub && {text}")).cds.len();
            assert_eq!(split, 1, "{text:?}");
        }
    }

    #[test]
    fn the_host_cd_is_physical_and_absolute() {
        assert_eq!(host_cd("/w/a b"), "cd -P -- '/w/a b'");
        assert_eq!(host_cd("/w/it's"), "cd -P -- '/w/it'\\''s'");
    }
}
