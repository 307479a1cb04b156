#[path = "../../../docker/tests/suite/shared.rs"]
mod shared;
mod support;
#[path = "../../../docker/tests/suite/test_image.rs"]
mod test_image;

mod audit;
mod audit_hardening;
mod cleanup;
mod cli;
mod conformance;
mod credentials;
mod docker;
mod egress;
mod egress_flood;
mod hardening;
mod lifeline;
mod mcp;
mod params;
mod policy;
mod pool;
mod secrets;
mod writes;
