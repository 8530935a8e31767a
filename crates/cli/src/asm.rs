//! `bpfkit asm FILE [--syntax llvm|ubpf] [-o OUT] [--hex]`

use crate::{read_input, write_stdout, CmdResult};
use anyhow::{anyhow, Context};
use bpfkit_isa::asm::{assemble, Syntax};
use bpfkit_isa::{encode_all, Program};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
#[command(after_help = "The llvm syntax also reads `bpfkit disasm` output and \
`llvm-objdump -d` instruction lines as they are (indices, byte columns and \
`<label>` notes are skipped), so a disassembled program can be edited and \
assembled again.")]
pub struct Args {
    /// Assembly source file (`-` reads stdin).
    file: PathBuf,
    /// Source syntax: `llvm` (kernel/llvm-objdump, as `bpfkit disasm`
    /// prints it) or `ubpf` (uBPF and bpf_conformance `-- asm` sections).
    #[arg(long, value_enum, default_value_t = SyntaxArg::Llvm)]
    syntax: SyntaxArg,
    /// Write the output to this file instead of stdout.
    #[arg(short = 'o', long = "output", value_name = "OUT")]
    out: Option<PathBuf>,
    /// Write one line of lowercase hex (two digits a byte, no separators)
    /// instead of raw bytes.
    #[arg(long)]
    hex: bool,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum SyntaxArg {
    /// `r0 = *(u32 *)(r1 + 0x4)`, `if r1 > 0x5 goto +0x3`
    Llvm,
    /// `ldxw %r0, [%r1+4]`, `jgt %r1, 5, +3`
    Ubpf,
}

/// `section xdp, function xdp_prog (12 instructions):`
fn is_disasm_header(line: &str) -> bool {
    line.starts_with("section ") && line.trim_end().ends_with(':')
}

pub fn run(args: Args) -> CmdResult {
    let name = args.file.display().to_string();
    let bytes = read_input(&args.file)?;
    let text = String::from_utf8(bytes).map_err(|_| anyhow!("{name} is not UTF-8 text"))?;
    let syntax = match args.syntax {
        SyntaxArg::Llvm => Syntax::Llvm,
        SyntaxArg::Ubpf => Syntax::Ubpf,
    };
    // `bpfkit disasm` output assembles as is: its headers become blank
    // lines (keeping line numbers) and the assembler skips the indices.
    let text = match syntax {
        Syntax::Llvm => text
            .lines()
            .map(|l| if is_disasm_header(l) { "" } else { l })
            .collect::<Vec<_>>()
            .join("\n"),
        Syntax::Ubpf => text,
    };
    let insns = assemble(&text, syntax).map_err(|e| anyhow!("{name}: {e}"))?;
    if insns.is_empty() {
        return Err(anyhow!("{name} contains no instructions"));
    }
    let code = encode_all(&insns);
    // Jumps and local calls must land on an instruction of the program.
    Program::from_insns(insns).map_err(|e| anyhow!("{name}: {e}"))?;
    let output = if args.hex {
        let mut s: String = code.iter().map(|b| format!("{b:02x}")).collect();
        s.push('\n');
        s.into_bytes()
    } else {
        code
    };
    match &args.out {
        Some(path) => std::fs::write(path, &output)
            .with_context(|| format!("cannot write {}", path.display()))?,
        None => write_stdout(&output)?,
    }
    Ok(ExitCode::SUCCESS)
}
