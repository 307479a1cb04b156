mod support;

mod audit;
mod cleanup;
mod cli;
mod conformance;
mod egress;
mod policy;
