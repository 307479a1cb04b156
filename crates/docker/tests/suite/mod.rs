mod conformance;
mod images;
mod lifecycle;
pub mod support;
