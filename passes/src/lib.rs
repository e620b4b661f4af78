//! hecc's analyses and transforms, from the tensor graph to a scheduled HE plan.

pub mod approx;
pub mod he;
pub mod layout;
pub mod lower;
pub mod manager;
pub mod params;
pub mod plan;
pub mod ranges;
pub mod report;
pub mod rotations;
pub mod schedule;
pub mod tensor;
