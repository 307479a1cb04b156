mod support;

mod audit;
mod cleanup;
mod cli;
mod conformance;
mod docker;
mod egress;
mod policy;
