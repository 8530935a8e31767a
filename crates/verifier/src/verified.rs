//! Proof of verification: [`VerifiedProgram`], a program together with the
//! facts an engine may rely on because the verifier accepted it.
//!
//! The only way to get one is [`VerifiedProgram::verify`], which runs
//! [`crate::verify`] on the program it then owns: the token cannot be
//! attached to a different program than the one that was checked, and a
//! rejected program never yields one. Engines that drop their run-time
//! memory checks for verified code (the JIT's unchecked mode) take a
//! `&VerifiedProgram` instead of a `&Program`, so an unverified program
//! cannot reach them (a type error, not a run-time check).

use bpfkit_abi::{MapDef, ProgType};
use bpfkit_isa::Program;

use crate::check::{verify, Options, Report, Verdict};
use crate::ctx::{self, CtxField};
use crate::state::PtrKind;

/// Where the context of a program type holds packet pointers (32-bit
/// fields, byte offsets into the context).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct PacketFields {
    /// Offset of the packet start (`data`).
    pub data: u32,
    /// Offset of the packet end (`data_end`).
    pub data_end: u32,
    /// Offset of the metadata start (`data_meta`), if the type has one.
    pub data_meta: Option<u32>,
}

/// A program the verifier accepted, with the assumptions it was accepted
/// under: its type (so the context layout) and the map definitions its
/// map references index.
#[derive(Clone, Debug)]
pub struct VerifiedProgram {
    prog: Program,
    prog_type: ProgType,
    maps: Vec<MapDef>,
    ctx_size: u32,
    ctx_writable: bool,
    packet: Option<PacketFields>,
}

/// Largest context the layouts of `crate::ctx` describe (tracepoints).
const CTX_PROBE_LIMIT: i64 = 4096;

impl VerifiedProgram {
    /// Verifies `prog` (see [`crate::verify`]); the token when the verdict
    /// is [`Verdict::Accepted`], always the report.
    pub fn verify(
        prog: &Program,
        prog_type: ProgType,
        maps: &[MapDef],
        opts: &Options,
    ) -> (Report, Option<VerifiedProgram>) {
        let report = verify(prog, prog_type, maps, opts);
        if report.verdict != Verdict::Accepted {
            return (report, None);
        }
        let (ctx_size, ctx_writable, packet) = layout(prog_type);
        let v = VerifiedProgram {
            prog: prog.clone(),
            prog_type,
            maps: maps.to_vec(),
            ctx_size,
            ctx_writable,
            packet,
        };
        (report, Some(v))
    }

    /// The program that was verified.
    pub fn program(&self) -> &Program {
        &self.prog
    }

    /// The type it was verified as.
    pub fn prog_type(&self) -> ProgType {
        self.prog_type
    }

    /// The map definitions its map references were checked against.
    pub fn maps(&self) -> &[MapDef] {
        &self.maps
    }

    /// Bytes of the context the program may access (every readable or
    /// writable offset of the type's layout lies below this).
    pub fn ctx_size(&self) -> u32 {
        self.ctx_size
    }

    /// Whether the type lets programs write some context field.
    pub fn ctx_writable(&self) -> bool {
        self.ctx_writable
    }

    /// The context fields that the verifier takes as packet pointers.
    pub fn packet_fields(&self) -> Option<PacketFields> {
        self.packet
    }
}

type Layout = (u32, bool, Option<PacketFields>);

/// The extent of the context of `t`, whether it has writable fields, and
/// its packet-pointer fields, probed from the access rules the checker
/// applied (so they cannot disagree). The probe takes about 0.1 ms, so
/// each type's result is kept.
fn layout(t: ProgType) -> Layout {
    use std::collections::BTreeMap;
    use std::sync::Mutex;
    static CACHE: Mutex<BTreeMap<ProgType, Layout>> = Mutex::new(BTreeMap::new());
    if let Some(l) = CACHE.lock().unwrap_or_else(|e| e.into_inner()).get(&t) {
        return *l;
    }
    let l = probe(t);
    CACHE.lock().unwrap_or_else(|e| e.into_inner()).insert(t, l);
    l
}

fn probe(t: ProgType) -> Layout {
    let mut size = 0i64;
    let mut writable = false;
    let (mut data, mut end, mut meta) = (None, None, None);
    for off in 0..CTX_PROBE_LIMIT {
        for n in [1i64, 2, 4, 8] {
            let r = ctx::access(t, off, n, false);
            let w = ctx::access(t, off, n, true);
            if r.is_some() || w.is_some() {
                size = size.max(off + n);
            }
            writable |= w.is_some();
            if n == 4 {
                match r {
                    Some(CtxField::Ptr(PtrKind::Packet)) => data = Some(off as u32),
                    Some(CtxField::Ptr(PtrKind::PacketEnd)) => end = Some(off as u32),
                    Some(CtxField::Ptr(PtrKind::PacketMeta)) => meta = Some(off as u32),
                    _ => {}
                }
            }
        }
    }
    let packet = match (data, end) {
        (Some(data), Some(data_end)) => Some(PacketFields {
            data,
            data_end,
            data_meta: meta,
        }),
        _ => None,
    };
    (size as u32, writable, packet)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bpfkit_isa::asm::{assemble, Syntax};

    fn prog(src: &str) -> Program {
        Program::from_insns(assemble(src, Syntax::Ubpf).unwrap()).unwrap()
    }

    #[test]
    fn accepted_program_gives_a_token_with_the_xdp_layout() {
        let p = prog("ldxw %r0, [%r1+16]\nexit");
        let (report, v) = VerifiedProgram::verify(&p, ProgType::Xdp, &[], &Options::default());
        assert_eq!(report.verdict, Verdict::Accepted);
        let v = v.expect("accepted");
        assert_eq!(v.program(), &p);
        assert_eq!(v.ctx_size(), 20);
        assert!(!v.ctx_writable());
        assert_eq!(
            v.packet_fields(),
            Some(PacketFields {
                data: 0,
                data_end: 4,
                data_meta: Some(8)
            })
        );
    }

    #[test]
    fn rejected_program_gives_no_token() {
        // Reads past xdp_md.
        let p = prog("ldxw %r0, [%r1+64]\nexit");
        let (report, v) = VerifiedProgram::verify(&p, ProgType::Xdp, &[], &Options::default());
        assert_eq!(report.verdict, Verdict::Rejected);
        assert!(v.is_none());
    }
}
