//! The `peng3dnet` command-line tool; see the `peng3dnet_cli` crate for the commands and
//! exit statuses.

use std::process::ExitCode;

use peng3dnet_cli as cli;

fn main() -> ExitCode {
    let args = cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            cli::error(format!("cannot start the async runtime: {e}"));
            return ExitCode::from(cli::Exit::System.code());
        }
    };
    let exit = runtime.block_on(cli::run(args));
    // Do not wait for blocking tasks (a name lookup that is still running, say).
    runtime.shutdown_background();
    ExitCode::from(exit.code())
}
