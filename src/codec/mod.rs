//! The wire codec (being written).
