//! The native Linux backend.
pub mod cgroup;
pub mod seccomp;
