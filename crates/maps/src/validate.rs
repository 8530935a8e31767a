//! The kernel's checks at map creation (`*_alloc_check` in
//! `kernel/bpf/{arraymap,hashtab,lpm_trie,queue_stack_maps,ringbuf,devmap}.c`),
//! with the same errno for the same case.

use crate::MapError;
use bpfkit_abi::{map_flags as mf, MapDef, MapType};

/// `KMALLOC_MAX_SIZE` on x86-64 (4 KiB pages, `MAX_PAGE_ORDER` 10).
pub const KMALLOC_MAX_SIZE: u32 = 1 << 22;
/// `PCPU_MIN_UNIT_SIZE`: the largest per-CPU value slot.
pub const PCPU_MIN_UNIT_SIZE: u32 = 32 << 10;
/// `MAX_BPF_STACK` (older kernels refused hash keys above it).
pub const MAX_BPF_STACK: u32 = 512;
/// Page size assumed for ring buffers.
pub const PAGE_SIZE: u32 = 4096;
/// `sizeof(struct htab_elem)`: a hash element (key and value) must fit a
/// kmalloc with it (measured on the reference kernel: key + value at most
/// `KMALLOC_MAX_SIZE - 49`).
const HTAB_ELEM_SIZE: u64 = 48;
/// `sizeof(struct lpm_trie_node)`.
const LPM_NODE_SIZE: u32 = 24;
/// `sizeof(struct bucket)`: hash maps whose bucket array would not fit in a
/// `u32` size are refused.
const BUCKET_SIZE: u64 = 16;

fn inval(what: &'static str) -> MapError {
    MapError::Invalid { what }
}

fn too_big(what: &'static str) -> MapError {
    MapError::TooBig { what }
}

fn access_ok(flags: u32) -> bool {
    flags & (mf::RDONLY_PROG | mf::WRONLY_PROG) != (mf::RDONLY_PROG | mf::WRONLY_PROG)
}

fn n_buckets_ok(max_entries: u32) -> bool {
    let n = (max_entries as u64).next_power_of_two();
    n <= u32::MAX as u64 / BUCKET_SIZE
}

/// Checks `def` as the kernel would for a machine with `ncpus` possible
/// CPUs, and returns it as the kernel keeps it (`lru_percpu_hash` with
/// `BPF_F_NO_COMMON_LRU` rounds `max_entries` to a multiple of the CPUs).
pub(crate) fn validate(def: &MapDef, ncpus: usize) -> Result<MapDef, MapError> {
    let f = def.map_flags;
    if f & mf::RDONLY != 0 && f & mf::WRONLY != 0 {
        return Err(inval("BPF_F_RDONLY together with BPF_F_WRONLY"));
    }
    let mut out = def.clone();
    use MapType as T;
    match def.map_type {
        T::Array | T::PercpuArray => array(def)?,
        T::ProgArray | T::PerfEventArray | T::ArrayOfMaps => {
            if def.value_size != 4 {
                return Err(inval("value size of an fd array must be 4"));
            }
            if f & (mf::RDONLY_PROG | mf::WRONLY_PROG) != 0 {
                return Err(inval("fd arrays take no program access flags"));
            }
            array(def)?;
        }
        T::Hash | T::PercpuHash | T::LruHash | T::LruPercpuHash | T::HashOfMaps => {
            if def.map_type == T::HashOfMaps && def.value_size != 4 {
                return Err(inval("value size of hash_of_maps must be 4"));
            }
            hash(def)?;
            if def.map_type == T::LruPercpuHash && f & mf::NO_COMMON_LRU != 0 {
                // Each CPU's LRU list gets the same number of elements.
                let n = ncpus as u64;
                let up = (def.max_entries as u64).div_ceil(n) * n;
                out.max_entries = if up > u32::MAX as u64 {
                    (def.max_entries as u64 / n * n) as u32
                } else {
                    up as u32
                };
            }
        }
        T::LpmTrie => {
            let mask = mf::NO_PREALLOC | mf::NUMA_NODE | mf::ACCESS_MASK;
            if def.max_entries == 0
                || f & mf::NO_PREALLOC == 0
                || f & !mask != 0
                || !access_ok(f)
                || def.key_size < 4 + 1
                || def.key_size > 4 + 256
                || def.value_size < 1
                || def.value_size > KMALLOC_MAX_SIZE - 256 - LPM_NODE_SIZE
            {
                return Err(inval(
                    "lpm_trie needs BPF_F_NO_PREALLOC, max_entries > 0, key size 5..=260, value size > 0",
                ));
            }
        }
        T::Queue | T::Stack => {
            if def.max_entries == 0
                || def.key_size != 0
                || def.value_size == 0
                || f & !(mf::NUMA_NODE | mf::ACCESS_MASK) != 0
                || !access_ok(f)
            {
                return Err(inval(
                    "queue/stack needs key size 0, value size > 0, max_entries > 0",
                ));
            }
            if def.value_size > KMALLOC_MAX_SIZE {
                return Err(too_big("value size"));
            }
        }
        T::Ringbuf => {
            if f & !mf::NUMA_NODE != 0 {
                return Err(inval("ring buffer flags"));
            }
            if def.key_size != 0
                || def.value_size != 0
                || !def.max_entries.is_power_of_two()
                || !def.max_entries.is_multiple_of(PAGE_SIZE)
            {
                return Err(inval(
                    "ring buffer needs key and value size 0 and a power-of-2 multiple of the page size",
                ));
            }
        }
        T::Devmap | T::DevmapHash => {
            if def.max_entries == 0
                || def.key_size != 4
                || (def.value_size != 4 && def.value_size != 8)
                || f & !(mf::NUMA_NODE | mf::RDONLY | mf::WRONLY) != 0
            {
                return Err(inval(
                    "devmap needs key size 4, value size 4 or 8, max_entries > 0",
                ));
            }
            if def.map_type == T::DevmapHash && !n_buckets_ok(def.max_entries) {
                return Err(too_big("max_entries"));
            }
        }
        t => return Err(MapError::UnsupportedType { map_type: t }),
    }
    if def.map_type.is_map_in_map() {
        let inner = def
            .inner
            .as_deref()
            .ok_or(inval("map-in-map needs an inner map definition"))?;
        if inner.map_type.is_map_in_map() || inner.map_type == T::ProgArray {
            return Err(inval("inner map cannot be a map-in-map or a prog_array"));
        }
        validate(inner, ncpus)?;
    }
    Ok(out)
}

/// `array_map_alloc_check`.
fn array(def: &MapDef) -> Result<(), MapError> {
    let f = def.map_flags;
    let percpu = def.map_type == MapType::PercpuArray;
    let mask = mf::NUMA_NODE | mf::MMAPABLE | mf::ACCESS_MASK | mf::PRESERVE_ELEMS | mf::INNER_MAP;
    if def.max_entries == 0
        || def.key_size != 4
        || def.value_size == 0
        || f & !mask != 0
        || !access_ok(f)
        || (percpu && f & mf::NUMA_NODE != 0)
    {
        return Err(inval(
            "array needs key size 4, value size > 0, max_entries > 0 and known flags",
        ));
    }
    if def.map_type != MapType::Array && f & (mf::MMAPABLE | mf::INNER_MAP) != 0 {
        return Err(inval(
            "BPF_F_MMAPABLE and BPF_F_INNER_MAP are for arrays only",
        ));
    }
    if def.map_type != MapType::PerfEventArray && f & mf::PRESERVE_ELEMS != 0 {
        return Err(inval("BPF_F_PRESERVE_ELEMS is for perf event arrays only"));
    }
    if percpu && def.value_size.div_ceil(8) * 8 > PCPU_MIN_UNIT_SIZE {
        return Err(too_big("per-CPU value size"));
    }
    if def.value_size > i32::MAX as u32 {
        return Err(too_big("value size"));
    }
    Ok(())
}

/// `htab_map_alloc_check` (and the bucket count check of `htab_map_alloc`).
fn hash(def: &MapDef) -> Result<(), MapError> {
    let f = def.map_flags;
    let lru = matches!(def.map_type, MapType::LruHash | MapType::LruPercpuHash);
    let percpu = def.map_type.is_percpu();
    let mask =
        mf::NO_PREALLOC | mf::NO_COMMON_LRU | mf::NUMA_NODE | mf::ACCESS_MASK | mf::ZERO_SEED;
    if f & !mask != 0 || !access_ok(f) {
        return Err(inval("hash map flags"));
    }
    if !lru && f & mf::NO_COMMON_LRU != 0 {
        return Err(inval("BPF_F_NO_COMMON_LRU is for LRU maps only"));
    }
    if lru && f & mf::NO_PREALLOC != 0 {
        return Err(MapError::NotSupported {
            op: "BPF_F_NO_PREALLOC",
            map_type: def.map_type,
        });
    }
    if f & mf::NUMA_NODE != 0 && f & mf::NO_COMMON_LRU != 0 {
        return Err(inval("BPF_F_NUMA_NODE with BPF_F_NO_COMMON_LRU"));
    }
    if def.max_entries == 0 || def.key_size == 0 || def.value_size == 0 {
        return Err(inval("hash needs key size, value size and max_entries > 0"));
    }
    // Kernels before 6.x also refused keys above MAX_BPF_STACK; the
    // reference kernel only needs the element to fit one kmalloc.
    if def.key_size as u64 + def.value_size as u64 >= KMALLOC_MAX_SIZE as u64 - HTAB_ELEM_SIZE {
        return Err(too_big("key size + value size"));
    }
    if percpu && def.value_size.div_ceil(8) * 8 > PCPU_MIN_UNIT_SIZE {
        return Err(too_big("per-CPU value size"));
    }
    if !n_buckets_ok(def.max_entries) {
        return Err(too_big("max_entries"));
    }
    Ok(())
}

/// `bpf_map_meta_equal`: whether `map` may be stored in a map-in-map whose
/// inner template is `tmpl`.
pub(crate) fn inner_compatible(tmpl: &MapDef, map: &MapDef) -> bool {
    tmpl.map_type == map.map_type
        && tmpl.key_size == map.key_size
        && tmpl.value_size == map.value_size
        && tmpl.map_flags == map.map_flags
        && (tmpl.map_flags & mf::INNER_MAP != 0 || tmpl.max_entries == map.max_entries)
}
