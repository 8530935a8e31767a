//! x86-64 back end: the pure encoder ([`encode`]) and the lowering of eBPF
//! instructions onto it ([`lower`]).

pub mod encode;
pub(crate) mod inline;
pub mod lower;
