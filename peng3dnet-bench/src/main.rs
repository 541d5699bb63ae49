//! `peng3dnet-bench`: the load tools behind BENCHMARKS.md, kept out of the shipped
//! `peng3dnet` binary.
//!
//! - `load`: the load generator (transactions, sessions, classic packets, idle
//!   connections), printing throughput, latency percentiles and errors;
//! - `floor`: the comparison's floor, a do-nothing server answering with pre-encoded bytes;
//! - `many`: a list of distinct targets pinged once each, through the library's
//!   `ping_many` or the CLI, with wall time, targets/s and peak RSS;
//! - `echo-serve`: our real server as `peng3dnet serve` runs it, plus an echo of the
//!   classic packet `interop:msg` for `load --mode classic`;
//! - `attack`: the security audit's memory and CPU attacks, with the server's figures.
//!
//! The framing comes from `peng3dnet-proto`; output and server set-up from the CLI crate.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use peng3dnet_cli::Exit;

mod attack;
mod bench;
mod floor;
mod many;

/// Load tools for peng3dnet servers.
#[derive(Debug, Parser)]
#[command(name = "peng3dnet-bench", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Load-test a server: concurrent ping transactions, ping sessions or classic packets;
    /// throughput, latency percentiles and errors.
    Load(bench::BenchArgs),
    /// The floor: a minimal server answering with pre-encoded bytes.
    Floor(floor::BenchServerArgs),
    /// Ping a list of distinct targets once each (the library's ping_many, or the CLI):
    /// wall time, targets/s, peak RSS, and what each kind of target was reported as.
    Many(many::ManyArgs),
    /// `peng3dnet serve` plus an echo of the classic packet `interop:msg`.
    EchoServe(floor::BenchServerArgs),
    /// The security audit's memory and CPU attacks on a running server, with its RSS and
    /// CPU time before and after and a pinger's latency meanwhile.
    Attack(attack::AttackArgs),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() {
                Exit::Usage.code()
            } else {
                0
            };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            peng3dnet_cli::error(format!("cannot start the async runtime: {e}"));
            return ExitCode::from(Exit::System.code());
        }
    };
    let exit = runtime.block_on(async {
        match cli.command {
            Command::Load(args) => bench::run(args).await,
            Command::Floor(args) => floor::run_floor(args).await,
            Command::EchoServe(args) => floor::run_echo(args).await,
            Command::Attack(args) => attack::run(args).await,
            Command::Many(args) => many::run(args).await,
        }
    });
    runtime.shutdown_background();
    ExitCode::from(exit.code())
}
