#[path = "../../../docker/tests/suite/shared.rs"]
mod shared;
mod support;
#[path = "../../../docker/tests/suite/test_image.rs"]
mod test_image;

mod audit;
mod cleanup;
mod cli;
mod conformance;
mod docker;
mod egress;
mod hardening;
mod policy;
