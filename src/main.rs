//! The `portcullis` binary: parses the command line and runs the command.

use clap::Parser;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let cli = portcullis::cli::Cli::parse();
    if let Err(message) = portcullis::cli::run(cli) {
        eprintln!("portcullis: {message}");
        std::process::exit(2);
    }
}
