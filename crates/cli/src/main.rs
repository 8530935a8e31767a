//! `bpfkit`: the command-line front end. Flags and printing only; the work
//! is done by the library crates.
//!
//! Exit status (CONTRACTS.md): 0 success, 1 "no" answers, 2 unusable input
//! or usage, with a one-line error on stderr.
#![forbid(unsafe_code)]

mod asm;
mod disasm;
mod helpers;
mod maps;
mod run;
mod verify;

use clap::{Parser, Subcommand};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

/// Userspace eBPF/XDP toolkit.
#[derive(Parser)]
#[command(
    name = "bpfkit",
    version,
    about = "bpfkit: the eBPF/XDP toolkit that runs kernel BPF objects in userspace",
    long_about = None
)]
#[command(after_help = "Exit status: 0 success, 1 the answer is \"no\" \
(a program was rejected, a test failed), 2 unusable input or usage.")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Disassemble the programs of a BPF ELF object.
    ///
    /// Prints every program section (or only --prog), one instruction a
    /// line with its instruction index in the section, in the
    /// kernel/llvm-objdump syntax (`r0 = *(u32 *)(r1 + 0x4)`). Each
    /// function gets a header naming its section; jump targets show their
    /// label (or index), map references, helper calls and bpf-to-bpf calls
    /// are resolved by name.
    Disasm(disasm::Args),
    /// Assemble a text file into raw instructions.
    ///
    /// Reads the llvm/kernel syntax that `bpfkit disasm` prints
    /// (`r0 = 0x1`, `if r1 > 0x5 goto +0x3`, labels like `LBB0_2:`) or the
    /// uBPF/bpf_conformance syntax (`mov %r0, 1`, `jgt %r1, 5, +3`), and
    /// writes the 8-byte instruction slots (little endian), or one line of
    /// lowercase hex with --hex.
    Asm(asm::Args),
    /// Run a program over packets, like BPF_PROG_TEST_RUN.
    ///
    /// Packets come from --packet HEX (repeatable) and --pcap FILE (pcap
    /// or pcapng); maps keep their state from packet to packet. Prints a
    /// table (packet, action, lengths in and out, what changed), a count
    /// per action and the bpf_trace_printk output, or with --json one
    /// document: {"runs": [{"retval", "action", "data_out",
    /// "duration_ns"} | {"error"}], "maps": {"NAME": [{"key", "value"}]}}.
    /// A packet the kernel would refuse (shorter than 14 bytes) gives an
    /// error entry and the run goes on. The program and its --prog-array
    /// targets are verified first, as the kernel's BPF_PROG_LOAD does:
    /// exit 1 when the verifier rejects one (nothing runs). --no-verify
    /// skips the verifier; then exit 1 when a program trapped (did
    /// something the kernel's verifier would have refused).
    Run(run::Args),
    /// Verify the programs of a BPF ELF object, like the kernel's verifier.
    ///
    /// Explores every path of each program (or only --prog) as the Linux
    /// verifier does and prints each verdict; a rejection names the
    /// instruction, the kernel's message, the registers and the source line.
    /// --type overrides the type the section name implies. Exit 0 when all
    /// are accepted, 1 when any is rejected, 2 for unusable input.
    Verify(verify::Args),
}

/// An error that ends the command with exit status 2.
pub(crate) type CmdResult = anyhow::Result<ExitCode>;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            // --help and --version exit 0; usage errors exit 2.
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    let result = match cli.command {
        Command::Disasm(a) => disasm::run(a),
        Command::Asm(a) => asm::run(a),
        Command::Run(a) => run::run(a),
        Command::Verify(a) => verify::run(a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            // One line: the error and its causes joined with ": ".
            let msg = format!("{e:#}").replace('\n', " ");
            let _ = writeln!(std::io::stderr(), "bpfkit: error: {msg}");
            ExitCode::from(2)
        }
    }
}

/// Reads a whole input file (`-` is stdin), naming it in the error.
pub(crate) fn read_input(path: &PathBuf) -> anyhow::Result<Vec<u8>> {
    use anyhow::Context;
    if path.as_os_str() == "-" {
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf).context("cannot read stdin")?;
        return Ok(buf);
    }
    std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}

/// Writes to stdout; a closed pipe (`bpfkit disasm x.o | head`) is not an
/// error.
pub(crate) fn write_stdout(bytes: &[u8]) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(anyhow::Error::new(e).context("cannot write to stdout"))
        }
        _ => Ok(()),
    }
}
