//! The oracle of the `elf_load` fuzz target, shared with the proptests:
//! any bytes go through the whole loader and every printer, and nothing
//! panics (errors are fine). The fuzz target is one call to
//! [`check_load`].

use crate::{LoadOptions, Object};
use bpfkit_isa::Pc;

/// Parses and loads `data` (keeping going past failing programs), then
/// prints every map's types and a made-up value of each, every BTF type
/// name and size, and every program's type and source lines.
pub fn check_load(data: &[u8]) {
    let Ok(obj) = Object::parse(data) else {
        return;
    };
    for sec in obj.programs() {
        let _ = sec.decode();
    }
    let Ok(loaded) = LoadOptions::default().keep_going(true).load_object(&obj) else {
        return;
    };
    if let Some(btf) = &loaded.btf {
        for m in &loaded.maps {
            let _ = loaded.map_type_names(m);
            let bytes = vec![0xa5u8; m.def.value_size.min(4096) as usize];
            for t in [m.key_type, m.value_type].into_iter().flatten() {
                let _ = btf.format_value(t, &bytes);
                let _ = btf.format_value(t, &bytes[..bytes.len() / 2]);
            }
        }
        for (id, _) in btf.types().take(256) {
            let _ = btf.type_name(id);
            let _ = btf.size_of(id);
            let _ = btf.format_value(id, &[0x5a; 64]);
        }
    }
    // CO-RE resolution, with the object's own BTF standing in for the
    // kernel's.
    if let Some(btf) = &loaded.btf {
        let target = std::sync::Arc::new(btf.clone());
        let _ = LoadOptions::default()
            .keep_going(true)
            .target_btf(target)
            .load_object(&obj);
    }
    for p in &loaded.programs {
        let _ = p.prog_type();
        let _ = p.line_at(Pc(p.insns.slot_count()));
        let _ = p.insns.to_bytes();
    }
}
