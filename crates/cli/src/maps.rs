//! Printing a loaded object's maps, typed by BTF where the object has it
//! (`bpfkit run ... --dump-maps`).

use bpfkit::Object;
use bpfkit_datapath::packets::to_hex;
use bpfkit_maps::MapType;
use std::fmt::Write as _;

/// `map ID NAME: TYPE, key K bytes (T), value V bytes (T), max_entries N`
/// and one line per entry (`bpftool map dump` order, sorted by key).
pub fn describe(obj: &Object) -> String {
    let btf = obj.elf().btf.as_ref();
    let mut s = String::new();
    for m in obj.maps() {
        let d = m.map.def();
        let (kt, vt) = obj.elf().map_type_names(&m.definition);
        let named = |size: u32, t: Option<String>| match t {
            Some(t) => format!("{size} bytes ({t})"),
            None => format!("{size} bytes"),
        };
        let _ = writeln!(
            s,
            "map {} {}: {}, key {}, value {}, max_entries {}",
            m.id.0,
            m.name,
            d.map_type.name(),
            named(d.key_size, kt),
            named(d.value_size, vt),
            d.max_entries
        );
        if m.map.map_type() == MapType::ProgArray {
            continue;
        }
        let mut entries = match m.map.entries() {
            Ok(e) => e,
            Err(e) => {
                let _ = writeln!(s, "  (cannot list: {e})");
                continue;
            }
        };
        entries.sort();
        if entries.is_empty() {
            let _ = writeln!(s, "  (empty)");
        }
        let typed = |t: Option<bpfkit_elf::btf::TypeId>, bytes: &[u8]| -> String {
            match (btf, t) {
                (Some(b), Some(t)) => format!(" {}", b.format_value(t, bytes)),
                _ => String::new(),
            }
        };
        let vsize = d.value_size as usize;
        for (k, v) in entries {
            let key = format!("{}{}", to_hex(&k), typed(m.definition.key_type, &k));
            if d.map_type.is_percpu() && vsize > 0 {
                let stride = vsize.div_ceil(8) * 8;
                let _ = writeln!(s, "  key {key}");
                for (cpu, slot) in v.chunks(stride).enumerate() {
                    let slot = &slot[..vsize.min(slot.len())];
                    let _ = writeln!(
                        s,
                        "    cpu {cpu}: {}{}",
                        to_hex(slot),
                        typed(m.definition.value_type, slot)
                    );
                }
            } else {
                let _ = writeln!(
                    s,
                    "  key {key} value {}{}",
                    to_hex(&v),
                    typed(m.definition.value_type, &v)
                );
            }
        }
    }
    s
}
