mod conformance;
mod egress;
mod images;
mod lifecycle;
pub mod support;
mod test_image;
