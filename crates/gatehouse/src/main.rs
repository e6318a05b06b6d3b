//! The `gatehouse` binary: command-line interface, logging, and process lifecycle.

mod bench;
mod cli;
mod gateway;
mod ledger_cmd;
mod logging;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command, ConfigCommand, LogFormat};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("gatehouse: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(run(cli));
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("gatehouse: error: {e:#}");
            ExitCode::from(1)
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve(args) => gateway::serve(args, cli.log_format).await,
        Command::Demo(args) => gateway::demo(args, cli.log_format).await,
        Command::Config {
            command: ConfigCommand::Check { file },
        } => Ok(gateway::config_check(&file)),
        Command::Ledger { command } => {
            logging::init(cli.log_format.unwrap_or(LogFormat::Text), "warn", false)?;
            ledger_cmd::run(command).await
        }
    }
}
