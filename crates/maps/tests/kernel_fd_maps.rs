//! Differential tests of the maps whose values are objects, against the
//! running kernel: `array_of_maps`, `hash_of_maps` and `prog_array`. The
//! control side gives and gets ids (the seed's "syscall lookup on fd array
//! and htab"): the kernel takes fds and returns its own ids, bpfkit takes
//! and returns registry ids, so both sides are translated to "which of the
//! test's objects" before comparing.
//!
//! Skips with a printed reason where `bpf()` is refused.

use bpfkit_abi::update_flags::{ANY, EXIST, NOEXIST};
use bpfkit_kernel::{prog_type, Map as KMap, MapSpec, ProgLoad};
use bpfkit_maps::{MapDef, MapError, MapOptions, MapRegistry, MapType};

const LOOKUP: i64 = 1;
const UPDATE: i64 = 2;
const DELETE: i64 = 3;
const NEXT_KEY: i64 = 4;
const OBJ_GET_INFO_BY_FD: i64 = 15;

#[repr(C)]
struct ElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

#[repr(C)]
struct InfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

fn sys<T>(cmd: i64, attr: &T) -> Result<(), i32> {
    // SAFETY: `attr` is a valid `bpf_attr` prefix for `cmd`, whose pointers
    // (set by the callers) point to live buffers of the sizes the kernel
    // writes for these maps.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *const T,
            std::mem::size_of::<T>(),
        )
    };
    if r < 0 {
        Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
    } else {
        Ok(())
    }
}

fn elem(cmd: i64, fd: i32, key: Option<&[u8]>, value: &mut [u8], flags: u64) -> Result<(), i32> {
    sys(
        cmd,
        &ElemAttr {
            map_fd: fd as u32,
            _pad: 0,
            key: key.map_or(0, |k| k.as_ptr() as u64),
            value: if value.is_empty() {
                0
            } else {
                value.as_mut_ptr() as u64
            },
            flags,
        },
    )
}

/// The kernel's id of a map or program fd (`bpf_map_info` and
/// `bpf_prog_info` both start with `u32 type, u32 id`).
fn obj_id(fd: i32) -> u32 {
    let mut info = [0u8; 256];
    sys(
        OBJ_GET_INFO_BY_FD,
        &InfoAttr {
            bpf_fd: fd as u32,
            info_len: info.len() as u32,
            info: info.as_mut_ptr() as u64,
        },
    )
    .expect("BPF_OBJ_GET_INFO_BY_FD");
    u32::from_ne_bytes(info[4..8].try_into().unwrap())
}

fn kernel_ok() -> bool {
    match bpfkit_kernel::probe() {
        Ok(()) => true,
        Err(e) => {
            println!("skipped: bpf() is not available here: {e}");
            false
        }
    }
}

struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Runs random updates, lookups, deletes and get_next_key on an outer map
/// in both worlds. `kval(i)`/`oval(i)` give the value naming object `i`
/// (`None` for "no such object"); `kidx`/`oidx` map a looked-up id back to
/// the object's index.
#[allow(clippy::too_many_arguments)]
fn run(
    what: &str,
    kfd: i32,
    ours: &bpfkit_maps::Map,
    nobj: u64,
    kval: &dyn Fn(u64) -> u32,
    oval: &dyn Fn(u64) -> u32,
    kidx: &dyn Fn(u32) -> Option<u64>,
    oidx: &dyn Fn(u32) -> Option<u64>,
    ordered: bool,
) {
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let (mut hits, mut fails) = (0, 0);
    for step in 0..300 {
        let key = (rng.below(6) as u32).to_ne_bytes();
        let ctx = format!("{what} step {step} key {}", u32::from_ne_bytes(key));
        match rng.below(6) {
            0..=2 => {
                let obj = rng.below(nobj);
                let flags = [ANY, ANY, ANY, NOEXIST, EXIST, 3][rng.below(6) as usize];
                let mut kv = kval(obj).to_ne_bytes();
                let k = elem(UPDATE, kfd, Some(&key), &mut kv, flags);
                let o = ours.update(&key, &oval(obj).to_ne_bytes(), flags);
                match (&o, k) {
                    (Ok(()), Ok(())) => {}
                    (Err(e), Err(k)) => {
                        assert_eq!(e.errno(), k, "{ctx}: update obj {obj} flags {flags}: {e}");
                        fails += 1;
                    }
                    _ => {
                        panic!("{ctx}: update obj {obj} flags {flags}: bpfkit {o:?}, kernel {k:?}")
                    }
                }
            }
            3 => {
                let mut kv = [0u8; 4];
                let k = elem(LOOKUP, kfd, Some(&key), &mut kv, 0)
                    .map(|_| kidx(u32::from_ne_bytes(kv)).expect("unknown kernel id"));
                let o = ours.lookup(&key).map(|v| {
                    oidx(u32::from_ne_bytes(v[..4].try_into().unwrap())).expect("unknown id")
                });
                match (o, k) {
                    (Ok(a), Ok(b)) => {
                        assert_eq!(a, b, "{ctx}: lookup gives different objects");
                        hits += 1;
                    }
                    (Err(e), Err(k)) => assert_eq!(e.errno(), k, "{ctx}: lookup: {e}"),
                    (o, k) => panic!("{ctx}: lookup: bpfkit {o:?}, kernel {k:?}"),
                }
            }
            4 => {
                let k = elem(DELETE, kfd, Some(&key), &mut [], 0);
                match (ours.delete(&key), k) {
                    (Ok(()), Ok(())) => {}
                    (Err(e), Err(k)) => assert_eq!(e.errno(), k, "{ctx}: delete: {e}"),
                    (o, k) => panic!("{ctx}: delete: bpfkit {o:?}, kernel {k:?}"),
                }
            }
            _ => {
                let start = (rng.below(3) != 0).then_some(key);
                let mut next = [0u8; 4];
                let k = elem(NEXT_KEY, kfd, start.as_ref().map(|s| &s[..]), &mut next, 0)
                    .map(|_| next.to_vec());
                let o = ours.get_next_key(start.as_ref().map(|s| &s[..]));
                match (o, k) {
                    (Ok(a), Ok(b)) => assert!(!ordered || a == b, "{ctx}: next key {a:?} vs {b:?}"),
                    (Err(e), Err(k)) => assert_eq!(e.errno(), k, "{ctx}: next key: {e}"),
                    (Err(MapError::NotFound), Ok(_)) | (Ok(_), Err(2))
                        if !ordered && start.is_some() => {}
                    (o, k) => panic!("{ctx}: next key: bpfkit {o:?}, kernel {k:?}"),
                }
            }
        }
    }
    assert!(
        hits > 10 && fails > 10,
        "{what}: {hits} hits, {fails} failures"
    );
}

#[test]
fn map_in_map_ids_match_kernel() {
    if !kernel_ok() {
        return;
    }
    let opts = MapOptions::new().possible_cpus(bpfkit_kernel::possible_cpus());
    let reg = MapRegistry::new(opts);
    let tmpl = MapDef::new(MapType::Array, 4, 8, 4);
    // Objects 0-2 fit the template; 3 and 4 do not; 5 does not exist.
    let defs = [
        tmpl.clone(),
        tmpl.clone(),
        tmpl.clone(),
        MapDef::new(MapType::Array, 4, 8, 5),
        MapDef::new(MapType::Hash, 4, 8, 4),
    ];
    let spec = |d: &MapDef| MapSpec {
        map_type: d.map_type as u32,
        key_size: d.key_size,
        value_size: d.value_size,
        max_entries: d.max_entries,
        map_flags: d.map_flags,
        inner_map_fd: None,
        name: String::new(),
    };
    let kinner: Vec<KMap> = defs
        .iter()
        .map(|d| KMap::create(&spec(d)).unwrap())
        .collect();
    let kids: Vec<u32> = kinner.iter().map(|m| obj_id(m.fd())).collect();
    let oids: Vec<u32> = defs
        .iter()
        .map(|d| reg.create(d.clone()).unwrap().0 .0)
        .collect();
    for (outer_type, key_size) in [(MapType::ArrayOfMaps, 4), (MapType::HashOfMaps, 4)] {
        let outer = MapDef::new(outer_type, key_size, 4, 4).with_inner(tmpl.clone());
        let kouter = KMap::create(&MapSpec {
            inner_map_fd: Some(kinner[0].fd()),
            ..spec(&outer)
        })
        .unwrap();
        let (_, ours) = reg.create(outer).unwrap();
        run(
            &outer_type.to_string(),
            kouter.fd(),
            &ours,
            6,
            &|i| kinner.get(i as usize).map_or(9999, |m| m.fd() as u32),
            &|i| oids.get(i as usize).copied().unwrap_or(9999),
            &|id| kids.iter().position(|&k| k == id).map(|i| i as u64),
            &|id| oids.iter().position(|&k| k == id).map(|i| i as u64),
            outer_type == MapType::ArrayOfMaps,
        );
    }
}

#[test]
fn prog_array_ids_match_kernel() {
    if !kernel_ok() {
        return;
    }
    // r0 = i; exit
    let progs: Vec<_> = (0..3u8)
        .map(|i| {
            let insns = [0xb7, 0, 0, 0, i, 0, 0, 0, 0x95, 0, 0, 0, 0, 0, 0, 0];
            ProgLoad::new(prog_type::SOCKET_FILTER, &insns)
                .load()
                .unwrap()
        })
        .collect();
    let kids: Vec<u32> = progs.iter().map(|p| obj_id(p.fd())).collect();
    let kouter = KMap::create(&MapSpec {
        map_type: MapType::ProgArray as u32,
        key_size: 4,
        value_size: 4,
        max_entries: 4,
        ..Default::default()
    })
    .unwrap();
    let ours = bpfkit_maps::Map::new(MapDef::new(MapType::ProgArray, 4, 4, 4), &MapOptions::new())
        .unwrap();
    // bpfkit's program ids are the embedder's: 100 + index here.
    run(
        "prog_array",
        kouter.fd(),
        &ours,
        3,
        &|i| progs[i as usize].fd() as u32,
        &|i| 100 + i as u32,
        &|id| kids.iter().position(|&k| k == id).map(|i| i as u64),
        &|id| id.checked_sub(100).map(u64::from),
        true,
    );
}
