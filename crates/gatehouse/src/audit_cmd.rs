//! `gatehouse audit`: evidence for auditors, read offline from the ledger — exports of a
//! window in each format, and the offline check of an evidence bundle.

use std::fs::File;
use std::io::{BufReader, BufWriter, Seek, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use gatehouse_audit::bundle::{self, Builder, Verified};
use gatehouse_audit::export::{self, Filter};
use gatehouse_ledger::Layout;
use gatehouse_ledger::segment::Visit;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;

use crate::cli::{
    AuditCommand, ExportArgs, ExportFormat, ReportArgs, VerifyExportArgs, WindowArgs,
};
use crate::replay_cmd::ledger_in;

pub(crate) async fn run(command: AuditCommand) -> anyhow::Result<ExitCode> {
    match command {
        AuditCommand::Export(args) => export(args).await,
        AuditCommand::VerifyExport(args) => verify_export(&args),
        AuditCommand::Report(args) => report(args).await,
    }
}

/// The filter the window arguments describe; times are RFC 3339 or a duration ago.
pub(crate) fn filter(args: &WindowArgs) -> anyhow::Result<Filter> {
    let now = SystemTime::now();
    let at = |flag: &str, value: &Option<String>| -> anyhow::Result<Option<u64>> {
        let Some(text) = value else {
            return Ok(None);
        };
        let time = match humantime::parse_rfc3339_weak(text) {
            Ok(t) => t,
            Err(_) => match humantime::parse_duration(text) {
                Ok(ago) => now - ago,
                Err(_) => anyhow::bail!(
                    "--{flag} {text:?}: write a time (2026-11-01T00:00:00Z) or a duration ago (24h)"
                ),
            },
        };
        Ok(Some(gatehouse_core::clock::micros_of(time)))
    };
    let filter = Filter {
        since: at("since", &args.since)?,
        until: at("until", &args.until)?,
        user: args.user.clone(),
        resource: args.resource.clone(),
    };
    if let (Some(s), Some(u)) = (filter.since, filter.until)
        && s >= u
    {
        anyhow::bail!("--since must come before --until");
    }
    Ok(filter)
}

/// A progress bar over the bytes of the ledger's segments, drawn on a terminal only.
fn progress(layout: &Layout) -> ProgressBar {
    let total: u64 = gatehouse_ledger::segment::list_segments(layout)
        .map(|segs| {
            segs.iter()
                .filter_map(|s| s.path.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0);
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} reading the ledger {bar:30} {binary_bytes}/{binary_total_bytes} {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// Where an export goes: a file written beside its target and renamed when complete (an
/// interrupted export replaces nothing), or stdout.
struct Sink {
    out: BufWriter<Box<dyn Write + Send>>,
    target: Option<(PathBuf, PathBuf)>,
}

impl Sink {
    fn open(output: Option<&Path>) -> anyhow::Result<Sink> {
        let (writer, target): (Box<dyn Write + Send>, _) = match output {
            Some(path) => {
                let tmp = path.with_extension("partial");
                let file = File::create(&tmp)
                    .with_context(|| format!("cannot write {}", tmp.display()))?;
                (Box::new(file), Some((tmp, path.to_path_buf())))
            }
            None => (Box::new(std::io::stdout()), None),
        };
        Ok(Sink {
            out: BufWriter::with_capacity(1 << 16, writer),
            target,
        })
    }

    fn finish(self) -> anyhow::Result<()> {
        let target = self.target;
        let writer = self.out.into_inner().map_err(|e| e.into_error())?;
        drop(writer);
        if let Some((tmp, path)) = target {
            File::open(&tmp)?.sync_all()?;
            std::fs::rename(&tmp, &path)
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        Ok(())
    }
}

/// `gatehouse audit export`.
async fn export(args: ExportArgs) -> anyhow::Result<ExitCode> {
    let filter = filter(&args.window)?;
    let layout = ledger_in(&args.window.data_dir)?;
    let summary = tokio::task::spawn_blocking(move || -> anyhow::Result<String> {
        let mut sink = Sink::open(args.output.as_deref())?;
        let bar = progress(&layout);
        let result = match args.format {
            ExportFormat::Bundle => {
                export_bundle(&layout, &filter, args.withhold_others, &mut sink, &bar)
            }
            format => export_rows(&layout, &filter, format, &mut sink, &bar),
        };
        bar.finish_and_clear();
        let summary = result?;
        sink.finish()?;
        Ok(summary)
    })
    .await??;
    // On stderr, so a piped export stays clean.
    eprintln!("{summary}");
    Ok(ExitCode::SUCCESS)
}

fn export_rows(
    layout: &Layout,
    filter: &Filter,
    format: ExportFormat,
    sink: &mut Sink,
    bar: &ProgressBar,
) -> anyhow::Result<String> {
    if format == ExportFormat::Csv {
        writeln!(sink.out, "{}", export::CSV_HEADER)?;
    }
    let (mut taken, mut scanned) = (0u64, 0u64);
    // OCSF events borrow context from earlier entries (a session's client address, the
    // statement behind a result), so the mapper sees every entry, in order.
    let mut ocsf = gatehouse_audit::ocsf::Mapper::new();
    let mut write_error = None;
    let mut pruned: Option<(u64, u64)> = None;
    gatehouse_ledger::segment::scan_with(layout, |visit| {
        let e = match visit {
            Visit::Entry(e) => e,
            Visit::Pruned(index, _) => {
                let (first, _) = pruned.unwrap_or((index, index));
                pruned = Some((first, index + 1));
                return Ok(());
            }
        };
        scanned += 1;
        bar.inc(e.line.len() as u64 + 1);
        let v: Value = serde_json::from_slice(e.line).unwrap_or(Value::Null);
        let leaf = || hex::encode(gatehouse_ledger::merkle::leaf_hash(e.line));
        let row = match format {
            ExportFormat::Ocsf => {
                let event = ocsf.event(&v, &leaf());
                event
                    .filter(|_| filter.matches(&v))
                    .map(|ev| ev.to_string())
            }
            _ if !filter.matches(&v) => None,
            ExportFormat::Csv => Some(export::csv(&v, &leaf())),
            _ => Some(export::jsonl(&v, &leaf())),
        };
        if let Some(row) = row
            && write_error.is_none()
        {
            write_error = writeln!(sink.out, "{row}").err();
            taken += 1;
        }
        Ok(())
    })
    .context("reading the ledger")?;
    if let Some(e) = write_error {
        return Err(e).context("writing the export");
    }
    let what = if format == ExportFormat::Ocsf {
        "OCSF events from"
    } else {
        "of"
    };
    let mut summary = format!("exported {taken} {what} {scanned} entries");
    if let Some((first, end)) = pruned {
        summary.push_str(&format!(
            "; entries {first}..{end} were pruned by retention (only their hashes are left) and are not in this export"
        ));
    }
    Ok(summary)
}

fn export_bundle(
    layout: &Layout,
    filter: &Filter,
    withhold_others: bool,
    sink: &mut Sink,
    bar: &ProgressBar,
) -> anyhow::Result<String> {
    // The range's records wait in an unnamed temporary file (gone when closed) until the
    // manifest, which comes first, knows the counts.
    let spill = tempfile::tempfile().context("creating a temporary file for the export")?;
    let (plan, note, unsigned, spill) = plan_bundle(
        layout,
        filter,
        withhold_others,
        bar,
        std::io::BufWriter::new(spill),
    )?;
    bar.set_message("writing");
    let mut spill = spill.into_inner().map_err(|e| e.into_error())?;
    spill.seek(std::io::SeekFrom::Start(0))?;
    plan.write_head(&note, &mut sink.out)?;
    std::io::copy(&mut spill, &mut sink.out).context("writing the export")?;
    plan.write_tail(
        |c| gatehouse_ledger::chunks::read_chunk(layout, c),
        &mut sink.out,
    )?;
    let mut summary = format!(
        "bundle: entries {}..{} of a signed tree of {}: {}",
        plan.manifest.first, plan.manifest.end, plan.manifest.checkpoint_size, plan.manifest.counts
    );
    if unsigned > 0 {
        summary.push_str(&format!(
            "\n{unsigned} newer entries are not signed by a checkpoint yet and are not in the bundle"
        ));
    }
    Ok(summary)
}

/// Scans the ledger into a bundle plan against the newest checkpoint, the range's records
/// into `items`; returns the plan, the checkpoint note, how many entries came after it, and
/// `items`.
pub(crate) fn plan_bundle<W: Write>(
    layout: &Layout,
    filter: &Filter,
    withhold_others: bool,
    bar: &ProgressBar,
    items: W,
) -> anyhow::Result<(bundle::Plan, String, u64, W)> {
    let newest = gatehouse_ledger::checkpoint::newest_checkpoint(layout)?;
    let (note, size) = (newest.note, newest.checkpoint.size);
    let mut builder = Builder::new(filter.clone(), withhold_others, size, items);
    let mut unsigned = 0u64;
    let mut failed = None;
    gatehouse_ledger::segment::scan_with(layout, |visit| {
        let (index, fed) = match visit {
            Visit::Entry(e) => {
                bar.inc(e.line.len() as u64 + 1);
                if e.index >= size {
                    unsigned += 1;
                    return Ok(());
                }
                (e.index, builder.entry(e.index, e.line))
            }
            Visit::Pruned(index, leaf) => (index, builder.pruned(index, leaf)),
        };
        if let Err(err) = fed
            && failed.is_none()
        {
            failed = Some(anyhow::anyhow!("entry {index}: {err}"));
        }
        Ok(())
    })
    .context("reading the ledger")?;
    if let Some(err) = failed {
        return Err(err);
    }
    let created = gatehouse_core::clock::micros_of(SystemTime::now());
    let generator = format!("gatehouse {}", env!("CARGO_PKG_VERSION"));
    let (plan, items) = builder.finish(created, &generator)?;
    Ok((plan, note, unsigned, items))
}

/// `gatehouse audit verify-export`.
fn verify_export(args: &VerifyExportArgs) -> anyhow::Result<ExitCode> {
    let key = crate::ledger_cmd::read_key(&args.pubkey)?;
    let file =
        File::open(&args.file).with_context(|| format!("cannot read {}", args.file.display()))?;
    match bundle::verify_with(BufReader::new(file), &key, false) {
        Ok(v) => {
            if args.json {
                outln!("{}", serde_json::to_string(&v)?);
            } else {
                print_verified(&v);
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            if args.json {
                outln!(
                    "{}",
                    serde_json::json!({"ok": false, "error": e.to_string()})
                );
            } else {
                eprintln!("FAILED: {}: {e}", args.file.display());
            }
            Ok(ExitCode::from(1))
        }
    }
}

fn print_verified(v: &Verified) {
    outln!(
        "verified: of the entries in the window, {}, all intact",
        v.counts
    );
    let time = |us: Option<u64>| {
        us.map_or("-".to_string(), |us| {
            humantime::format_rfc3339_micros(UNIX_EPOCH + Duration::from_micros(us)).to_string()
        })
    };
    outln!(
        "  query: since {} until {} user {} resource {}",
        time(v.query.since),
        time(v.query.until),
        v.query.user.as_deref().unwrap_or("-"),
        v.query.resource.as_deref().unwrap_or("-")
    );
    outln!(
        "  range: entries {}..{} of the signed tree of {} (origin {}, root {})",
        v.first,
        v.end,
        v.checkpoint_size,
        v.origin,
        v.root
    );
    outln!(
        "  window: {}",
        if v.window_complete {
            "complete (nothing missing, nothing altered)"
        } else {
            "its edges cannot be shown (see the notes)"
        }
    );
    for note in &v.notes {
        outln!("  note: {note}");
    }
}

/// `gatehouse audit report`: the window's bundle is built and verified in memory, and the
/// report is drawn from what verified. A ledger that does not verify still gets a report,
/// marked failed in red, from the entries as they are.
async fn report(args: ReportArgs) -> anyhow::Result<ExitCode> {
    use gatehouse_audit::report::{ReportInput, Verification, figures, render};
    let filter = filter(&args.window)?;
    let layout = ledger_in(&args.window.data_dir)?;
    let (key, key_source) = match &args.pubkey {
        Some(k) => (crate::ledger_cmd::read_key(k)?, "the given key"),
        None => {
            let path = layout.verifier_key();
            let key = std::fs::read_to_string(&path)
                .with_context(|| format!("reading the verifier key {}", path.display()))?;
            (key.trim().to_string(), "the key in the data directory")
        }
    };
    let output = args.output.clone();
    let (html, figures, verification) = tokio::task::spawn_blocking(move || {
        let bar = progress(&layout);
        let built = plan_bundle(&layout, &filter, false, &bar, Vec::new()).and_then(
            |(plan, note, _, items)| {
                let mut bytes = Vec::new();
                plan.write(
                    &note,
                    &items,
                    |c| gatehouse_ledger::chunks::read_chunk(&layout, c),
                    &mut bytes,
                )?;
                Ok(bundle::verify(bytes.as_slice(), &key)?)
            },
        );
        bar.finish_and_clear();
        let (verification, entries) = match built {
            Ok(v) => (
                Verification {
                    ok: true,
                    summary: format!(
                        "verified against {key_source}: entries {}..{} lead to the signed root; {}",
                        v.first,
                        v.end,
                        if v.window_complete {
                            "nothing in the window is missing or altered".to_string()
                        } else {
                            v.notes.join("; ")
                        }
                    ),
                    origin: v.origin,
                    checkpoint_size: v.checkpoint_size,
                    root: v.root,
                    matched: v.counts.matched,
                    excluded: v.counts.excluded,
                    pruned: v.counts.pruned,
                },
                v.entries,
            ),
            Err(e) => (
                Verification {
                    ok: false,
                    summary: format!("the ledger does not verify: {e:#}"),
                    origin: String::new(),
                    checkpoint_size: 0,
                    root: String::new(),
                    matched: 0,
                    excluded: 0,
                    pruned: 0,
                },
                unverified_entries(&layout, &filter)?,
            ),
        };
        let input = ReportInput {
            title: args.title,
            since: filter.since,
            until: filter.until,
            user: filter.user.clone(),
            resource: filter.resource.clone(),
            generated_at: gatehouse_core::clock::micros_of(SystemTime::now()),
            verification,
            entries: &entries,
        };
        let html = render(&input);
        anyhow::Ok((html, figures(&entries), input.verification))
    })
    .await??;
    let mut sink = Sink::open(Some(&output))?;
    sink.out.write_all(html.as_bytes())?;
    sink.finish()?;
    eprintln!(
        "{}: {} sessions, {} statements, {} denials, {} failed sign-ins, {} reviews, {} values masked",
        output.display(),
        figures.sessions,
        figures.statements,
        figures.denials,
        figures.auth_failures,
        figures.approval_requests,
        figures.masked_values
    );
    if verification.ok {
        eprintln!("{}", verification.summary);
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("WARNING: {}", verification.summary);
        Ok(ExitCode::from(1))
    }
}

/// The window's entries read without proof, for a report on a ledger that failed.
fn unverified_entries(layout: &Layout, filter: &Filter) -> anyhow::Result<Vec<(Value, String)>> {
    let mut out = Vec::new();
    gatehouse_ledger::segment::scan(layout, |e| {
        let v: Value = serde_json::from_slice(e.line).unwrap_or(Value::Null);
        if filter.matches(&v) {
            out.push((v, hex::encode(gatehouse_ledger::merkle::leaf_hash(e.line))));
        }
        Ok(())
    })
    .context("reading the ledger")?;
    Ok(out)
}
