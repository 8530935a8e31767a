//! [`MapError`]: what map operations fail with, and the kernel's errno for
//! each.

use bpfkit_abi::MapType;

/// Why a map operation failed. [`MapError::errno`] gives the errno the
/// kernel's `bpf()` (or helper) returns in the same situation, so callers
/// can compare with the kernel and print either form.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MapError {
    /// No element with this key (`ENOENT`); also an empty queue or stack,
    /// and the end of an iteration.
    #[error("no such element")]
    NotFound,
    /// The element exists and `BPF_NOEXIST` was given (`EEXIST`).
    #[error("element already exists")]
    Exists,
    /// The map holds `max_entries` elements already (`E2BIG`).
    #[error("map is full ({max_entries} entries)")]
    Full {
        /// The capacity.
        max_entries: u32,
    },
    /// An array index past the end (`E2BIG`).
    #[error("index {index} out of range (max_entries {max_entries})")]
    OutOfRange {
        /// The index.
        index: u32,
        /// The capacity.
        max_entries: u32,
    },
    /// A size or count above a kernel limit (`E2BIG`).
    #[error("too big: {what}")]
    TooBig {
        /// What is too big.
        what: &'static str,
    },
    /// Invalid argument (`EINVAL`): bad sizes, flags or keys.
    #[error("invalid argument: {what}")]
    Invalid {
        /// What is wrong.
        what: &'static str,
    },
    /// A buffer of the wrong length for this map (`EINVAL`).
    #[error("{what} of {got} bytes where the map takes {expected}")]
    BadLength {
        /// `"key"` or `"value"`.
        what: &'static str,
        /// The length given.
        got: usize,
        /// The length the map takes.
        expected: usize,
    },
    /// An LPM trie is full (`ENOSPC`).
    #[error("no space left in the trie ({max_entries} entries)")]
    NoSpace {
        /// The capacity.
        max_entries: u32,
    },
    /// Allocation failed (`ENOMEM`).
    #[error("out of memory")]
    NoMemory,
    /// The map type does not support this operation (`ENOTSUPP`, 524, as
    /// the kernel answers e.g. a lookup on a ring buffer).
    #[error("{op} is not supported on {map_type} maps")]
    NotSupported {
        /// The operation.
        op: &'static str,
        /// The map's type.
        map_type: MapType,
    },
    /// bpfkit does not implement this map type (`EINVAL`).
    #[error("map type {map_type} is not supported by bpfkit")]
    UnsupportedType {
        /// The type.
        map_type: MapType,
    },
    /// The map's access flags forbid this from the control side (`EPERM`).
    #[error("permission denied: {what}")]
    Permission {
        /// What was refused.
        what: &'static str,
    },
    /// A map id that names no map (`EBADF`, as a bad fd in the kernel).
    #[error("no map with id {id}")]
    BadId {
        /// The id.
        id: u32,
    },
    /// A ring buffer has no room (`EAGAIN` from `bpf_ringbuf_output`).
    #[error("no room in the ring buffer")]
    Again,
}

/// `ENOTSUPP`, the kernel-internal errno that `bpf()` returns to user
/// space for unsupported map operations (no libc constant exists).
pub const ENOTSUPP: i32 = 524;

impl MapError {
    /// The positive errno the kernel returns in the same case.
    pub fn errno(&self) -> i32 {
        match self {
            MapError::NotFound => 2,
            MapError::Exists => 17,
            MapError::Full { .. } | MapError::OutOfRange { .. } | MapError::TooBig { .. } => 7,
            MapError::Invalid { .. }
            | MapError::BadLength { .. }
            | MapError::UnsupportedType { .. } => 22,
            MapError::NoSpace { .. } => 28,
            MapError::NoMemory => 12,
            MapError::NotSupported { .. } => ENOTSUPP,
            MapError::Permission { .. } => 1,
            MapError::BadId { .. } => 9,
            MapError::Again => 11,
        }
    }

    /// What a helper returns to the program: `-errno` as a `u64`.
    pub fn to_helper_ret(&self) -> u64 {
        (-(self.errno() as i64)) as u64
    }
}
