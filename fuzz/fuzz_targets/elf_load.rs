//! Random (and mutated corpus) bytes through the ELF loader: never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    bpfkit_elf::fuzzing::check_load(data);
});
