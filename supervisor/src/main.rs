//! `ghost`: the Ghost Stream CLI and supervisor daemon.

fn main() {
    std::process::exit(supervisor::cli::main());
}
