//! Map descriptions: [`MapType`], [`MapDef`] and flag constants.

use crate::UnknownValue;
use std::fmt;

macro_rules! map_types {
    ($($(#[$doc:meta])* $variant:ident = $num:literal, $alias:literal, $name:literal;)*) => {
        /// A kernel map type (`enum bpf_map_type`), numbered as the kernel
        /// numbers them. [`MapType::name`] is the name bpftool prints.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[non_exhaustive]
        #[repr(u32)]
        pub enum MapType {
            $($(#[$doc])* #[doc(alias = $alias)] $variant = $num,)*
        }

        impl MapType {
            /// Every map type, in kernel order.
            pub const ALL: &'static [MapType] = &[$(MapType::$variant,)*];

            /// The name bpftool prints (`hash`, `lru_percpu_hash`, ...).
            pub fn name(self) -> &'static str {
                match self { $(MapType::$variant => $name,)* }
            }

            /// The kernel's constant name (`BPF_MAP_TYPE_HASH`).
            pub fn kernel_name(self) -> &'static str {
                match self { $(MapType::$variant => $alias,)* }
            }

            /// The type whose bpftool name is `name`.
            pub fn from_name(name: &str) -> Option<MapType> {
                match name { $($name => Some(MapType::$variant),)* _ => None }
            }
        }

        impl TryFrom<u32> for MapType {
            type Error = UnknownValue;
            fn try_from(v: u32) -> Result<MapType, UnknownValue> {
                match v {
                    $($num => Ok(MapType::$variant),)*
                    _ => Err(UnknownValue { kind: "map type", value: v }),
                }
            }
        }
    };
}

map_types! {
    /// Not a usable type (0).
    Unspec = 0, "BPF_MAP_TYPE_UNSPEC", "unspec";
    /// Hash table.
    Hash = 1, "BPF_MAP_TYPE_HASH", "hash";
    /// Array indexed by a `u32`.
    Array = 2, "BPF_MAP_TYPE_ARRAY", "array";
    /// Program array for tail calls.
    ProgArray = 3, "BPF_MAP_TYPE_PROG_ARRAY", "prog_array";
    /// Per-CPU perf event buffers.
    PerfEventArray = 4, "BPF_MAP_TYPE_PERF_EVENT_ARRAY", "perf_event_array";
    /// Hash table with one value per CPU.
    PercpuHash = 5, "BPF_MAP_TYPE_PERCPU_HASH", "percpu_hash";
    /// Array with one value per CPU.
    PercpuArray = 6, "BPF_MAP_TYPE_PERCPU_ARRAY", "percpu_array";
    /// Stack traces.
    StackTrace = 7, "BPF_MAP_TYPE_STACK_TRACE", "stack_trace";
    /// Cgroup array.
    CgroupArray = 8, "BPF_MAP_TYPE_CGROUP_ARRAY", "cgroup_array";
    /// Hash table evicting the least recently used element when full.
    LruHash = 9, "BPF_MAP_TYPE_LRU_HASH", "lru_hash";
    /// Per-CPU LRU hash table.
    LruPercpuHash = 10, "BPF_MAP_TYPE_LRU_PERCPU_HASH", "lru_percpu_hash";
    /// Longest-prefix-match trie.
    LpmTrie = 11, "BPF_MAP_TYPE_LPM_TRIE", "lpm_trie";
    /// Array whose values are maps.
    ArrayOfMaps = 12, "BPF_MAP_TYPE_ARRAY_OF_MAPS", "array_of_maps";
    /// Hash table whose values are maps.
    HashOfMaps = 13, "BPF_MAP_TYPE_HASH_OF_MAPS", "hash_of_maps";
    /// Array of network devices (redirect targets).
    Devmap = 14, "BPF_MAP_TYPE_DEVMAP", "devmap";
    /// Socket map.
    Sockmap = 15, "BPF_MAP_TYPE_SOCKMAP", "sockmap";
    /// CPU map (redirect to CPUs).
    Cpumap = 16, "BPF_MAP_TYPE_CPUMAP", "cpumap";
    /// AF_XDP socket map.
    Xskmap = 17, "BPF_MAP_TYPE_XSKMAP", "xskmap";
    /// Socket hash.
    Sockhash = 18, "BPF_MAP_TYPE_SOCKHASH", "sockhash";
    /// Cgroup storage.
    CgroupStorage = 19, "BPF_MAP_TYPE_CGROUP_STORAGE", "cgroup_storage";
    /// Reuseport socket array.
    ReuseportSockarray = 20, "BPF_MAP_TYPE_REUSEPORT_SOCKARRAY", "reuseport_sockarray";
    /// Per-CPU cgroup storage.
    PercpuCgroupStorage = 21, "BPF_MAP_TYPE_PERCPU_CGROUP_STORAGE", "percpu_cgroup_storage";
    /// FIFO queue (no keys).
    Queue = 22, "BPF_MAP_TYPE_QUEUE", "queue";
    /// LIFO stack (no keys).
    Stack = 23, "BPF_MAP_TYPE_STACK", "stack";
    /// Socket-local storage.
    SkStorage = 24, "BPF_MAP_TYPE_SK_STORAGE", "sk_storage";
    /// Hash of network devices (redirect targets).
    DevmapHash = 25, "BPF_MAP_TYPE_DEVMAP_HASH", "devmap_hash";
    /// Struct ops.
    StructOps = 26, "BPF_MAP_TYPE_STRUCT_OPS", "struct_ops";
    /// Ring buffer shared by all CPUs.
    Ringbuf = 27, "BPF_MAP_TYPE_RINGBUF", "ringbuf";
    /// Inode storage.
    InodeStorage = 28, "BPF_MAP_TYPE_INODE_STORAGE", "inode_storage";
    /// Task storage.
    TaskStorage = 29, "BPF_MAP_TYPE_TASK_STORAGE", "task_storage";
    /// Bloom filter.
    BloomFilter = 30, "BPF_MAP_TYPE_BLOOM_FILTER", "bloom_filter";
    /// User-space-produced ring buffer.
    UserRingbuf = 31, "BPF_MAP_TYPE_USER_RINGBUF", "user_ringbuf";
    /// Cgroup storage (new style).
    CgrpStorage = 32, "BPF_MAP_TYPE_CGRP_STORAGE", "cgrp_storage";
    /// Arena.
    Arena = 33, "BPF_MAP_TYPE_ARENA", "arena";
}

impl MapType {
    /// Whether lookups give one value per possible CPU.
    pub fn is_percpu(self) -> bool {
        matches!(
            self,
            MapType::PercpuHash
                | MapType::PercpuArray
                | MapType::LruPercpuHash
                | MapType::PercpuCgroupStorage
        )
    }

    /// Whether values are other maps (map-in-map).
    pub fn is_map_in_map(self) -> bool {
        matches!(self, MapType::ArrayOfMaps | MapType::HashOfMaps)
    }

    /// Whether keys are `u32` indexes into a fixed array of slots.
    pub fn is_array_like(self) -> bool {
        matches!(
            self,
            MapType::Array
                | MapType::PercpuArray
                | MapType::ProgArray
                | MapType::PerfEventArray
                | MapType::CgroupArray
                | MapType::ArrayOfMaps
                | MapType::Devmap
        )
    }
}

impl fmt::Display for MapType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Map creation flags (`map_flags` of `BPF_MAP_CREATE`).
pub mod map_flags {
    /// Hash tables: allocate elements on demand instead of up front
    /// (required for LPM tries).
    #[doc(alias = "BPF_F_NO_PREALLOC")]
    pub const NO_PREALLOC: u32 = 1 << 0;
    /// LRU hashes: one LRU list per CPU instead of a common one.
    #[doc(alias = "BPF_F_NO_COMMON_LRU")]
    pub const NO_COMMON_LRU: u32 = 1 << 1;
    /// `numa_node` is set.
    #[doc(alias = "BPF_F_NUMA_NODE")]
    pub const NUMA_NODE: u32 = 1 << 2;
    /// Read-only from the syscall side.
    #[doc(alias = "BPF_F_RDONLY")]
    pub const RDONLY: u32 = 1 << 3;
    /// Write-only from the syscall side.
    #[doc(alias = "BPF_F_WRONLY")]
    pub const WRONLY: u32 = 1 << 4;
    /// Stack trace maps store build ids.
    #[doc(alias = "BPF_F_STACK_BUILD_ID")]
    pub const STACK_BUILD_ID: u32 = 1 << 5;
    /// Hash tables: hash seed zero (tests only).
    #[doc(alias = "BPF_F_ZERO_SEED")]
    pub const ZERO_SEED: u32 = 1 << 6;
    /// Read-only from programs.
    #[doc(alias = "BPF_F_RDONLY_PROG")]
    pub const RDONLY_PROG: u32 = 1 << 7;
    /// Write-only from programs.
    #[doc(alias = "BPF_F_WRONLY_PROG")]
    pub const WRONLY_PROG: u32 = 1 << 8;
    /// Clone map from listener for newly accepted socket.
    #[doc(alias = "BPF_F_CLONE")]
    pub const CLONE: u32 = 1 << 9;
    /// Arrays: memory-mappable.
    #[doc(alias = "BPF_F_MMAPABLE")]
    pub const MMAPABLE: u32 = 1 << 10;
    /// Perf event arrays: keep elements when the creating file closes.
    #[doc(alias = "BPF_F_PRESERVE_ELEMS")]
    pub const PRESERVE_ELEMS: u32 = 1 << 11;
    /// Inner maps: `max_entries` may differ between inner maps.
    #[doc(alias = "BPF_F_INNER_MAP")]
    pub const INNER_MAP: u32 = 1 << 12;
    /// The four access flags (`BPF_F_ACCESS_MASK`).
    #[doc(alias = "BPF_F_ACCESS_MASK")]
    pub const ACCESS_MASK: u32 = RDONLY | RDONLY_PROG | WRONLY | WRONLY_PROG;
}

/// Flags of element updates (`BPF_MAP_UPDATE_ELEM`, `bpf_map_update_elem`).
pub mod update_flags {
    /// Create a new element or update an existing one.
    #[doc(alias = "BPF_ANY")]
    pub const ANY: u64 = 0;
    /// Create a new element only (`EEXIST` otherwise).
    #[doc(alias = "BPF_NOEXIST")]
    pub const NOEXIST: u64 = 1;
    /// Update an existing element only (`ENOENT` otherwise). Queues and
    /// stacks: overwrite the oldest element when full.
    #[doc(alias = "BPF_EXIST")]
    pub const EXIST: u64 = 2;
    /// Take the value's `bpf_spin_lock` while copying.
    #[doc(alias = "BPF_F_LOCK")]
    pub const LOCK: u64 = 4;
}

/// Everything needed to create a map: the fields of `BPF_MAP_CREATE`
/// (and of a legacy `struct bpf_map_def` or a BTF `.maps` entry).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapDef {
    /// The type.
    pub map_type: MapType,
    /// Key size in bytes (0 for queues, stacks, ring buffers).
    pub key_size: u32,
    /// Value size in bytes (0 for ring buffers).
    pub value_size: u32,
    /// Capacity (ring buffers: data size in bytes).
    pub max_entries: u32,
    /// Creation flags ([`map_flags`]).
    pub map_flags: u32,
    /// For map-in-map types, the template every inner map must match.
    pub inner: Option<Box<MapDef>>,
    /// Name (the kernel keeps at most 15 bytes).
    pub name: String,
}

impl MapDef {
    /// A definition with no flags, no inner map and no name.
    pub fn new(map_type: MapType, key_size: u32, value_size: u32, max_entries: u32) -> MapDef {
        MapDef {
            map_type,
            key_size,
            value_size,
            max_entries,
            map_flags: 0,
            inner: None,
            name: String::new(),
        }
    }

    /// Sets the flags.
    pub fn with_flags(mut self, map_flags: u32) -> MapDef {
        self.map_flags = map_flags;
        self
    }

    /// Sets the name.
    pub fn with_name(mut self, name: impl Into<String>) -> MapDef {
        self.name = name.into();
        self
    }

    /// Sets the inner map template (map-in-map types).
    pub fn with_inner(mut self, inner: MapDef) -> MapDef {
        self.inner = Some(Box::new(inner));
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_round_trip_and_names_are_unique() {
        for (i, &t) in MapType::ALL.iter().enumerate() {
            assert_eq!(t as u32, i as u32);
            assert_eq!(MapType::try_from(t as u32), Ok(t));
            assert!(t.kernel_name().ends_with(&t.name().to_uppercase()));
            assert_eq!(MapType::from_name(t.name()), Some(t));
        }
        assert!(MapType::try_from(MapType::ALL.len() as u32).is_err());
        assert_eq!(MapType::Ringbuf as u32, 27);
        assert_eq!(MapType::DevmapHash.to_string(), "devmap_hash");
    }
}
