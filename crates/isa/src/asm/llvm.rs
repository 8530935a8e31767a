//! The kernel/llvm-objdump assembly syntax.

use super::Parsed;

/// Parses one instruction line (comment and labels already removed).
pub(super) fn parse_line(_line: &str) -> Result<Parsed, String> {
    Err("the llvm syntax is not supported yet".into())
}
