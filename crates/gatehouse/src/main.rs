//! The `gatehouse` binary: command-line interface, logging, and process lifecycle.

/// Like `println!`, but a reader that has gone away (`gatehouse keys generate | head -1`)
/// ends the output quietly instead of panicking: see [`write_stdout`].
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::write_stdout(&format!("{}\n", format_args!($($arg)*)))
    };
}

mod audit_cmd;
mod bench;
mod cli;
mod demo;
mod gateway;
mod keys_cmd;
mod ledger_cmd;
mod limits;
mod logging;
mod login_cmd;
mod policy_cmd;
mod replay_cmd;
mod reviews_cmd;

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

/// Writes `text` to standard output in one go. A closed pipe is not an error of ours: the
/// reader took what it wanted. Other write errors are reported, never a panic.
pub(crate) fn write_stdout(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(text.as_bytes()).and_then(|()| out.flush())
        && e.kind() != std::io::ErrorKind::BrokenPipe
    {
        eprintln!("gatehouse: cannot write to standard output: {e}");
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve(args) => gateway::serve(args, cli.log_format).await,
        Command::Demo(args) => demo::demo(args, cli.log_format).await,
        Command::Config {
            command: ConfigCommand::Check { file },
        } => Ok(gateway::config_check(&file)),
        Command::Keys { command } => keys_cmd::run(command).await,
        Command::Policy { command } => policy_cmd::run(command),
        Command::Login(args) => login_cmd::login(args).await,
        Command::Token => login_cmd::token().await,
        Command::Reviews(args) => reviews_cmd::run(args).await,
        Command::Access(args) => reviews_cmd::access(args).await,
        Command::Replay(args) => replay_cmd::run(args).await,
        Command::Audit { command } => audit_cmd::run(command).await,
        Command::Ledger { command } => {
            logging::init(cli.log_format.unwrap_or(LogFormat::Text), "warn", false)?;
            ledger_cmd::run(command).await
        }
    }
}
