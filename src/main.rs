//! The `reeve` binary: everything lives in the library; this only maps the
//! command line to an exit code.

fn main() {
    std::process::exit(reeve::cli::main());
}
