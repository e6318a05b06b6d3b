//! `gatehouse ledger ...`: pubkey, verify, proof, verify-proof and recover.

use std::io::Read;
use std::process::ExitCode;

use anyhow::Context;
use gatehouse_ledger::{
    EarlierCheckpoint, InclusionProof, Layout, Ledger, LedgerOptions, TrustedKey, check_inclusion,
    prove_inclusion, verify,
};
use serde_json::json;

use crate::bench;
use crate::cli::{DataDirArg, LedgerCommand, VerifyArgs, VerifyProofArgs};

pub(crate) async fn run(command: LedgerCommand) -> anyhow::Result<ExitCode> {
    match command {
        LedgerCommand::Pubkey(DataDirArg { data_dir }) => {
            let path = Layout::new(&data_dir).verifier_key();
            let key = std::fs::read_to_string(&path).with_context(|| {
                format!(
                    "{}: no ledger key here (has a gateway run on this data directory?)",
                    path.display()
                )
            })?;
            outln!("{}", key.trim());
            Ok(ExitCode::SUCCESS)
        }
        LedgerCommand::Verify(args) => Ok(verify_cmd(args).await),
        LedgerCommand::Bench(args) => bench::run(args).await,
        LedgerCommand::Proof(args) => {
            let data_dir = args.data_dir.clone();
            let proof = tokio::task::spawn_blocking(move || prove_inclusion(&data_dir, args.index))
                .await??;
            outln!("{}", serde_json::to_string_pretty(&proof)?);
            Ok(ExitCode::SUCCESS)
        }
        LedgerCommand::VerifyProof(args) => verify_proof_cmd(args),
        LedgerCommand::Prune(args) => {
            crate::replay_cmd::ledger_in(&args.data_dir)?;
            let cutoff = std::time::SystemTime::now() - args.older_than;
            let cutoff_us = gatehouse_core::clock::micros_of(cutoff);
            let why = format!(
                "gatehouse ledger prune --older-than {}",
                humantime::format_duration(args.older_than)
            );
            let plan = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
                let (ledger, _) = Ledger::open(&args.data_dir, LedgerOptions::default())?;
                let plan = ledger.prune(cutoff_us, &why);
                ledger.close()?;
                Ok(plan?)
            })
            .await??;
            match plan {
                Some(plan) => outln!("{}", serde_json::to_string(&plan)?),
                None => outln!(
                    "{}",
                    json!({"pruned": null, "note": "nothing is that old yet (the segment being written is never pruned)"})
                ),
            }
            Ok(ExitCode::SUCCESS)
        }
        LedgerCommand::Recover(DataDirArg { data_dir }) => {
            let (ledger, report) = tokio::task::spawn_blocking({
                let data_dir = data_dir.clone();
                move || Ledger::open(&data_dir, LedgerOptions::default())
            })
            .await??;
            let checkpoint = tokio::task::spawn_blocking(move || ledger.close()).await??;
            outln!(
                "{}",
                json!({
                    "entries": report.entries,
                    "unclean_shutdown": report.unclean_shutdown,
                    "truncated": report.truncated.map(|(segment, offset, bytes)|
                        json!({"segment": segment, "offset": offset, "bytes": bytes})),
                    "checkpoint_size": checkpoint.map(|c| c.checkpoint.size),
                })
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Reads a key given inline or as `@FILE`.
pub(crate) fn read_key(arg: &str) -> anyhow::Result<String> {
    match arg.strip_prefix('@') {
        Some(path) => Ok(std::fs::read_to_string(path)
            .with_context(|| format!("reading the verifier key from {path}"))?
            .trim()
            .to_string()),
        None => Ok(arg.trim().to_string()),
    }
}

async fn verify_cmd(args: VerifyArgs) -> ExitCode {
    let key = match args.pubkey.as_deref().map(read_key).transpose() {
        Ok(Some(k)) => TrustedKey::Given(k),
        Ok(None) => {
            eprintln!(
                "ledger verify: no --pubkey given; trusting the key stored in the data directory \
                 (pass the key you received out of band for an independent check)"
            );
            TrustedKey::FromDataDir
        }
        Err(e) => {
            eprintln!("ledger verify: {e:#}");
            return ExitCode::from(2);
        }
    };
    let mut earlier = Vec::new();
    for path in &args.checkpoints {
        match std::fs::read_to_string(path) {
            Ok(note) => earlier.push(EarlierCheckpoint {
                label: format!("checkpoint file {}", path.display()),
                note,
            }),
            Err(e) => {
                eprintln!("ledger verify: --checkpoint {}: {e}", path.display());
                return ExitCode::from(2);
            }
        }
    }
    let data_dir = args.data_dir.clone();
    let result = tokio::task::spawn_blocking(move || {
        verify(&data_dir, &key, &earlier, |n| {
            eprintln!("ledger verify: {n} entries checked")
        })
    })
    .await;
    match result {
        Ok(Ok(summary)) => {
            outln!("{}", serde_json::to_string(&summary).unwrap_or_default());
            ExitCode::SUCCESS
        }
        Ok(Err(e)) => {
            eprintln!("ledger verify: FAILED: {e}");
            outln!("{}", json!({"ok": false, "error": e.to_string()}));
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("ledger verify: internal error: {e}");
            ExitCode::from(1)
        }
    }
}

fn verify_proof_cmd(args: VerifyProofArgs) -> anyhow::Result<ExitCode> {
    let key = read_key(&args.pubkey)?;
    let text = if args.proof.as_os_str() == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("reading the proof from stdin")?;
        text
    } else {
        std::fs::read_to_string(&args.proof)
            .with_context(|| format!("reading {}", args.proof.display()))?
    };
    let doc: InclusionProof =
        serde_json::from_str(&text).context("the proof is not a `ledger proof` document")?;
    match check_inclusion(&doc, &key) {
        Ok(cp) => {
            outln!(
                "{}",
                json!({"ok": true, "index": doc.index, "size": cp.size, "origin": cp.origin})
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(why) => {
            eprintln!("ledger verify-proof: FAILED: {why}");
            outln!("{}", json!({"ok": false, "error": why}));
            Ok(ExitCode::from(1))
        }
    }
}
