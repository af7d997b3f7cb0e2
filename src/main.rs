//! The `portcullis` binary: parses the command line and runs the command.

use clap::Parser;

#[global_allocator]
static GLOBAL: portcullis::alloc::SidecarAlloc = portcullis::alloc::SidecarAlloc;

fn main() {
    portcullis::alloc::SidecarAlloc::init();
    let cli = portcullis::cli::Cli::parse();
    if let Err(message) = portcullis::cli::run(cli) {
        eprintln!("portcullis: {message}");
        std::process::exit(2);
    }
}
