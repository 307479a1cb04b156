# Sourced by the bench scripts: builds the nanoclaw binary they measure and sets NANOCLAW.
# The static musl build starts faster (no dynamic loader, no CPU feature probing by it) and
# is the binary the docker backend's images use; it is chosen where the target is installed.
build_nanoclaw() {
  if rustup target list --installed 2>/dev/null | grep -qx x86_64-unknown-linux-musl; then
    cargo build --release --quiet --target x86_64-unknown-linux-musl -p nanoclaw
    NANOCLAW=${CARGO_TARGET_DIR:-$PWD/target}/x86_64-unknown-linux-musl/release/nanoclaw
  else
    cargo build --release --quiet -p nanoclaw
    NANOCLAW=${CARGO_TARGET_DIR:-$PWD/target}/release/nanoclaw
  fi
}
