//! What an environment variable of a sandbox may be called, and which names hand a program
//! to whatever file or code their value names (loader and interpreter variables).
//!
//! The CLI's `-e`, the policy's `env` and the backends all check names with [`check_env`],
//! so a name refused in one place is refused in all. [`loader_variable`] is the table the
//! policy lint refuses a tool's fixed environment by.
//!
//! This module must never do I/O, and never accept a name outside the portable set
//! (`[A-Za-z_][A-Za-z0-9_]*`): a `=` would split differently in each consumer, a newline
//! forges a second line wherever an environment is printed or logged, and a NUL truncates.

/// Whether `name` is a portable environment variable name: a letter or `_`, then letters,
/// digits and `_` (POSIX's portable character set for names).
pub fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Refuses a name that is not [`is_env_name`] and a value with a NUL byte (which the kernel
/// would cut the value at), with a message naming the problem.
pub fn check_env(name: &str, value: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("empty environment variable name".into());
    }
    if !is_env_name(name) {
        return Err(format!(
            "invalid environment variable name {name:?}: a name is a letter or `_` followed \
             by letters, digits and `_` (no `=`, newline, NUL or other character)"
        ));
    }
    if value.contains('\0') {
        return Err(format!(
            "the value of environment variable {name} holds a NUL byte"
        ));
    }
    Ok(())
}

/// Variables that make a program load or run code, or read its configuration, from
/// wherever their value says: a tool's fixed command is then whatever that file holds (a
/// writable mount makes it whatever an earlier invocation wrote). A name matches an entry
/// exactly, or by prefix where the entry ends in `*`. Each entry with why.
///
/// Left out on purpose: `PATH` (the runner sets it; a policy that changes it names the
/// directories on purpose), `PAGER`, `EDITOR`, `VISUAL`, `GIT_PAGER`, `GIT_EDITOR` (they name
/// a program the tool runs on purpose, and are set to `cat` or `true` to keep tools from
/// waiting for a terminal), `TMPDIR` (a tool needs it), `MALLOC_*` but `MALLOC_TRACE` (they
/// tune the allocator, load nothing), `GIT_CONFIG_NOSYSTEM` (it narrows what git reads), and
/// harmless interpreter switches (`PYTHONUNBUFFERED`, `PYTHONDONTWRITEBYTECODE`, ...).
pub const LOADER_VARIABLES: &[(&str, &str)] = &[
    // The dynamic loader: LD_PRELOAD, LD_AUDIT and LD_LIBRARY_PATH load shared objects into
    // every dynamically linked program. DYLD_* is macOS's; refused so a policy means the
    // same everywhere.
    (
        "LD_*",
        "the dynamic loader loads libraries it names into every program",
    ),
    (
        "DYLD_*",
        "the macOS dynamic loader loads libraries it names",
    ),
    // glibc's own list of variables it drops for setuid programs (UNSECURE_ENVVARS),
    // because each makes libc read a file or module of the caller's choosing.
    (
        "GCONV_PATH",
        "glibc loads iconv modules (shared objects) from it",
    ),
    (
        "GLIBC_TUNABLES",
        "glibc parses it in the loader (CVE-2023-4911) and tunes its internals",
    ),
    ("GETCONF_DIR", "glibc's getconf runs programs from it"),
    ("HOSTALIASES", "glibc's resolver reads the file it names"),
    (
        "LOCALDOMAIN",
        "glibc's resolver takes its search domains from it",
    ),
    ("RES_OPTIONS", "glibc's resolver takes its options from it"),
    (
        "RESOLV_HOST_CONF",
        "glibc's resolver reads the file it names",
    ),
    ("LOCPATH", "glibc loads locale data from it"),
    (
        "NLSPATH",
        "glibc loads message catalogs (format strings) from it",
    ),
    ("NIS_PATH", "glibc's NIS+ lookups follow it"),
    (
        "MALLOC_TRACE",
        "glibc writes an allocation trace to the file it names",
    ),
    ("TZDIR", "glibc reads time-zone files from it"),
    // Shells.
    (
        "BASH_ENV",
        "bash runs the file it names before any non-interactive script",
    ),
    ("ENV", "sh, dash and ksh run the file it names at start-up"),
    (
        "BASH_FUNC_*",
        "bash imports these as functions, overriding commands",
    ),
    (
        "SHELLOPTS",
        "bash turns on the options it lists (xtrace, which runs PS4)",
    ),
    ("BASHOPTS", "bash turns on the options it lists"),
    (
        "PS4",
        "bash expands it, running command substitutions, for every traced command",
    ),
    ("PROMPT_COMMAND", "bash runs it before every prompt"),
    // Python.
    ("PYTHONPATH", "python imports modules from it first"),
    ("PYTHONHOME", "python loads its standard library from it"),
    (
        "PYTHONSTARTUP",
        "python runs the file it names in interactive mode",
    ),
    (
        "PYTHONINSPECT",
        "python reads code from standard input after the script",
    ),
    (
        "PYTHONUSERBASE",
        "python runs the .pth files of the site-packages below it",
    ),
    (
        "PYTHONBREAKPOINT",
        "python imports and calls what it names on breakpoint()",
    ),
    (
        "PYTHONPYCACHEPREFIX",
        "python loads compiled bytecode from it",
    ),
    // Node.js.
    (
        "NODE_OPTIONS",
        "node takes options from it, --require and --import load code",
    ),
    ("NODE_PATH", "node resolves modules from it"),
    // Perl and Ruby.
    ("PERL5OPT", "perl takes options from it, -M loads a module"),
    ("PERL5LIB", "perl loads modules from it first"),
    ("PERLLIB", "perl loads modules from it first"),
    ("PERL5DB", "perl runs it as the debugger's code"),
    ("RUBYOPT", "ruby takes options from it, -r loads code"),
    ("RUBYLIB", "ruby loads libraries from it first"),
    // The JVM and .NET.
    (
        "JAVA_TOOL_OPTIONS",
        "every JVM takes options from it, -javaagent loads code",
    ),
    (
        "_JAVA_OPTIONS",
        "every JVM takes options from it, -javaagent loads code",
    ),
    (
        "JDK_JAVA_OPTIONS",
        "the java launcher takes options from it",
    ),
    (
        "DOTNET_STARTUP_HOOKS",
        ".NET loads and runs the assemblies it names",
    ),
    // Other interpreters.
    (
        "LUA_INIT*",
        "lua runs it, or the file it names, at start-up",
    ),
    ("LUA_PATH*", "lua loads modules from it"),
    ("LUA_CPATH*", "lua loads native modules from it"),
    (
        "PHPRC",
        "php reads php.ini (auto_prepend_file runs code) from it",
    ),
    ("PHP_INI_SCAN_DIR", "php reads extra .ini files from it"),
    // Git: configuration runs programs (core.fsmonitor, core.sshCommand, aliases).
    (
        "GIT_CONFIG",
        "git reads configuration, which runs programs, from it",
    ),
    (
        "GIT_CONFIG_COUNT",
        "git takes configuration, which runs programs, from it",
    ),
    (
        "GIT_CONFIG_KEY_*",
        "git takes configuration, which runs programs, from it",
    ),
    (
        "GIT_CONFIG_VALUE_*",
        "git takes configuration, which runs programs, from it",
    ),
    (
        "GIT_CONFIG_PARAMETERS",
        "git takes configuration, which runs programs, from it",
    ),
    (
        "GIT_CONFIG_GLOBAL",
        "git reads configuration, which runs programs, from it",
    ),
    (
        "GIT_CONFIG_SYSTEM",
        "git reads configuration, which runs programs, from it",
    ),
    (
        "GIT_DIR",
        "git reads the repository's config (core.fsmonitor runs) from it",
    ),
    ("GIT_EXEC_PATH", "git runs its subcommands from it"),
    (
        "GIT_TEMPLATE_DIR",
        "git copies hooks from it into new repositories",
    ),
    ("GIT_SSH", "git runs it to reach a remote"),
    ("GIT_SSH_COMMAND", "git runs it to reach a remote"),
    ("GIT_PROXY_COMMAND", "git runs it to reach a remote"),
    ("GIT_ASKPASS", "git runs it to ask for credentials"),
    ("GIT_EXTERNAL_DIFF", "git runs it for every diff"),
    ("SSH_ASKPASS", "ssh runs it to ask for credentials"),
    // OpenSSL: a configuration file can load an engine or provider (a shared object).
    (
        "OPENSSL_CONF",
        "openssl reads configuration, which loads engines, from it",
    ),
    (
        "OPENSSL_ENGINES",
        "openssl loads engines (shared objects) from it",
    ),
    (
        "OPENSSL_MODULES",
        "openssl loads providers (shared objects) from it",
    ),
];

/// The entry of [`LOADER_VARIABLES`] that `name` matches, as `(entry, why)`.
pub fn loader_variable(name: &str) -> Option<(&'static str, &'static str)> {
    LOADER_VARIABLES
        .iter()
        .copied()
        .find(|(entry, _)| match entry.strip_suffix('*') {
            Some(prefix) => name.starts_with(prefix),
            None => name == *entry,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_portable_names_pass() {
        for name in ["PATH", "_X", "a1", "LD_PRELOAD"] {
            assert!(check_env(name, "v").is_ok(), "{name}");
        }
        for name in ["", "1X", "A=B", "A\nB", "A\0B", "A B", "A-B", "Ä", "A\r"] {
            assert!(check_env(name, "v").is_err(), "{name:?}");
        }
        assert!(check_env("A", "x\0y").is_err());
        assert!(
            check_env("A", "x=y\nz").is_ok(),
            "a value may hold anything but NUL"
        );
    }

    #[test]
    fn loader_variables_match_exactly_or_by_prefix() {
        for name in [
            "LD_PRELOAD",
            "LD_AUDIT",
            "BASH_ENV",
            "ENV",
            "PYTHONSTARTUP",
            "NODE_OPTIONS",
            "GIT_CONFIG_KEY_0",
            "GIT_CONFIG_COUNT",
            "BASH_FUNC_ls%%",
            "LUA_INIT_5_4",
        ] {
            assert!(loader_variable(name).is_some(), "{name}");
        }
        for name in [
            "PATH",
            "LANG",
            "ENVIRONMENT",
            "LD",
            "PYTHONUNBUFFERED",
            "GIT_CONFIG_NOSYSTEM",
            "PAGER",
            "HOME",
        ] {
            assert!(loader_variable(name).is_none(), "{name}");
        }
    }

    #[test]
    fn every_entry_is_a_name_or_a_prefix_and_listed_once() {
        let mut entries: Vec<&str> = LOADER_VARIABLES.iter().map(|(e, _)| *e).collect();
        for entry in &entries {
            let name = entry.strip_suffix('*').unwrap_or(entry);
            assert!(is_env_name(name), "{entry}");
        }
        let count = entries.len();
        entries.sort_unstable();
        entries.dedup();
        assert_eq!(entries.len(), count);
    }
}
