//! Prints the seccomp profile the docker backend hands the engine, e.g. to compare it with
//! Docker's default or to try it by hand:
//!
//! ```text
//! cargo run -q -p nanoclaw-docker --example seccomp_profile > nanoclaw.json
//! docker run --rm --security-opt seccomp=nanoclaw.json IMAGE CMD
//! ```

fn main() {
    println!("{}", nanoclaw_docker::seccomp::profile_json());
}
