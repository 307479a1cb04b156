//! Per-tool policies: a TOML file that names each tool an agent may call and exactly what
//! its sandbox may have, parsed ([`Policy::load`]), linted ([`lint`]) and resolved to the
//! one thing downstream code sees, a fully resolved [`SandboxSpec`]
//! ([`Policy::resolve`]). Nothing after this crate reads policy text.
//!
//! It fails closed at every step: a file that does not parse yields [`Diagnostics`] with
//! file, line and column; a tool the lint refuses does not resolve; an invocation that
//! would widen a tool's scope is an [`Error`] naming the option and the tool.
//!
//! Part of the trusted core: no async, no network, no process spawning. It reads the
//! policy file and, for the lint, file metadata and directory names on the host and the
//! host's /etc/passwd and /etc/group; it must never write anything.
//!
//! # The policy file
//!
//! ```toml
//! [defaults]                  # optional; overrides the built-in strict defaults where written
//! backend = "native"          # or "docker"
//! timeout = "60s"
//! [defaults.limits]           # memory = "512m", cpus = 0.5, pids = 256, output = "1m", tmpfs = "64m"
//!
//! [ceilings]                  # optional; the most any tool may ask for. Built in:
//! memory = "4g"               # cpus = 2, pids = 1024, timeout = "10m", output = "16m", tmpfs = "1g"
//!
//! [tools.search]
//! description = "search the workspace"   # optional (a warning without)
//! command = ["grep", "-rn"]              # argv prefix, required, non-empty
//! args = "append"                        # "none" (default): invocations add no arguments
//! workdir = "/work"                      # absolute, default "/"
//! env = { LANG = "C.UTF-8" }             # fixed values only; LD_PRELOAD & co. are `loader-env`
//! timeout = "30s"
//! backend = "native"                     # default: [defaults].backend
//! rootfs = "${policy_dir}/rootfs"        # native: an unpacked image directory (default: host /usr)
//! image = "debian@sha256:<64 hex>"       # docker: pinned by digest
//! user = "10001:10001"                   # default; uid or gid 0 is `root-user`, a host
//!                                        #   account's or a mount owner's is `host-user`
//! network = "none"                       # default; or { allow = ["api.github.com:443", "*.pypi.org:443"] }
//! secrets = [{ name = "GITHUB_TOKEN", ttl = "5m",     # ttl required, <= [defaults] secret_ttl_max (1h)
//!             from = "env:GH_TOKEN",              # or "file:/abs/path", or ["cmd", "arg"] (no shell)
//!             deliver = "placeholder",            # default with network.allow; else "file"; or "env"
//!             hosts = ["api.github.com:443"],     # placeholder: where the proxy substitutes it
//!             body = false }]                     # placeholder: also in request bodies
//! syscalls = { profile = "default" }    # the only profile; `capabilities`, `network = "host"`
//!                                        #   and `syscalls.allow` are refused: no backend
//!                                        #   enforces them
//! [tools.search.limits]                  # memory, cpus, pids, output, tmpfs
//! memory = "256m"
//! [[tools.search.mounts]]
//! host = "${workspace}"                  # absolute; ${workspace} (per invocation) and
//! path = "/work"                         #   ${policy_dir} only at the start
//! mode = "ro"                            # or "rw"
//! credentials = "hidden"                 # default: .env, .ssh, ... at any depth are masked;
//!                                        #   "visible" is `visible-credentials`
//! [tools.search.unsafe]                  # accepts named lint errors, reported every time
//! reason = "why this is acceptable"
//! allow = ["sensitive-mount"]
//!
//! [tools.lines]                          # declared parameters: the input schema of a tool
//! command = ["grep", "-n", "-e", "{pattern}", "--", "{files}"]
//! [tools.lines.params.pattern]           # `{pattern}` is a WHOLE argv element: one argument
//! type = "string"                        # string, integer, number, boolean, array (of strings)
//! description = "what to look for"       # an array is zero or more arguments; an absent
//! required = true                        #   optional parameter none at all
//! max_length = 1000                      # strings: also pattern = "regex", enum = ["a", "b"]
//! [tools.lines.params.files]             # `stdin = true` (or the name `stdin`): the value is
//! type = "array"                         #   the standard input instead of an argument
//! ```
//!
//! In `command`, `{{` and `}}` are literal braces; any other brace, a placeholder inside a
//! longer string (`"--x={p}"`), an undeclared placeholder, a placeholder as the program, and
//! a parameter used nowhere are parse errors. [`Tool::input_schema`] is the JSON Schema of a
//! tool's input (with `args`, an array of strings, when `args = "append"`), and
//! [`Tool::bind`] checks one call's values and builds its argv.
//!
//! Sizes are strings (`"512m"`), durations are strings (`"30s"`), `cpus` is a number (or a
//! string), `pids` a whole number. Unknown keys, wrong types, bad units, relative or `..`
//! paths, duplicate mount targets, targets in `/proc`, `/dev`, `/sys` or `/tmp`, unknown
//! variables, malformed digests and empty commands are parse errors.
//!
//! # The lint
//!
//! Errors a `[tools.NAME.unsafe]` table may acknowledge: `sensitive-mount`, `writable-git`,
//! `root-user`, `unpinned-image`, `broad-egress`, `above-ceiling`, `secret-without-ttl`,
//! `visible-credentials`, `host-user`, `loader-env`. Errors nothing acknowledges:
//! `symlink-mount`, `secret-hosts`. Warnings: `env-secret`, `readable-secret-file`,
//! `no-description`, `writable-workspace`, `writable-repo`, `credentials-inside`,
//! `missing-path`, `plain-http`, `internal-egress`, `shell-append`, `raised-ceiling`,
//! `unused-acknowledgement`. See [`Rule`].

mod accounts;
mod credentials;
mod diagnostic;
mod digest;
mod egress;
mod lint;
mod params;
mod parse;
mod policy;
mod resolve;
mod sensitive;
mod units;

pub use credentials::{hide_credentials, ScanError, ScanLimits, Scanned};
pub use diagnostic::{Diagnostic, Diagnostics, Location};
pub use digest::{policy_sha256, spec_sha256};
pub use egress::{is_broad as is_broad_egress, parse_rule as parse_egress_rule};
pub use lint::{covers as egress_rule_covers, lint, Finding, Report, Rule, Severity};
pub use params::{BoundCall, Param, ParamError, ParamType};
pub use policy::{
    Acknowledgement, BackendKind, Defaults, ExtraArgs, HostPath, MountDecl, Policy, Resources,
    Secret, Tool, ToolNetwork,
};
pub use resolve::{Error, Invocation, Narrowing, Resolved};
pub use units::{bytes as format_bytes, cpus as format_cpus};

#[doc(no_inline)]
pub use nanoclaw_spec::SandboxSpec;
