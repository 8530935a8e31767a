//! Abstract domains of the verifier. Each module opens with its model.
pub mod bounds;
pub mod scalar;
pub mod tnum;
