//! Command-line handling shared by the examples: `--help`, `--dir DIR`
//! (default `$LAMINAR_RING_DIR`, else `/dev/shm`, as for the command) and
//! positional arguments; anything else is refused with the usage line.
#![allow(dead_code)] // each example uses a different part

use std::path::PathBuf;

/// The parsed command line of an example.
pub struct Args {
    /// Where rings live.
    pub dir: PathBuf,
    /// The positional arguments, in order.
    pub positional: Vec<String>,
}

impl Args {
    /// The `i`th positional argument, or `default`.
    pub fn get(&self, i: usize, default: &str) -> String {
        self.positional
            .get(i)
            .cloned()
            .unwrap_or_else(|| default.to_owned())
    }
}

/// Parses the command line: `usage` is the part after the program's name
/// (for example `"[--dir DIR] [RING]"`); at most `max_positional` positional
/// arguments are taken. Prints the usage and exits 0 on `--help`, exits 2 on
/// an unknown option or too many arguments.
pub fn parse(about: &str, usage: &str, max_positional: usize) -> Args {
    let program = std::env::args()
        .next()
        .and_then(|p| {
            PathBuf::from(p)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| "example".into());
    let usage_line = format!("usage: {program} {usage}");
    let refuse = |why: String| -> ! {
        eprintln!("{program}: {why}\n{usage_line}");
        std::process::exit(2)
    };
    let mut dir = std::env::var_os("LAMINAR_RING_DIR").map(PathBuf::from);
    let mut positional = Vec::new();
    let mut args = std::env::args().skip(1);
    let mut options_done = false;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--" if !options_done => options_done = true,
            "-h" | "--help" if !options_done => {
                println!(
                    "{about}\n\n{usage_line}\n\n  --dir DIR  where rings live (default: $LAMINAR_RING_DIR, else {})",
                    laminar_ring::shm::DEFAULT_DIR
                );
                std::process::exit(0)
            }
            "--dir" if !options_done => match args.next() {
                Some(d) => dir = Some(PathBuf::from(d)),
                None => refuse("--dir needs a directory".into()),
            },
            s if !options_done && s.starts_with("--dir=") => {
                dir = Some(PathBuf::from(&s["--dir=".len()..]));
            }
            s if !options_done && s.starts_with('-') && s != "-" => {
                refuse(format!("unknown option {s}"))
            }
            _ => positional.push(arg),
        }
    }
    if positional.len() > max_positional {
        refuse(format!(
            "takes at most {max_positional} argument(s), got {}",
            positional.len()
        ));
    }
    Args {
        dir: dir.unwrap_or_else(|| PathBuf::from(laminar_ring::shm::DEFAULT_DIR)),
        positional,
    }
}

/// Segment options for rings in `dir`.
pub fn segment_options(dir: &std::path::Path) -> laminar_ring::shm::SegmentOptions {
    laminar_ring::shm::SegmentOptions {
        dir: dir.to_owned(),
        ..Default::default()
    }
}

/// For an example that takes no arguments: `--help` prints `about`, anything
/// else is refused.
pub fn no_arguments(about: &str) {
    match std::env::args().nth(1).as_deref() {
        None => {}
        Some("-h" | "--help") => {
            println!("{about}\n\nTakes no arguments.");
            std::process::exit(0)
        }
        Some(other) => {
            eprintln!("this example takes no arguments, got `{other}`");
            std::process::exit(2)
        }
    }
}
