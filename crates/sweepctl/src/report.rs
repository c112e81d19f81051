//! `sweepctl report`: the per-sweep report (`index.html` + `report.md`) and
//! the seed-averaged TensorBoard files, from a sweep's run directories on
//! this machine (the coordinator's `--state-dir`, or a copy of it). Needs no
//! coordinator and no libtorch.

use std::path::PathBuf;

use anyhow::{Context, bail};

#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// The sweep (a directory under --runs); default: the only sweep there.
    pub sweep: Option<String>,
    /// Where the sweeps' run directories are (the coordinator's --state-dir).
    #[arg(long, default_value = "runs", value_name = "DIR")]
    pub runs: PathBuf,
    /// Where to write index.html and report.md (default: <runs>/<sweep>/report).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// The reference variant (default: the one results.json names, else "baseline").
    #[arg(long)]
    pub baseline: Option<String>,
}

pub fn run(args: ReportArgs) -> anyhow::Result<()> {
    let sweep = match args.sweep {
        Some(s) => {
            sweep_core::names::validate("sweep", &s)?;
            s
        }
        None => only_sweep(&args.runs)?,
    };
    let sweep_dir = args.runs.join(&sweep);
    if !sweep_dir.is_dir() {
        bail!(
            "{}: no such sweep directory (give the sweep's name and --runs, the coordinator's --state-dir)",
            sweep_dir.display()
        );
    }
    let data = sweep_report::SweepData::load(&sweep_dir, args.baseline.as_deref())
        .with_context(|| format!("reading sweep {sweep}"))?;
    let out = args.out.unwrap_or_else(|| sweep_dir.join("report"));
    let written = sweep_report::report::write_data(&data, &out)?;
    for problem in &written.problems {
        eprintln!("warning: {problem}");
    }
    match sweep_report::aggregate::write_aggregate(&data) {
        Ok(files) if !files.is_empty() => eprintln!(
            "TensorBoard seed averages: {}",
            sweep_dir
                .join(sweep_report::aggregate::AGGREGATE_DIR)
                .display()
        ),
        Ok(_) => {}
        Err(e) => eprintln!("warning: writing the TensorBoard seed averages: {e}"),
    }
    println!("{}", written.html.display());
    println!("{}", written.markdown.display());
    Ok(())
}

/// The one sweep directory under `runs` (one holding variant/seed-N runs).
fn only_sweep(runs: &std::path::Path) -> anyhow::Result<String> {
    if !runs.is_dir() {
        bail!(
            "{}: no such directory (give --runs, the coordinator's --state-dir)",
            std::path::absolute(runs)
                .unwrap_or_else(|_| runs.to_path_buf())
                .display()
        );
    }
    let entries = std::fs::read_dir(runs).with_context(|| format!("listing {}", runs.display()))?;
    let mut sweeps: Vec<String> = entries
        .filter_map(Result::ok)
        .filter(|e| e.path().is_dir())
        .filter(|e| {
            // A sweep holds variant directories that hold seed-N directories.
            std::fs::read_dir(e.path())
                .into_iter()
                .flatten()
                .flatten()
                .any(|v| {
                    std::fs::read_dir(v.path())
                        .into_iter()
                        .flatten()
                        .flatten()
                        .any(|s| s.file_name().to_string_lossy().starts_with("seed-"))
                })
        })
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .collect();
    sweeps.sort();
    match sweeps.as_slice() {
        [one] => Ok(one.clone()),
        [] => bail!(
            "{}: no sweep found (give --runs, the coordinator's --state-dir)",
            runs.display()
        ),
        many => bail!(
            "{}: several sweeps ({}); name one",
            runs.display(),
            many.join(", ")
        ),
    }
}
