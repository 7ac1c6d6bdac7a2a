//! The `laminar-ring` command. For now it prints its version and usage; the
//! subcommands (create, produce, consume, info, bench, demo) come with the
//! shared-memory layer.

use std::process::ExitCode;

const USAGE: &str = "\
laminar-ring: lock-free ring buffers between threads and processes

Usage: laminar-ring [--help | --version]

The library is usable today (see the README); the command-line tool's
subcommands are not built yet.";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        None | Some("-h" | "--help" | "help") => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        Some("-V" | "--version") => {
            println!("laminar-ring {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Some(other) => {
            eprintln!("laminar-ring: unknown argument '{other}'\n\n{USAGE}");
            ExitCode::from(2)
        }
    }
}
