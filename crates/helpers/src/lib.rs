//! # bpfkit-helpers
//!
//! BPF helper functions with the kernel's ids and semantics, registered
//! into a [`bpfkit_runtime::Helpers`] registry with [`register`]. Each
//! helper finds the run's state in the per-run data of the engine
//! ([`RunState`], passed to `run_with_data`): the maps a program may name
//! ([`MapTable`]), the pinned map epoch, the CPU number, the XDP buffer
//! ([`XdpBuff`]), and what the run produced (trace lines, a tail call
//! target, a redirect).
//!
//! | id | helper | notes |
//! |---|---|---|
//! | 1-3 | `map_lookup_elem`, `map_update_elem`, `map_delete_elem` | values in place (a guest region per value), inner maps of map-in-maps, devmap values read-only |
//! | 5, 125, 160 | `ktime_get_ns`, `ktime_get_boot_ns`, `ktime_get_coarse_ns` | the embedder's [`Clock`] (`CLOCK_MONOTONIC`, `_BOOTTIME`, `_MONOTONIC_COARSE`), else [`fallback_clock`] |
//! | 6 | `trace_printk` | the kernel's format rules (`printk` module); lines kept in [`RunState::trace`] |
//! | 7, 8 | `get_prandom_u32`, `get_smp_processor_id` | |
//! | 12 | `tail_call` | [`MAX_TAIL_CALL_CNT`] counted before the slot is read; the embedder runs [`RunState::tail_call`] |
//! | 23, 51 | `redirect`, `redirect_map` | XDP flavours: [`RunState::redirect`] |
//! | 25 | `perf_event_output` | XDP flavour: packet bytes from the upper flag bits |
//! | 28 | `csum_diff` | |
//! | 44, 54, 65 | `xdp_adjust_head`, `xdp_adjust_meta`, `xdp_adjust_tail` | limits of `net/core/filter.c`; the context's fields are rewritten |
//! | 87-89 | `map_push_elem`, `map_pop_elem`, `map_peek_elem` | |
//! | 130-134 | `ringbuf_output`, `_reserve`, `_submit`, `_discard`, `_query` | |
//! | 164 | `for_each_map_elem` | run by the engines, the map walked by a step helper (`FOR_EACH_MAP_ELEM_STEP`): arrays by index, hash maps in bpfkit's bucket order (`callbacks` module) |
//! | 181 | `loop` | run by the engines themselves (a callback is a bpf-to-bpf call): registered with `Helpers::register_callback`, rules in `bpfkit_runtime::callback` |
//! | 188-190 | `xdp_get_buff_len`, `xdp_load_bytes`, `xdp_store_bytes` | across the fragments of multi-buffer packets |
//!
//! Return codes are the kernel's (`-EINVAL`, `-ENOENT`, ...). A helper
//! given something the kernel's verifier would have refused (an address
//! that is not a map, unreadable memory) stops the program with a trap.
//!
//! ```
//! use bpfkit_runtime::Helpers;
//! let mut helpers = Helpers::new();
//! bpfkit_helpers::register(&mut helpers);
//! assert!(helpers.get(bpfkit_helpers::ids::MAP_LOOKUP_ELEM).is_some());
//! ```
#![deny(missing_docs)]
#![deny(unsafe_code)]

mod callbacks;
mod maps;
mod misc;
pub mod printk;
#[allow(unsafe_code)]
mod region;
mod state;
#[cfg(test)]
mod tests;
mod xdp;

pub use misc::{csum_add, fallback_clock, Clock, ClockId};
pub use state::{MapTable, Redirect, RunState, XdpBuff, MAX_SKB_FRAGS, MAX_TAIL_CALL_CNT};
pub use xdp::{
    ETH_HLEN, FRAG_SIZE, XDP_FRAME_SIZE, XDP_META_MAX, XDP_PACKET_HEADROOM, XDP_TAILROOM,
};

use bpfkit_runtime::{Callback, Guest, HelperAbort, HelperEnv, HelperResult, Helpers, TypedBody};

/// Helper ids (`enum bpf_func_id` in `include/uapi/linux/bpf.h`).
pub mod ids {
    /// `bpf_map_lookup_elem`.
    pub const MAP_LOOKUP_ELEM: u32 = 1;
    /// `bpf_map_update_elem`.
    pub const MAP_UPDATE_ELEM: u32 = 2;
    /// `bpf_map_delete_elem`.
    pub const MAP_DELETE_ELEM: u32 = 3;
    /// `bpf_ktime_get_ns`.
    pub const KTIME_GET_NS: u32 = 5;
    /// `bpf_trace_printk`.
    pub const TRACE_PRINTK: u32 = 6;
    /// `bpf_get_prandom_u32`.
    pub const GET_PRANDOM_U32: u32 = 7;
    /// `bpf_get_smp_processor_id`.
    pub const GET_SMP_PROCESSOR_ID: u32 = 8;
    /// `bpf_tail_call`.
    pub const TAIL_CALL: u32 = 12;
    /// `bpf_redirect`.
    pub const REDIRECT: u32 = 23;
    /// `bpf_perf_event_output`.
    pub const PERF_EVENT_OUTPUT: u32 = 25;
    /// `bpf_csum_diff`.
    pub const CSUM_DIFF: u32 = 28;
    /// `bpf_xdp_adjust_head`.
    pub const XDP_ADJUST_HEAD: u32 = 44;
    /// `bpf_redirect_map`.
    pub const REDIRECT_MAP: u32 = 51;
    /// `bpf_xdp_adjust_meta`.
    pub const XDP_ADJUST_META: u32 = 54;
    /// `bpf_xdp_adjust_tail`.
    pub const XDP_ADJUST_TAIL: u32 = 65;
    /// `bpf_map_push_elem`.
    pub const MAP_PUSH_ELEM: u32 = 87;
    /// `bpf_map_pop_elem`.
    pub const MAP_POP_ELEM: u32 = 88;
    /// `bpf_map_peek_elem`.
    pub const MAP_PEEK_ELEM: u32 = 89;
    /// `bpf_ktime_get_boot_ns`.
    pub const KTIME_GET_BOOT_NS: u32 = 125;
    /// `bpf_ringbuf_output`.
    pub const RINGBUF_OUTPUT: u32 = 130;
    /// `bpf_ringbuf_reserve`.
    pub const RINGBUF_RESERVE: u32 = 131;
    /// `bpf_ringbuf_submit`.
    pub const RINGBUF_SUBMIT: u32 = 132;
    /// `bpf_ringbuf_discard`.
    pub const RINGBUF_DISCARD: u32 = 133;
    /// `bpf_ringbuf_query`.
    pub const RINGBUF_QUERY: u32 = 134;
    /// `bpf_ktime_get_coarse_ns`.
    pub const KTIME_GET_COARSE_NS: u32 = 160;
    /// `bpf_for_each_map_elem`.
    pub const FOR_EACH_MAP_ELEM: u32 = 164;
    /// The step of `bpf_for_each_map_elem` that the engines call
    /// (`bpfkit_runtime::Callback::Steps`; no kernel helper has this id).
    pub const FOR_EACH_MAP_ELEM_STEP: u32 = 0x8000_0000 | FOR_EACH_MAP_ELEM;
    /// `bpf_loop`.
    pub const LOOP: u32 = 181;
    /// `bpf_xdp_get_buff_len`.
    pub const XDP_GET_BUFF_LEN: u32 = 188;
    /// `bpf_xdp_load_bytes`.
    pub const XDP_LOAD_BYTES: u32 = 189;
    /// `bpf_xdp_store_bytes`.
    pub const XDP_STORE_BYTES: u32 = 190;
}

pub(crate) const ENOENT: i32 = 2;
pub(crate) const EFAULT: i32 = 14;
pub(crate) const EACCES: i32 = 13;
pub(crate) const EINVAL: i32 = 22;
pub(crate) const EOPNOTSUPP: i32 = 95;

/// `-e` as a 64-bit helper return value.
pub(crate) fn errno(e: i32) -> u64 {
    (-(e as i64)) as u64
}

/// What a helper body works with: the run's guest memory and its
/// [`RunState`], both borrowed directly. The engines that run with a
/// `RunState` (the facade's JIT path) call the bodies through their typed
/// entries without any downcast; the registry's `Helper` objects find the
/// state with one downcast per call (`Helpers::register_typed`).
pub(crate) struct Env<'e, 'r, 'a> {
    guest: &'e mut Guest<'r, 'a>,
    state: &'e mut RunState,
}

impl<'r, 'a> Env<'_, 'r, 'a> {
    /// Guest memory, with the program's own checks.
    #[inline(always)]
    pub(crate) fn guest(&mut self) -> &mut Guest<'r, 'a> {
        self.guest
    }

    /// The run's state.
    #[inline(always)]
    pub(crate) fn state(&mut self) -> &mut RunState {
        self.state
    }

    /// Guest memory and the run's state at once.
    #[inline(always)]
    pub(crate) fn split(&mut self) -> (&mut Guest<'r, 'a>, &mut RunState) {
        (self.guest, self.state)
    }
}

/// The abort of a helper run without a [`RunState`].
const NO_STATE: &str = "no bpfkit-helpers RunState for this run";

/// Registers a helper body as a [`TypedBody`] for [`RunState`] (engines that
/// call it directly with the run's `RunState`, and JITs that call its own
/// direct entry from generated code, `bpfkit_runtime::raw`) and, for the
/// others, as a closure that finds the state (one downcast) and calls the
/// same body. One type per helper, so that each direct entry is a function
/// of its own with the body inlined into it.
macro_rules! typed {
    ($helpers:expr, $id:expr, $body:expr) => {{
        struct Body;
        impl TypedBody<RunState> for Body {
            #[inline(always)]
            fn call(g: &mut Guest<'_, '_>, st: &mut RunState, a: [u64; 5]) -> HelperResult {
                $body(
                    &mut Env {
                        guest: g,
                        state: st,
                    },
                    a,
                )
            }
        }
        $helpers.register_body::<RunState, Body, _>(
            $id,
            |e: &mut HelperEnv<'_, '_>, a: [u64; 5]| match e.split_mut::<RunState>() {
                (g, Some(st)) => Body::call(g, st, a),
                (_, None) => Err(HelperAbort::Failed(NO_STATE.into())),
            },
        );
    }};
}

/// Registers every helper of this crate into `helpers`.
pub fn register(helpers: &mut Helpers) {
    use ids::*;
    typed!(helpers, MAP_LOOKUP_ELEM, maps::lookup);
    typed!(helpers, MAP_UPDATE_ELEM, maps::update);
    typed!(helpers, MAP_DELETE_ELEM, maps::delete);
    typed!(helpers, KTIME_GET_NS, misc::ktime);
    typed!(helpers, KTIME_GET_BOOT_NS, misc::ktime_boot);
    typed!(helpers, KTIME_GET_COARSE_NS, misc::ktime_coarse);
    typed!(helpers, TRACE_PRINTK, printk::trace_printk);
    typed!(helpers, GET_PRANDOM_U32, misc::prandom);
    typed!(helpers, GET_SMP_PROCESSOR_ID, misc::cpu);
    typed!(helpers, TAIL_CALL, xdp::tail_call);
    typed!(helpers, REDIRECT, xdp::redirect);
    typed!(helpers, REDIRECT_MAP, xdp::redirect_map);
    typed!(helpers, PERF_EVENT_OUTPUT, xdp::perf_event_output);
    typed!(helpers, CSUM_DIFF, misc::csum_diff);
    typed!(helpers, XDP_ADJUST_HEAD, xdp::adjust_head);
    typed!(helpers, XDP_ADJUST_META, xdp::adjust_meta);
    typed!(helpers, XDP_ADJUST_TAIL, xdp::adjust_tail);
    typed!(helpers, MAP_PUSH_ELEM, maps::push);
    typed!(helpers, MAP_POP_ELEM, |e: &mut Env<'_, '_, '_>, a| {
        maps::pop_or_peek(e, a, true)
    });
    typed!(helpers, MAP_PEEK_ELEM, |e: &mut Env<'_, '_, '_>, a| {
        maps::pop_or_peek(e, a, false)
    });
    typed!(helpers, RINGBUF_OUTPUT, maps::ringbuf_output);
    typed!(helpers, RINGBUF_RESERVE, maps::ringbuf_reserve);
    typed!(helpers, RINGBUF_SUBMIT, |e: &mut Env<'_, '_, '_>, a| {
        maps::ringbuf_commit(e, a, false)
    });
    typed!(helpers, RINGBUF_DISCARD, |e: &mut Env<'_, '_, '_>, a| {
        maps::ringbuf_commit(e, a, true)
    });
    typed!(helpers, RINGBUF_QUERY, maps::ringbuf_query);
    typed!(helpers, XDP_GET_BUFF_LEN, xdp::get_buff_len);
    typed!(helpers, XDP_LOAD_BYTES, xdp::load_bytes);
    typed!(helpers, XDP_STORE_BYTES, xdp::store_bytes);
    helpers.register_callback(LOOP, Callback::Loop);
    typed!(helpers, FOR_EACH_MAP_ELEM_STEP, callbacks::for_each_step);
    helpers.register_callback(
        FOR_EACH_MAP_ELEM,
        Callback::Steps {
            step: FOR_EACH_MAP_ELEM_STEP,
        },
    );
}
