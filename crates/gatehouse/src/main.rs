//! The `gatehouse` binary: command-line interface, logging, and process lifecycle.

mod bench;
mod cli;
mod demo;
mod gateway;
mod ledger_cmd;
mod logging;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command, ConfigCommand, KeysCommand, LogFormat};

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
        Command::Demo(args) => demo::demo(args, cli.log_format).await,
        Command::Config {
            command: ConfigCommand::Check { file },
        } => Ok(gateway::config_check(&file)),
        Command::Keys { command } => keys(command),
        Command::Ledger { command } => {
            logging::init(cli.log_format.unwrap_or(LogFormat::Text), "warn", false)?;
            ledger_cmd::run(command).await
        }
    }
}

/// `gatehouse keys ...`.
fn keys(command: KeysCommand) -> anyhow::Result<ExitCode> {
    match command {
        KeysCommand::Generate { name } => {
            let key = gatehouse_identity::generate_key().map_err(anyhow::Error::msg)?;
            let hash = gatehouse_identity::hash_key(&key);
            println!("API key (shown once; give it to its owner): {key}");
            println!("\nAdd to gatehouse.toml:\n");
            println!(
                "[[identities]]\nname = \"{name}\"\nkind = \"human\"\ngroups = []\nkey_hash = \"{hash}\""
            );
            Ok(ExitCode::SUCCESS)
        }
        KeysCommand::Hash => {
            let mut key = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut key)?;
            let key = key.trim_end_matches(['\r', '\n']);
            anyhow::ensure!(!key.is_empty(), "no key on standard input");
            println!("{}", gatehouse_identity::hash_key(key));
            Ok(ExitCode::SUCCESS)
        }
    }
}
