mod conformance;
mod egress;
mod images;
mod lifecycle;
pub mod support;
