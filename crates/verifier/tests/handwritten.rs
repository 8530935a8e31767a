//! Small hand-written programs with the verdict and message we expect,
//! each also loaded into the running kernel (where `bpf()` is permitted)
//! to check that the kernel's verdict is the same.
//!
//! Never add a program with an unbounded loop or a branch-free mask such as
//! `-(x & 1)` or `x s>> 63` inside a long loop to the kernel-checked cases:
//! this machine's kernel has a verifier bug on those.

use bpfkit_abi::{MapDef, MapType, ProgType};
use bpfkit_isa::{assemble, encode_all, Imm64, Insn, Program, Syntax};
use bpfkit_verifier::{verify, Options, Verdict};

mod common;

struct Case {
    name: &'static str,
    prog_type: ProgType,
    /// One map as map index 0 (see `map_def`).
    map: bool,
    /// Its type: an array (key 4, value 8) unless set.
    map_type: MapType,
    asm: &'static str,
    /// `None`: accepted; `Some((insn, message))`: rejected there with it.
    expect: Option<(usize, &'static str)>,
    /// Also load it into the kernel.
    kernel: bool,
    unprivileged: bool,
}

const fn ok(name: &'static str, prog_type: ProgType, asm: &'static str) -> Case {
    Case {
        name,
        prog_type,
        map: false,
        map_type: MapType::Array,
        asm,
        expect: None,
        kernel: true,
        unprivileged: false,
    }
}

const fn bad(
    name: &'static str,
    prog_type: ProgType,
    asm: &'static str,
    pc: usize,
    msg: &'static str,
) -> Case {
    Case {
        name,
        prog_type,
        map: false,
        map_type: MapType::Array,
        asm,
        expect: Some((pc, msg)),
        kernel: true,
        unprivileged: false,
    }
}

const MAP_PROLOGUE: &str =
    "r1 = 0\n*(u32 *)(r10 - 4) = r1\nr2 = r10\nr2 += -4\nld_pseudo r1, 0x5, 0x0\ncall 1\n";

fn cases() -> Vec<Case> {
    use ProgType::{SocketFilter as Sf, Xdp};
    let with_map = |mut c: Case| {
        c.map = true;
        c
    };
    let with_map_of = |t: MapType, mut c: Case| {
        c.map = true;
        c.map_type = t;
        c
    };
    let no_kernel = |mut c: Case| {
        c.kernel = false;
        c
    };
    let unpriv = |mut c: Case| {
        c.unprivileged = true;
        c.kernel = false;
        c
    };
    vec![
        ok("xdp_pass", Xdp, "r0 = 2\nexit\n"),
        ok("xdp_return_any_scalar", Xdp, "r0 = 100\nexit\n"),
        ok("xdp_return_pointer_privileged", Xdp, "r0 = r10\nexit\n"),
        ok("filter_return_unknown", Sf, "r0 = *(u32 *)(r1 + 0)\nexit\n"),
        bad("uninit_r0", Xdp, "exit\n", 0, "R0 !read_ok"),
        bad("write_r10", Xdp, "r10 = 0\nr0 = 0\nexit\n", 0, "frame pointer is read only"),
        bad(
            "stack_below_512",
            Xdp,
            "r0 = 0\n*(u64 *)(r10 - 520) = r0\nexit\n",
            1,
            "invalid write to stack R10 off=-520 size=8",
        ),
        bad(
            "stack_misaligned",
            Xdp,
            "r1 = 0\n*(u32 *)(r10 - 6) = r1\nr0 = 0\nexit\n",
            1,
            "misaligned stack access off 0+0+-6 size 4",
        ),
        with_map(ok(
            "array_const_key_never_null",
            Sf,
            "r1 = 0\n*(u32 *)(r10 - 4) = r1\nr2 = r10\nr2 += -4\nld_pseudo r1, 0x5, 0x0\ncall 1\nr0 = *(u64 *)(r0 + 0)\nexit\n",
        )),
        ok("stack_spill_fill", Xdp, "*(u64 *)(r10 - 8) = r1\nr1 = *(u64 *)(r10 - 8)\nr0 = *(u32 *)(r1 + 0)\nr0 = 2\nexit\n"),
        bad(
            "packet_unchecked",
            Xdp,
            "r2 = *(u32 *)(r1 + 0)\nr0 = *(u8 *)(r2 + 0)\nexit\n",
            1,
            "R2 offset is outside of the packet",
        ),
        ok(
            "packet_checked",
            Xdp,
            "r2 = *(u32 *)(r1 + 0)\nr3 = *(u32 *)(r1 + 4)\nr4 = r2\nr4 += 14\nr0 = 1\nif r4 > r3 goto L1\nr0 = *(u8 *)(r2 + 13)\nL1:\nexit\n",
        ),
        bad(
            "packet_one_past",
            Xdp,
            "r2 = *(u32 *)(r1 + 0)\nr3 = *(u32 *)(r1 + 4)\nr4 = r2\nr4 += 14\nr0 = 1\nif r4 > r3 goto L1\nr0 = *(u8 *)(r2 + 14)\nL1:\nexit\n",
            6,
            "R2 offset is outside of the packet",
        ),
        bad(
            "xdp_ctx_past_end",
            Xdp,
            "r0 = *(u32 *)(r1 + 24)\nexit\n",
            0,
            "invalid bpf_context access off=24 size=4",
        ),
        bad(
            "xdp_ctx_write",
            Xdp,
            "r2 = 0\n*(u32 *)(r1 + 12) = r2\nr0 = 0\nexit\n",
            1,
            "invalid bpf_context access off=12 size=4",
        ),
        ok("skb_narrow_protocol", Sf, "r0 = *(u16 *)(r1 + 16)\nexit\n"),
        bad(
            "skb_filter_no_data",
            Sf,
            "r0 = *(u32 *)(r1 + 76)\nexit\n",
            0,
            "invalid bpf_context access off=76 size=4",
        ),
        bad(
            "ctx_modified",
            Sf,
            "r1 += 8\nr0 = *(u32 *)(r1 + 0)\nexit\n",
            1,
            "dereference of modified ctx ptr R1 off=8 disallowed",
        ),
        with_map(bad(
            "map_value_no_null_check",
            Sf,
            // The key (1) is past the end: the lookup may fail.
            "r1 = 1\n*(u32 *)(r10 - 4) = r1\nr2 = r10\nr2 += -4\nld_pseudo r1, 0x5, 0x0\ncall 1\nr0 = *(u64 *)(r0 + 0)\nexit\n",
            7,
            "R0 invalid mem access 'map_value_or_null'",
        )),
        with_map(ok(
            "map_value_checked",
            Sf,
            "r1 = 0\n*(u32 *)(r10 - 4) = r1\nr2 = r10\nr2 += -4\nld_pseudo r1, 0x5, 0x0\ncall 1\nif r0 == 0 goto L1\nr0 = *(u64 *)(r0 + 0)\nL1:\nexit\n",
        )),
        with_map(bad(
            "map_value_past_end",
            Sf,
            "r1 = 0\n*(u32 *)(r10 - 4) = r1\nr2 = r10\nr2 += -4\nld_pseudo r1, 0x5, 0x0\ncall 1\nif r0 == 0 goto L1\nr0 = *(u64 *)(r0 + 4)\nL1:\nexit\n",
            8,
            "R0 min value is outside of the allowed memory range",
        )),
        with_map(ok(
            "map_value_variable_index",
            Sf,
            "r1 = 0\n*(u32 *)(r10 - 4) = r1\nr2 = r10\nr2 += -4\nld_pseudo r1, 0x5, 0x0\ncall 1\nif r0 == 0 goto L1\nr1 = *(u32 *)(r0 + 0)\nif r1 > 7 goto L1\nr0 += r1\nr0 = *(u8 *)(r0 + 0)\nL1:\nexit\n",
        )),
        with_map(bad(
            "map_value_variable_index_unbounded",
            Sf,
            "r1 = 0\n*(u32 *)(r10 - 4) = r1\nr2 = r10\nr2 += -4\nld_pseudo r1, 0x5, 0x0\ncall 1\nif r0 == 0 goto L1\nr1 = *(u32 *)(r0 + 0)\nif r1 > 8 goto L1\nr0 += r1\nr0 = *(u8 *)(r0 + 0)\nL1:\nexit\n",
            11,
            "R0 max value is outside of the allowed memory range",
        )),
        with_map(bad(
            "map_ptr_arith",
            Sf,
            "ld_pseudo r1, 0x5, 0x0\nr1 += 1\nr0 = 0\nexit\n",
            2,
            "R1 pointer arithmetic on map_ptr prohibited",
        )),
        bad("ptr_plus_ptr", Sf, "r2 = r10\nr2 += r1\nr0 = 0\nexit\n", 1, "R2 pointer += pointer prohibited"),
        bad("div_by_const_zero", Sf, "r0 = 1\nr0 /= 0\nexit\n", 1, "div by zero"),
        ok("div_by_reg_zero", Sf, "r0 = 1\nr1 = 0\nr0 /= r1\nexit\n"),
        bad("unknown_helper", Sf, "call 0x270f\nr0 = 0\nexit\n", 0, "invalid func unknown#9999"),
        bad(
            "helper_wrong_type",
            Sf,
            "call 0x9\nr0 = 0\nexit\n",
            0,
            "program of this type cannot use helper bpf_skb_store_bytes#9",
        ),
        ok("helper_clobbers_args", Xdp, "r6 = 1\ncall 0x5\nr0 = r6\nexit\n"),
        bad("helper_clobbers_r1", Xdp, "r1 = 1\ncall 0x5\nr0 = r1\nexit\n", 2, "R1 !read_ok"),
        ok("bounded_loop", Xdp, "r0 = 0\nr1 = 10\nL1:\nr0 += r1\nr1 += -1\nif r1 != 0 goto L1\nexit\n"),
        bad("unreachable", Xdp, "r0 = 0\nexit\nr0 = 1\nexit\n", 2, "unreachable insn 2"),
        bad("fall_off_end", Xdp, "r0 = 0\n", 0, "last insn is not an exit or jmp"),
        ok("bpf2bpf_call", Xdp, "r1 = 1\ncall f\nexit\nf:\nr0 = r1\nexit\n"),
        bad("bpf2bpf_callee_uninit", Xdp, "r1 = 1\ncall f\nexit\nf:\nr0 = r2\nexit\n", 3, "R2 !read_ok"),
        bad("bpf2bpf_r1_clobbered", Xdp, "r1 = 1\ncall f\nr0 = r1\nexit\nf:\nr0 = 0\nexit\n", 2, "R1 !read_ok"),
        bad(
            "pruning_keeps_unsafe_path",
            Xdp,
            "r0 = 0\nr2 = *(u32 *)(r1 + 0)\nr3 = *(u32 *)(r1 + 4)\nr4 = r2\nr4 += 8\nif r4 > r3 goto L1\nr0 = 1\nL1:\nr5 = *(u8 *)(r2 + 0)\nexit\n",
            7,
            "R2 offset is outside of the packet",
        ),
        bad("ptr_bitwise", Xdp, "r1 &= 0xff\nr0 = 0\nexit\n", 0, "R1 bitwise operator &= on pointer prohibited"),
        ok("pkt_len_alu32_sub", Xdp, "r2 = *(u32 *)(r1 + 4)\nr3 = *(u32 *)(r1 + 0)\nw2 -= w3\nr0 = r2\nexit\n"),
        ok("pkt_len_alu64_sub", Xdp, "r2 = *(u32 *)(r1 + 4)\nr3 = *(u32 *)(r1 + 0)\nr2 -= r3\nr0 = r2\nexit\n"),
        ok("ptr_sub_other_kind", Xdp, "r2 = r10\nr2 -= r1\nr0 = 0\nexit\n"),
        ok("scalar_sub_ptr_alu32", Xdp, "r3 = *(u32 *)(r1 + 0)\nw2 = 5\nw2 -= w3\nr0 = r2\nexit\n"),
        bad("scalar_sub_ptr_alu64", Xdp, "r2 = 1\nr2 -= r1\nr0 = 0\nexit\n", 1, "R2 tried to subtract pointer from scalar"),
        bad("scalar_add_ptr_alu32", Xdp, "w2 = 1\nw2 += w1\nr0 = 0\nexit\n", 1, "R2 32-bit pointer arithmetic prohibited"),
        bad("ptr_and_ptr", Xdp, "r2 = r10\nr2 &= r1\nr0 = 0\nexit\n", 1, "R2 pointer &= pointer prohibited"),
        bad("ptr_alu32_sub_result_unknown", Xdp, "w1 -= w1\nr0 = *(u8 *)(r1 + 0)\nexit\n", 1, "R1 invalid mem access 'scalar'"),
        unpriv(bad("ptr_sub_ptr_unprivileged", Sf, "r2 = r10\nr2 -= r1\nr0 = 0\nexit\n", 1, "R2 pointer -= pointer prohibited")),
        unpriv(bad("scalar_sub_ptr_alu32_unprivileged", Sf, "w2 = 1\nw2 -= w1\nr0 = 0\nexit\n", 1, "R2 32-bit pointer arithmetic prohibited")),
        unpriv(bad("ptr_alu32_sub_unprivileged", Sf, "w1 -= 1\nr0 = 0\nexit\n", 0, "R1 32-bit pointer arithmetic prohibited")),
        ok("ktime_get_coarse_ns", Xdp, "call 160\nexit\n"),
        with_map_of(MapType::Queue, ok(
            "queue_push",
            Xdp,
            "r1 = 0\n*(u64 *)(r10 - 8) = r1\nr2 = r10\nr2 += -8\nld_pseudo r1, 0x5, 0x0\nr3 = 0\ncall 87\nr0 = 2\nexit\n",
        )),
        with_map_of(MapType::Stack, ok(
            "stack_pop_then_read",
            Xdp,
            "r2 = r10\nr2 += -8\nld_pseudo r1, 0x5, 0x0\ncall 88\nr0 = *(u64 *)(r10 - 8)\nexit\n",
        )),
        with_map_of(MapType::Queue, ok(
            "queue_peek",
            Xdp,
            "r2 = r10\nr2 += -8\nld_pseudo r1, 0x5, 0x0\ncall 89\nr0 = 2\nexit\n",
        )),
        with_map(bad(
            "push_on_array",
            Xdp,
            "r1 = 0\n*(u64 *)(r10 - 8) = r1\nr2 = r10\nr2 += -8\nld_pseudo r1, 0x5, 0x0\nr3 = 0\ncall 87\nr0 = 2\nexit\n",
            7,
            "cannot pass map_type 2 into func bpf_map_push_elem#87",
        )),
        with_map_of(MapType::Devmap, ok(
            "devmap_lookup_read",
            Xdp,
            "r1 = 0\n*(u32 *)(r10 - 4) = r1\nr2 = r10\nr2 += -4\nld_pseudo r1, 0x5, 0x0\ncall 1\nif r0 == 0 goto +1\nr1 = *(u32 *)(r0 + 0)\nr0 = 2\nexit\n",
        )),
        with_map_of(MapType::Devmap, bad(
            "devmap_lookup_write",
            Xdp,
            "r1 = 0\n*(u32 *)(r10 - 4) = r1\nr2 = r10\nr2 += -4\nld_pseudo r1, 0x5, 0x0\ncall 1\nif r0 == 0 goto +2\nr1 = 0\n*(u32 *)(r0 + 0) = r1\nr0 = 2\nexit\n",
            9,
            "write into map forbidden, value_size=4 off=0 size=4",
        )),
        with_map_of(MapType::Devmap, bad(
            "devmap_lookup_past_end",
            Xdp,
            "r1 = 0\n*(u32 *)(r10 - 4) = r1\nr2 = r10\nr2 += -4\nld_pseudo r1, 0x5, 0x0\ncall 1\nif r0 == 0 goto +1\nr1 = *(u32 *)(r0 + 4)\nr0 = 2\nexit\n",
            8,
            "R0 min value is outside of the allowed memory range",
        )),
        with_map(ok(
            "narrow_spill_keeps_bound",
            Xdp,
            "r1 = 0\n*(u32 *)(r10 - 4) = r1\nr2 = r10\nr2 += -4\nld_pseudo r1, 0x5, 0x0\ncall 1\nif r0 == 0 goto +8\nr1 = *(u32 *)(r0 + 0)\n*(u32 *)(r10 - 8) = r1\nif w1 > 7 goto +5\nr2 = *(u32 *)(r10 - 8)\nr3 = r0\nr3 += r2\nr0 = *(u8 *)(r3 + 0)\nexit\nr0 = 0\nexit\n",
        )),
        with_map(bad(
            "narrow_spill_unaligned_not_kept",
            Xdp,
            "r1 = 0\n*(u32 *)(r10 - 4) = r1\nr2 = r10\nr2 += -4\nld_pseudo r1, 0x5, 0x0\ncall 1\nif r0 == 0 goto +8\nr1 = *(u32 *)(r0 + 0)\n*(u32 *)(r10 - 12) = r1\nif w1 > 7 goto +5\nr2 = *(u32 *)(r10 - 12)\nr3 = r0\nr3 += r2\nr0 = *(u8 *)(r3 + 0)\nexit\nr0 = 0\nexit\n",
            14,
            "R3 unbounded memory access, make sure to bounds check any such access",
        )),
        with_map(bad(
            "narrow_spill_of_wide_value_unlinked",
            Xdp,
            "r1 = 0\n*(u32 *)(r10 - 4) = r1\nr2 = r10\nr2 += -4\nld_pseudo r1, 0x5, 0x0\ncall 1\nif r0 == 0 goto +8\nr1 = *(u64 *)(r0 + 0)\n*(u32 *)(r10 - 8) = r1\nif r1 > 7 goto +5\nr2 = *(u32 *)(r10 - 8)\nr3 = r0\nr3 += r2\nr0 = *(u8 *)(r3 + 0)\nexit\nr0 = 0\nexit\n",
            14,
            "R3 unbounded memory access, make sure to bounds check any such access",
        )),
        with_map(ok(
            "mov32_links_narrow_value",
            Xdp,
            "r1 = 0\n*(u32 *)(r10 - 4) = r1\nr2 = r10\nr2 += -4\nld_pseudo r1, 0x5, 0x0\ncall 1\nif r0 == 0 goto +7\nr1 = *(u32 *)(r0 + 0)\nw2 = w1\nif w1 > 7 goto +4\nr3 = r0\nr3 += r2\nr0 = *(u8 *)(r3 + 0)\nexit\nr0 = 0\nexit\n",
        )),
        with_map(bad(
            "mov32_of_wide_value_unlinked",
            Xdp,
            "r1 = 0\n*(u32 *)(r10 - 4) = r1\nr2 = r10\nr2 += -4\nld_pseudo r1, 0x5, 0x0\ncall 1\nif r0 == 0 goto +7\nr1 = *(u64 *)(r0 + 0)\nw2 = w1\nif r1 > 7 goto +4\nr3 = r0\nr3 += r2\nr0 = *(u8 *)(r3 + 0)\nexit\nr0 = 0\nexit\n",
            13,
            "R3 unbounded memory access, make sure to bounds check any such access",
        )),
        bad("ptr_alu32", Xdp, "w1 += 8\nr0 = 0\nexit\n", 0, "R1 32-bit pointer arithmetic prohibited"),
        bad("pkt_end_arith", Xdp, "r2 = *(u32 *)(r1 + 4)\nr2 += 1\nr0 = 0\nexit\n", 1, "R2 pointer arithmetic on pkt_end prohibited"),
        bad("shift_too_far", Xdp, "r0 = 1\nr0 <<= 64\nexit\n", 1, "invalid shift 64"),
        ok(
            "stack_variable_offset",
            Sf,
            "r2 = 0\n*(u64 *)(r10 - 8) = r2\n*(u64 *)(r10 - 16) = r2\nr1 = *(u32 *)(r1 + 0)\nr1 &= 7\nr3 = r10\nr3 += -16\nr3 += r1\nr0 = *(u8 *)(r3 + 0)\nexit\n",
        ),
        bad(
            "stack_variable_offset_out",
            Sf,
            "r2 = 0\n*(u64 *)(r10 - 8) = r2\nr1 = *(u32 *)(r1 + 0)\nr1 &= 15\nr3 = r10\nr3 += -8\nr3 += r1\nr0 = *(u8 *)(r3 + 0)\nexit\n",
            7,
            "invalid variable-offset read from stack R3 var_off=(0x0; 0xf) off=-8 size=1",
        ),
        bad("callee_stack_leak", Xdp, "call f\nr0 = 0\nexit\nf:\nr0 = r10\nexit\n", 4, "cannot return stack pointer to the caller"),
        no_kernel(bad("infinite_loop", Xdp, "L1:\ngoto L1\n", 0, "infinite loop detected at insn 0")),
        // Precision tracking: each program reaches a join first with a
        // safe value, then with an unsafe one that differs only in a
        // scalar nothing had compared yet. Pruning the second path would
        // accept what the kernel rejects.
        bad(
            "precision_pointer_offset",
            Xdp,
            "call 7\nr6 = r0\nr7 = 4\nif r6 > 10 goto L1\ngoto L2\nL1:\nr7 = 8\nL2:\n\
             r1 = r10\nr1 += -8\nr1 += r7\nr0 = 0\n*(u8 *)(r1 + 0) = r0\nexit\n",
            10,
            "invalid write to stack R1 off=0 size=1",
        ),
        bad(
            "precision_through_spill_to_helper_size",
            Xdp,
            "call 7\nr6 = r0\nr7 = 8\nif r6 > 10 goto L1\ngoto L2\nL1:\nr7 = 16\nL2:\n\
             *(u64 *)(r10 - 16) = r7\nr8 = 0\n*(u64 *)(r10 - 8) = r8\nr2 = *(u64 *)(r10 - 16)\n\
             r1 = r10\nr1 += -8\nr3 = 0\nr4 = 0\nr5 = 0\ncall 28\nr0 = 2\nexit\n",
            15,
            "invalid read from stack R1 off=-8 size=16",
        ),
        bad(
            "precision_linked_bound",
            Xdp,
            "call 7\nr6 = r0\ncall 7\nr8 = r0\nif r8 > 5 goto L1\nr7 = r6\ngoto L2\nL1:\nr7 = r8\n\
             L2:\nif r7 > 7 goto L3\nr1 = r10\nr1 += -8\nr1 += r6\nr0 = 0\n*(u8 *)(r1 + 0) = r0\n\
             L3:\nr0 = 2\nexit\n",
            11,
            "math between fp pointer and register with unbounded min value is not allowed",
        ),
        bad(
            "precision_propagates_from_pruned_paths",
            Xdp,
            "call 7\nr6 = r0\ncall 7\nr8 = r0\nr7 = 0\nif r6 > 5 goto Y\ngoto J2\n\
             Y:\nif r8 > 5 goto Z\ngoto J1\nZ:\nr7 = 8\nJ1:\nr1 = 0\nr2 = 0\ngoto J2\n\
             J2:\nr1 = r10\nr1 += -8\nr1 += r7\nr0 = 0\n*(u8 *)(r1 + 0) = r0\nexit\n",
            17,
            "invalid write to stack R1 off=0 size=1",
        ),
        bad(
            "precision_decided_branch",
            Xdp,
            "call 7\nr6 = r0\nr7 = 0\nif r6 > 10 goto L1\ngoto L2\nL1:\nr7 = 1\nL2:\n\
             r1 = r10\nif r7 == 0 goto L3\nr1 += 8\nL3:\nr0 = 0\n*(u8 *)(r1 - 1) = r0\nexit\n",
            10,
            "invalid write to stack R1 off=7 size=1",
        ),
        bad(
            "stack_read_marks_keep_a_spill_compared",
            Xdp,
            "call 7\nr6 = r0\nr7 = 4\nif r6 > 10 goto L1\ngoto L2\nL1:\nr7 = 8\nL2:\n\
             *(u64 *)(r10 - 16) = r7\nr7 = 0\nr2 = 0\nif r6 > 20 goto L3\nr2 = 1\nL3:\n\
             r7 = *(u64 *)(r10 - 16)\nr1 = r10\nr1 += -8\nr1 += r7\nr0 = 0\n*(u8 *)(r1 + 0) = r0\nexit\n",
            16,
            "invalid write to stack R1 off=0 size=1",
        ),
        bad(
            "stack_read_marks_propagate_from_pruned_paths",
            Xdp,
            "call 7\nr6 = r0\ncall 7\nr8 = r0\nr7 = 0\n*(u64 *)(r10 - 16) = r7\nif r6 > 5 goto Y\ngoto J2\n\
             Y:\nif r8 > 5 goto Z\ngoto J1\nZ:\nr7 = 8\n*(u64 *)(r10 - 16) = r7\nJ1:\nr7 = 0\nr2 = 0\ngoto J2\n\
             J2:\nr7 = *(u64 *)(r10 - 16)\nr1 = r10\nr1 += -8\nr1 += r7\nr0 = 0\n*(u8 *)(r1 + 0) = r0\nexit\n",
            20,
            "invalid write to stack R1 off=0 size=1",
        ),
        bad(
            "precision_narrow_spill_against_unknown_bytes",
            Xdp,
            "call 7\nr6 = r0\nr7 = r6\nr7 &= 7\nif r6 > 10 goto L1\n\
             *(u32 *)(r10 - 4) = r6\n*(u32 *)(r10 - 8) = r7\ngoto L2\n\
             L1:\n*(u32 *)(r10 - 8) = r6\n*(u32 *)(r10 - 4) = r6\n\
             L2:\nr8 = *(u32 *)(r10 - 8)\nr1 = r10\nr1 += -16\nr1 += r8\nr0 = 0\n*(u8 *)(r1 + 0) = r0\nexit\n",
            15,
            "invalid unbounded variable-offset write to stack R1",
        ),
        ok(
            "precision_irrelevant_scalar_pruned",
            Xdp,
            "call 7\nr6 = r0\nr7 = 4\nif r6 > 10 goto L1\ngoto L2\nL1:\nr7 = 8\nL2:\n\
             r1 = r10\nr1 += -8\nr1 += r7\nr0 = 0\n*(u8 *)(r1 - 8) = r0\nr0 = r6\nexit\n",
        ),
        unpriv(bad(
            "loop_unprivileged",
            Xdp,
            "r0 = 0\nr1 = 10\nL1:\nr0 += r1\nr1 += -1\nif r1 != 0 goto L1\nexit\n",
            4,
            "back-edge from insn 4 to 2",
        )),
        unpriv(bad("leak_return", Xdp, "r0 = r10\nexit\n", 1, "R0 leaks addr as return value")),
        unpriv(with_map(bad(
            "leak_into_map",
            Sf,
            "r1 = 0\n*(u32 *)(r10 - 4) = r1\nr2 = r10\nr2 += -4\nld_pseudo r1, 0x5, 0x0\ncall 1\nif r0 == 0 goto L1\n*(u64 *)(r0 + 0) = r10\nL1:\nr0 = 0\nexit\n",
            8,
            "R10 leaks addr into map",
        ))),
        unpriv(with_map(bad(
            "leak_via_atomic_add",
            Sf,
            "r1 = 0\n*(u32 *)(r10 - 4) = r1\nr2 = r10\nr2 += -4\nld_pseudo r1, 0x5, 0x0\ncall 1\nif r0 == 0 goto L1\nr1 = r10\nlock *(u64 *)(r0 + 0) += r1\nL1:\nr0 = 0\nexit\n",
            9,
            "R1 leaks addr into mem",
        ))),
        unpriv(bad(
            "uninit_stack_unprivileged",
            Sf,
            "r0 = *(u64 *)(r10 - 8)\nexit\n",
            0,
            "invalid read from stack R10 off=-8 size=8",
        )),
    ]
    .into_iter()
    .chain(std::iter::once(ok(
        "uninit_stack_privileged",
        Sf,
        "r0 = *(u64 *)(r10 - 8)\nexit\n",
    )))
    .collect()
}

fn map_def(t: MapType) -> MapDef {
    match t {
        MapType::Queue | MapType::Stack => MapDef::new(t, 0, 8, 1),
        MapType::Devmap => MapDef::new(t, 4, 4, 1),
        _ => MapDef::new(t, 4, 8, 1),
    }
}

#[test]
fn hand_written_programs() {
    let _ = MAP_PROLOGUE;
    let kernel = match bpfkit_kernel::probe() {
        Ok(()) => true,
        Err(e) => {
            eprintln!("kernel comparison skipped: {e}");
            false
        }
    };
    let mut failures = Vec::new();
    let mut kernel_checked = 0;
    for c in cases() {
        let insns = assemble(c.asm, Syntax::Llvm).unwrap_or_else(|e| panic!("{}: {e}", c.name));
        let prog = Program::from_insns(insns.clone()).unwrap();
        let maps = if c.map {
            vec![map_def(c.map_type)]
        } else {
            vec![]
        };
        let opts = Options {
            unprivileged: c.unprivileged,
            ..Options::default()
        };
        let r = verify(&prog, c.prog_type, &maps, &opts);
        let got = r.error.as_ref().map(|e| (e.pc, e.message.as_str()));
        if got != c.expect {
            failures.push(format!(
                "{}: expected {:?}, got {:?}",
                c.name, c.expect, got
            ));
        }
        if !(kernel && c.kernel) {
            continue;
        }
        // The same program with map indexes turned into a real map's fd.
        let map = c.map.then(|| {
            let d = map_def(c.map_type);
            bpfkit_kernel::Map::create(&bpfkit_kernel::MapSpec {
                map_type: d.map_type as u32,
                key_size: d.key_size,
                value_size: d.value_size,
                max_entries: d.max_entries,
                ..Default::default()
            })
            .unwrap()
        });
        let kinsns: Vec<Insn> = insns
            .iter()
            .map(|i| match *i {
                Insn::LoadImm64 {
                    dst,
                    imm: Imm64::MapIdx(_),
                } => Insn::LoadImm64 {
                    dst,
                    imm: Imm64::MapFd(map.as_ref().unwrap().fd()),
                },
                other => other,
            })
            .collect();
        let bytes = encode_all(kinsns.iter());
        let load = bpfkit_kernel::ProgLoad::new(c.prog_type as u32, &bytes);
        let kernel_accepts = match load.load() {
            Ok(_) => true,
            Err(bpfkit_kernel::KernelError::Rejected { log, .. }) => {
                let last = bpfkit_kernel::rejection_message(&log);
                eprintln!("{}: kernel: {last}", c.name);
                if let Some((_, msg)) = c.expect {
                    if msg != last {
                        failures.push(format!("{}: kernel says [{last}], we say [{msg}]", c.name));
                    }
                }
                false
            }
            Err(e) => panic!("{}: {e}", c.name),
        };
        kernel_checked += 1;
        let ours = r.verdict == Verdict::Accepted;
        if ours != kernel_accepts {
            failures.push(format!(
                "{}: kernel {}, ours {}",
                c.name,
                if kernel_accepts { "accepts" } else { "rejects" },
                if ours { "accepts" } else { "rejects" }
            ));
        }
    }
    eprintln!("{kernel_checked} programs compared with the kernel");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Every context offset and size, read and written, for the context
/// layouts the checker models, against the kernel's verdicts.
#[test]
fn ctx_access_rules_match_kernel() {
    if let Err(e) = bpfkit_kernel::probe() {
        eprintln!("skipped: {e}");
        return;
    }
    let types = [
        ProgType::Xdp,
        ProgType::SocketFilter,
        ProgType::SchedCls,
        ProgType::SchedAct,
        ProgType::SockOps,
        ProgType::Kprobe,
    ];
    let mut diffs = Vec::new();
    let mut checked = 0;
    for t in types {
        for off in (0..232).step_by(1) {
            for (size, sname) in [(1, "u8"), (2, "u16"), (4, "u32"), (8, "u64")] {
                if off % size != 0 {
                    continue;
                }
                for write in [false, true] {
                    let text = if write {
                        format!("r2 = 0\n*({sname} *)(r1 + {off}) = r2\nr0 = 0\nexit\n")
                    } else {
                        format!("r0 = *({sname} *)(r1 + {off})\nr0 = 0\nexit\n")
                    };
                    let insns = assemble(&text, Syntax::Llvm).unwrap();
                    let prog = Program::from_insns(insns.clone()).unwrap();
                    let ours =
                        verify(&prog, t, &[], &Options::default()).verdict == Verdict::Accepted;
                    let bytes = encode_all(insns.iter());
                    let kernel = bpfkit_kernel::ProgLoad::new(t as u32, &bytes)
                        .load()
                        .is_ok();
                    checked += 1;
                    if ours != kernel {
                        diffs.push(format!(
                            "{} {} off={off} size={size}: kernel {}, ours {}",
                            t.name(),
                            if write { "write" } else { "read" },
                            if kernel { "accepts" } else { "rejects" },
                            if ours { "accepts" } else { "rejects" }
                        ));
                    }
                }
            }
        }
    }
    eprintln!(
        "{checked} context accesses compared, {} differ",
        diffs.len()
    );
    for d in &diffs {
        eprintln!("  {d}");
    }
    assert!(diffs.is_empty());
}

/// Which program types may call each helper of the prototype table,
/// against the kernel (a call with no arguments set up: both verifiers
/// check availability before arguments).
#[test]
fn helper_availability_matches_kernel() {
    if let Err(e) = bpfkit_kernel::probe() {
        eprintln!("skipped: {e}");
        return;
    }
    let types = [
        ProgType::Xdp,
        ProgType::SocketFilter,
        ProgType::SchedCls,
        ProgType::SchedAct,
        ProgType::Kprobe,
        ProgType::Tracepoint,
        ProgType::PerfEvent,
        ProgType::RawTracepoint,
        ProgType::SockOps,
        ProgType::CgroupSkb,
        ProgType::LwtXmit,
    ];
    let unavailable = |msg: &str| msg.contains("cannot use helper") || msg.contains("unknown func");
    let mut diffs = Vec::new();
    let mut checked = 0;
    for p in bpfkit_verifier::helpers::PROTOS {
        for t in types {
            let text = format!("call {:#x}\nr0 = 0\nexit\n", p.id);
            let insns = assemble(&text, Syntax::Llvm).unwrap();
            let prog = Program::from_insns(insns.clone()).unwrap();
            let ours = verify(&prog, t, &[], &Options::default())
                .error
                .is_some_and(|e| unavailable(&e.message));
            let bytes = encode_all(insns.iter());
            let kernel = match bpfkit_kernel::ProgLoad::new(t as u32, &bytes).load() {
                Ok(_) => false,
                Err(bpfkit_kernel::KernelError::Rejected { log, .. }) => unavailable(&log),
                Err(e) => panic!("{e}"),
            };
            checked += 1;
            if ours != kernel {
                diffs.push(format!(
                    "bpf_{}#{} in {}: kernel {}, ours {}",
                    p.name,
                    p.id,
                    t.name(),
                    if kernel { "refuses" } else { "allows" },
                    if ours { "refuses" } else { "allows" }
                ));
            }
        }
    }
    eprintln!(
        "{checked} (helper, type) pairs compared, {} differ",
        diffs.len()
    );
    for d in &diffs {
        eprintln!("  {d}");
    }
    assert!(diffs.is_empty());
}

/// Pruning soundness in loops, where precision tracking and read marks
/// matter most: random bounded loops whose bodies compute on context
/// values, branch forward, spill and fill, and access the stack at computed
/// offsets. Every program bpfkit accepts must run in the interpreter (which
/// checks every access) without a trap. (Interpreter only: this machine's
/// kernel must not get an open-ended stream of generated programs.)
#[test]
fn accepted_loop_programs_do_not_trap() {
    use bpfkit_isa::{AluOp, Cond, Reg, Size, Src, Width};
    use bpfkit_runtime::Helpers;
    use common::{trap_on_random_contexts, Rng};
    const REGS: [Reg; 5] = [Reg::R1, Reg::R2, Reg::R3, Reg::R4, Reg::R5];
    const CTX: [i16; 5] = [0, 8, 32, 48, 52];
    let alu = |op: AluOp, dst: Reg, src: Src| Insn::Alu {
        width: Width::W64,
        op,
        dst,
        src,
    };
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let helpers = Helpers::new();
    let (mut accepted, mut rejected, mut failures) = (0, 0, Vec::new());
    for n in 0..2500 {
        let mut insns = vec![alu(AluOp::Mov, Reg::R6, Src::Reg(Reg::R1))];
        for &r in &REGS {
            insns.push(Insn::Load {
                size: Size::W,
                sign_extend: false,
                dst: r,
                src: Reg::R6,
                off: CTX[rng.below(5) as usize],
            });
        }
        for k in 1..=8 {
            insns.push(Insn::Store {
                size: Size::DW,
                dst: Reg::R10,
                off: -8 * k,
                src: Src::Imm(0),
            });
        }
        insns.push(alu(AluOp::Mov, Reg::R0, Src::Imm(0)));
        insns.push(alu(AluOp::Mov, Reg::R9, Src::Imm(0)));
        let head = insns.len();
        // The body, as groups of instructions; a jump skips whole groups.
        let mut groups: Vec<Vec<Insn>> = Vec::new();
        for _ in 0..3 + rng.below(6) {
            let a = REGS[rng.below(5) as usize];
            let b = REGS[rng.below(5) as usize];
            let g = match rng.below(10) {
                0 => vec![alu(
                    AluOp::And,
                    a,
                    Src::Imm([7, 15, 63, 127][rng.below(4) as usize]),
                )],
                1 => vec![alu(
                    [AluOp::Add, AluOp::Sub, AluOp::Mov, AluOp::Or][rng.below(4) as usize],
                    a,
                    Src::Reg(b),
                )],
                2 => vec![alu(
                    [AluOp::Add, AluOp::Mov, AluOp::Rsh, AluOp::Xor][rng.below(4) as usize],
                    a,
                    Src::Imm(rng.below(9) as i32),
                )],
                3 => vec![Insn::Store {
                    size: Size::DW,
                    dst: Reg::R10,
                    off: -8 * (1 + rng.below(8) as i16),
                    src: Src::Reg(a),
                }],
                4 => vec![Insn::Load {
                    size: Size::DW,
                    sign_extend: false,
                    dst: a,
                    src: Reg::R10,
                    off: -8 * (1 + rng.below(8) as i16),
                }],
                5 => vec![
                    alu(AluOp::Mov, Reg::R7, Src::Reg(Reg::R10)),
                    alu(AluOp::Add, Reg::R7, Src::Imm(-64)),
                    alu(AluOp::Add, Reg::R7, Src::Reg(a)),
                    Insn::Store {
                        size: Size::B,
                        dst: Reg::R7,
                        off: 0,
                        src: Src::Reg(Reg::R9),
                    },
                ],
                // Narrow spills and fills, at and beside a slot's start.
                6 => vec![Insn::Store {
                    size: Size::W,
                    dst: Reg::R10,
                    off: -8 * (1 + rng.below(8) as i16) + 4 * rng.below(2) as i16,
                    src: Src::Reg(a),
                }],
                7 => vec![Insn::Load {
                    size: Size::W,
                    sign_extend: false,
                    dst: a,
                    src: Reg::R10,
                    off: -8 * (1 + rng.below(8) as i16) + 4 * rng.below(2) as i16,
                }],
                // A branch; its offset is set below.
                _ => vec![Insn::Jmp {
                    width: Width::W64,
                    cond: [Cond::Gt, Cond::Lt, Cond::Eq, Cond::Ne][rng.below(4) as usize],
                    dst: a,
                    src: if rng.below(2) == 0 {
                        Src::Imm(rng.below(80) as i32)
                    } else {
                        Src::Reg(b)
                    },
                    off: 0,
                }],
            };
            groups.push(g);
        }
        let count = groups.len();
        // A jump skips up to the rest of the body (to the counter's
        // increment).
        for i in 0..count {
            if !matches!(groups[i].first(), Some(Insn::Jmp { .. })) {
                continue;
            }
            let skip = rng.below((count - i) as u64) as usize;
            let len: usize = groups[i + 1..i + 1 + skip].iter().map(|g| g.len()).sum();
            if let Some(Insn::Jmp { off, .. }) = groups[i].first_mut() {
                *off = len as i16;
            }
        }
        for g in groups {
            insns.extend(g);
        }
        insns.push(alu(AluOp::Add, Reg::R9, Src::Imm(1)));
        let back = head as i64 - insns.len() as i64 - 1;
        insns.push(Insn::Jmp {
            width: Width::W64,
            cond: Cond::Lt,
            dst: Reg::R9,
            src: Src::Imm(2 + rng.below(5) as i32),
            off: back as i16,
        });
        insns.push(alu(AluOp::Mov, Reg::R0, Src::Imm(0)));
        insns.push(Insn::Exit);
        let prog = Program::from_insns(insns).unwrap();
        let r = verify(&prog, ProgType::SocketFilter, &[], &Options::default());
        if r.verdict == Verdict::Rejected {
            rejected += 1;
            continue;
        }
        accepted += 1;
        if let Some(t) = trap_on_random_contexts(&prog, &helpers, &mut rng) {
            failures.push(format!("program {n}: {t}"));
        }
        if failures.len() > 3 {
            break;
        }
    }
    eprintln!("loops: {accepted} accepted, {rejected} rejected");
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    assert!(accepted > 300 && rejected > 300, "{accepted} / {rejected}");
}
