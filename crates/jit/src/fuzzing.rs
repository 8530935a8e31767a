//! Random program generation and the JIT-vs-interpreter oracle.
