//! Prints what the loader makes of an object: programs with their
//! instructions, maps with their BTF types. `cargo run -p bpfkit-elf
//! --example elfdump -- OBJECT`.

fn main() {
    let path = std::env::args().nth(1).expect("usage: elfdump OBJECT");
    let data = std::fs::read(&path).expect("readable object");
    let obj = match bpfkit_elf::LoadOptions::default()
        .keep_going(true)
        .load(&data)
    {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{path}: {e}");
            std::process::exit(2);
        }
    };
    for (i, m) in obj.maps.iter().enumerate() {
        let (k, v) = obj.map_type_names(m);
        println!(
            "map {i} {}: {} key {} ({}) value {} ({}) max {} flags {:#x} inner {:?} values {:?} frozen {} origin {:?}",
            m.name,
            m.def.map_type,
            m.def.key_size,
            k.unwrap_or_default(),
            m.def.value_size,
            v.unwrap_or_default(),
            m.def.max_entries,
            m.def.map_flags,
            m.def.inner.as_ref().map(|i| (i.map_type, i.key_size, i.value_size, i.max_entries)),
            m.initial_values,
            m.frozen,
            m.origin
        );
    }
    for p in &obj.programs {
        println!(
            "program {} [{}] type {:?}: {} slots, functions {:?}",
            p.name,
            p.section,
            p.prog_type().map(|t| t.name()),
            p.insns.slot_count(),
            p.functions
                .iter()
                .map(|f| (&f.name, f.start.0))
                .collect::<Vec<_>>()
        );
        for (pc, insn) in p.insns.iter() {
            if let Some(l) = p.line_info.iter().find(|l| l.insn == pc.0) {
                println!("        ; {}", l.line.trim());
            }
            println!("  {:>5}: {}", pc.0, bpfkit_isa::disasm::format_llvm(insn));
        }
    }
    for f in &obj.failed {
        println!("failed {} [{}]: {}", f.name, f.section, f.error);
    }
}
