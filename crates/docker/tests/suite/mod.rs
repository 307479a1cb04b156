mod conformance;
mod egress;
mod images;
mod lifecycle;
mod shared;
pub mod support;
mod test_image;
