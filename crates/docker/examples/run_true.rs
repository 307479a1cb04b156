//! Runs `/bin/true` (or the given command) in IMAGE with the strict defaults through the
//! docker backend, as `nanoclaw run --backend docker --image IMAGE -- CMD` will; used by
//! bench/docker.sh until the CLI has that option.
//!
//! ```text
//! cargo run --release -p nanoclaw-docker --example run_true -- IMAGE [CMD...]
//! ```

use std::process::ExitCode;

use nanoclaw_docker::DockerBackend;
use nanoclaw_spec::{Backend, IoMode, Root, SandboxSpec};

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let Some(image) = args.next() else {
        eprintln!("usage: run_true IMAGE [CMD...]");
        return ExitCode::from(2);
    };
    let mut command: Vec<String> = args.collect();
    if command.is_empty() {
        command.push("/bin/true".into());
    }
    let mut spec = SandboxSpec::new(command);
    spec.root = Root::Image(image);
    let io = IoMode {
        stdin: false,
        capture: false,
    };
    let result =
        DockerBackend::connect().and_then(|backend| backend.run(&spec, io, &mut || Ok(())));
    match result {
        Ok(outcome) => ExitCode::from(outcome.exit_status() as u8),
        Err(error) => {
            eprintln!("run_true: {error}");
            ExitCode::from(error.exit_status() as u8)
        }
    }
}
