//! The shell text the hook hands back to the agent: its own shell runs it on the host.
//!
//! Everything the model wrote reaches that shell single-quoted, so the host shell
//! evaluates none of it. The one exception is a leading `cd DIR &&` / `cd DIR;` whose DIR
//! is a plain word (no expansion, no glob, no quote the host could misread): it is kept on
//! the host side, re-quoted, so that the agent's shell changes directory for its later
//! calls as it would have without the hook. This module must never pass anything else of
//! the command to the host shell unquoted.

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
    fn as_str(self) -> &'static str {
        match self {
            Separator::And => " && ",
            Separator::Then => "; ",
        }
    }
}

/// A command split into its leading plain `cd`s and the rest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split<'a> {
    /// Each directory (the word's value, quotes removed) and what follows it.
    pub cds: Vec<(String, Separator)>,
    /// The rest of the command, verbatim but for leading blanks (may be empty after
    /// `cd DIR;`).
    pub rest: &'a str,
}

impl Split<'_> {
    /// The host-side prefix: `cd 'DIR' && ` for each leading cd, re-quoted.
    pub fn host_prefix(&self) -> String {
        self.cds
            .iter()
            .map(|(dir, sep)| format!("cd {}{}", quote(dir), sep.as_str()))
            .collect()
    }
}

/// Splits the leading `cd DIR &&` / `cd DIR;` / `cd DIR<newline>` of `command` off,
/// repeatedly. Anything that is not certainly a plain cd to a literal directory ends the
/// split and stays in the rest (which then runs sandboxed, cd included).
pub fn split_leading_cds(command: &str) -> Split<'_> {
    let mut split = Split {
        cds: Vec::new(),
        rest: command,
    };
    while let Some((dir, sep, rest)) = leading_cd(split.rest) {
        split.cds.push((dir, sep));
        split.rest = rest;
    }
    split
}

fn is_blank(c: char) -> bool {
    c == ' ' || c == '\t'
}

/// Characters of an unquoted word that no shell expands or splits on.
fn is_plain(c: char) -> bool {
    c.is_ascii_alphanumeric() || "_./+-@%:,=".contains(c)
}

/// Whether the rest of a command is blank (spaces, tabs, newlines).
fn is_empty_command(text: &str) -> bool {
    text.chars().all(|c| is_blank(c) || c == '\n')
}

fn leading_cd(command: &str) -> Option<(String, Separator, &str)> {
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
    Some((
        dir,
        sep,
        rest.trim_start_matches(|c| is_blank(c) || c == '\n'),
    ))
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
        (split.cds, split.rest)
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
    fn host_prefix_requotes() {
        let split = split_leading_cds("cd 'a b' && cd c; ls");
        assert_eq!(split.host_prefix(), "cd 'a b' && cd 'c'; ");
    }
}
