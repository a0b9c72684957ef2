//! `rotor-loadtest`: the load-test harness of Rotor.
//!
//! One coordinator process starts the server under test (or attaches to one), spawns worker
//! processes (this same binary, hidden `worker` subcommand) that each hold a share of the
//! WebSocket clients, publishes through the server's HTTP API at a fixed rate with a send
//! timestamp in every payload, and measures the server from outside through procfs. See
//! `loadtest/README.md` for the scenarios and how to run them.
//!
//! Modules: [`cli`] (options), [`coordinator`] (scenarios), [`slow`] (the slow-consumer
//! scenario), [`soak`] (the soak scenario), [`workers`] (the worker processes seen from the
//! coordinator), [`worker`] (client processes),
//! [`rawws`] (their raw WebSocket client: TLS, permessage-deflate), [`raw_server`] (the
//! physical floor), [`target`] (servers under test), [`certs`] (throwaway TLS certificates),
//! [`adapter`] (wire protocols and publishers), [`proto`] (coordinator↔worker JSON lines), [`procfs`]
//! (CPU/RSS), [`hist`] (HDR histograms), [`payload`], [`clock`], [`report`] (JSON and
//! Markdown), [`plots`] (SVG), [`error`].

mod adapter;
mod certs;
mod cli;
mod clock;
mod coordinator;
mod error;
mod hist;
mod payload;
mod plots;
mod procfs;
mod proto;
mod proxy_backend;
mod raw_server;
mod rawws;
mod report;
mod slow;
mod soak;
mod target;
mod worker;
mod workers;

use clap::Parser;

fn main() {
    let cli = cli::Cli::parse();
    let result = match cli.command {
        Some(cli::Sub::Worker) => worker::main(),
        Some(cli::Sub::RawServer { listen, max_seconds }) => raw_server::main(listen, max_seconds),
        Some(cli::Sub::ProxyBackend { listen, max_seconds }) => {
            proxy_backend::main(listen, max_seconds)
        }
        None => coordinator::main(&cli.run),
    };
    if let Err(e) = result {
        eprintln!("rotor-loadtest: {e}");
        std::process::exit(1);
    }
}
