//! The commands that talk to a coordinator, except `watch` ([`crate::watch`]):
//! `submit`, `status`, `results`, `cancel`, `workers`, `logs`, `show`. Each one
//! connects, makes one request and prints the answer.

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::{Context, bail};
use sweep_core::provenance::RunProvenance;
use sweep_core::results::{Format, ResultsTable};
use sweep_core::status::{JobEvent, WorkerStatus};
use sweep_core::sweep::SweepSpec;
use sweep_proto::pb;

use crate::client::{self, ConnectArgs};
use crate::tables;

/// `sweepctl results`.
#[derive(Debug, clap::Args)]
pub struct ResultsArgs {
    /// The sweep (default: the only one on the coordinator).
    pub sweep: Option<String>,
    /// Output format: table, md (markdown), csv or json.
    #[arg(long, default_value = "table", value_parser = parse_format)]
    pub format: Format,
    /// Write the results to this file instead of standard output.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
    /// Order the rows by a column: variant, n, test_acc, delta, p,
    /// best_val_acc, best_epoch, train_seconds, or a swept key (its path or
    /// last part); accuracies sort best first, a leading '-' reverses.
    #[arg(long, value_name = "COLUMN", allow_hyphen_values = true)]
    pub sort: Option<String>,
    /// Show only the first N rows (after --sort).
    #[arg(long, value_name = "N")]
    pub top: Option<usize>,
}

/// `sweepctl cancel`.
#[derive(Debug, clap::Args)]
#[group(required = true, multiple = false)]
pub struct CancelArgs {
    /// Cancel every job of this sweep that has not ended.
    #[arg(long)]
    pub sweep: Option<String>,
    /// Cancel one job (ids as `sweepctl status` lists them).
    #[arg(long, value_name = "JOB_ID")]
    pub job: Option<String>,
}

/// `sweepctl retry`.
#[derive(Debug, clap::Args)]
#[group(required = true, multiple = false)]
pub struct RetryArgs {
    /// Run every failed or cancelled job of this sweep again.
    #[arg(long)]
    pub sweep: Option<String>,
    /// Run this failed or cancelled job again (ids as `sweepctl status` lists them).
    #[arg(long, value_name = "JOB_ID")]
    pub job: Option<String>,
}

/// Format names go through `Format::from_str`, so an unknown one is refused
/// before anything is sent, with the list of accepted names.
fn parse_format(s: &str) -> Result<Format, String> {
    s.parse()
        .map_err(|e: sweep_core::results::UnknownFormat| e.to_string())
}

/// Empty means "every sweep" (or "the only one") in the protocol.
fn sweep_or_all(sweep: &Option<String>) -> String {
    sweep.clone().unwrap_or_default()
}

/// Loads the sweep here first, so that config errors name the file, the line
/// and the key before anything goes over the network; the coordinator
/// re-validates each resolved config.
pub async fn submit(connect: &ConnectArgs, path: PathBuf) -> anyhow::Result<()> {
    let spec = SweepSpec::load(&path)?;
    let request = pb::SubmitSweepRequest::from(&spec);
    let mut client = client::connect(connect).await?;
    let what = format!("submitting sweep {}", spec.name);
    let answer = client
        .submit_sweep(request)
        .await
        .map_err(|s| client::status_error(&connect.coordinator, &what, s))?
        .into_inner();
    println!(
        "submitted sweep {}: {} {} ({} new)",
        spec.name,
        answer.jobs,
        if answer.jobs == 1 { "job" } else { "jobs" },
        answer.new_jobs
    );
    Ok(())
}

/// Fetches a status snapshot; a named sweep that the coordinator does not
/// know is an error rather than an empty table.
pub async fn fetch_status(
    client: &mut client::Client,
    connect: &ConnectArgs,
    sweep: &Option<String>,
) -> anyhow::Result<pb::StatusSnapshot> {
    let snapshot = get_status(client, connect, sweep).await?;
    check_not_empty(&snapshot, connect, sweep)?;
    Ok(snapshot)
}

async fn get_status(
    client: &mut client::Client,
    connect: &ConnectArgs,
    sweep: &Option<String>,
) -> anyhow::Result<pb::StatusSnapshot> {
    Ok(client
        .get_status(pb::GetStatusRequest {
            sweep: sweep_or_all(sweep),
        })
        .await
        .map_err(|s| client::status_error(&connect.coordinator, "getting the status", s))?
        .into_inner())
}

/// An empty snapshot: no such sweep, or nothing submitted yet.
pub fn check_not_empty(
    snapshot: &pb::StatusSnapshot,
    connect: &ConnectArgs,
    sweep: &Option<String>,
) -> anyhow::Result<()> {
    if snapshot.sweeps.is_empty() {
        match sweep {
            Some(name) => bail!(
                "the coordinator at {} has no sweep named {name:?}",
                connect.coordinator
            ),
            None => bail!("the coordinator at {} {NO_SWEEPS_YET}", connect.coordinator),
        }
    }
    Ok(())
}

const NO_SWEEPS_YET: &str = "has no sweeps yet; submit one with `sweepctl submit <sweep dir>`";

/// A coordinator with no sweeps is not an error for `status`: it is the
/// answer (exit 0, so that a script polling a fresh coordinator does not
/// stop). A sweep asked for by name that does not exist is one.
pub async fn status(connect: &ConnectArgs, sweep: Option<String>, all: bool) -> anyhow::Result<()> {
    let mut client = client::connect(connect).await?;
    let snapshot = get_status(&mut client, connect, &sweep).await?;
    if snapshot.sweeps.is_empty() && sweep.is_none() {
        println!(
            "The coordinator at {} {NO_SWEEPS_YET}.",
            connect.coordinator
        );
        return Ok(());
    }
    check_not_empty(&snapshot, connect, &sweep)?;
    print!("{}", tables::render_status(&snapshot, all));
    Ok(())
}

/// Fetches one sweep's results table rendered in `format`.
pub async fn fetch_results(
    client: &mut client::Client,
    connect: &ConnectArgs,
    sweep: &Option<String>,
    format: Format,
) -> anyhow::Result<pb::GetResultsResponse> {
    let what = match sweep {
        Some(name) => format!("getting the results of sweep {name}"),
        None => "getting the results".to_string(),
    };
    Ok(client
        .get_results(pb::GetResultsRequest {
            sweep: sweep_or_all(sweep),
            format: format.to_string(),
        })
        .await
        .map_err(|s| client::status_error(&connect.coordinator, &what, s))?
        .into_inner())
}

pub async fn results(connect: &ConnectArgs, args: ResultsArgs) -> anyhow::Result<()> {
    let mut client = client::connect(connect).await?;
    let answer = fetch_results(&mut client, connect, &args.sweep, args.format).await?;
    let mut rendered = if args.sort.is_some() || args.top.is_some() {
        // Reordered here, from the table's JSON form, in any format.
        let mut table: ResultsTable =
            serde_json::from_str(&answer.json).context("reading the coordinator's results")?;
        if let Some(column) = &args.sort {
            table.sort_by(column)?;
        }
        if let Some(n) = args.top {
            table.truncate(n);
        }
        table.render(args.format)
    } else {
        answer.rendered
    };
    if !rendered.ends_with('\n') {
        rendered.push('\n');
    }
    match &args.output {
        Some(path) => {
            std::fs::write(path, &rendered)
                .with_context(|| format!("writing {}", path.display()))?;
            eprintln!(
                "wrote the results of sweep {} to {}",
                answer.sweep,
                path.display()
            );
        }
        None => {
            let mut stdout = std::io::stdout().lock();
            stdout
                .write_all(rendered.as_bytes())
                .context("writing to standard output")?;
            stdout.flush().context("writing to standard output")?;
        }
    }
    if answer.pending > 0 && matches!(args.format, Format::Csv | Format::Json) {
        // The table's notes say it in the other formats; here on stderr,
        // so that csv/json on stdout stay machine-readable.
        eprintln!(
            "note: {} jobs of sweep {} have not finished; these results are partial",
            answer.pending, answer.sweep
        );
    }
    Ok(())
}

/// What `cancel` and `retry` act on: a whole sweep or one job.
enum Jobs {
    Sweep(String),
    Job(String),
}

impl Jobs {
    fn new(sweep: Option<String>, job: Option<String>) -> anyhow::Result<Self> {
        match (sweep, job) {
            (Some(sweep), _) => Ok(Jobs::Sweep(sweep)),
            (None, Some(job)) => Ok(Jobs::Job(job)),
            // clap's group makes one of the two required.
            (None, None) => bail!("give --sweep NAME or --job JOB_ID"),
        }
    }

    /// As messages name it ("sweep NAME", "job ID"), and as a request's
    /// target, built with `sweep` or `job`.
    fn into_target<T>(self, sweep: fn(String) -> T, job: fn(String) -> T) -> (String, T) {
        match self {
            Jobs::Sweep(name) => (format!("sweep {name}"), sweep(name)),
            Jobs::Job(id) => (format!("job {id}"), job(id)),
        }
    }
}

pub async fn cancel(connect: &ConnectArgs, args: CancelArgs) -> anyhow::Result<()> {
    use pb::cancel_request::Target;
    let (what, target) = Jobs::new(args.sweep, args.job)?.into_target(Target::Sweep, Target::JobId);
    let mut client = client::connect(connect).await?;
    let answer = client
        .cancel(pb::CancelRequest {
            target: Some(target),
        })
        .await
        .map_err(|s| client::status_error(&connect.coordinator, &format!("cancelling {what}"), s))?
        .into_inner();
    match answer.cancelled {
        0 => println!("{what}: nothing to cancel (it has ended)"),
        1 => println!("{what}: cancelled 1 job"),
        n => println!("{what}: cancelled {n} jobs"),
    }
    Ok(())
}

pub async fn retry(connect: &ConnectArgs, args: RetryArgs) -> anyhow::Result<()> {
    use pb::retry_request::Target;
    let (what, target) = Jobs::new(args.sweep, args.job)?.into_target(Target::Sweep, Target::JobId);
    let mut client = client::connect(connect).await?;
    let answer = client
        .retry(pb::RetryRequest {
            target: Some(target),
        })
        .await
        .map_err(|s| client::status_error(&connect.coordinator, &format!("retrying {what}"), s))?
        .into_inner();
    match (answer.retried, answer.still_stopping) {
        (0, 0) => println!("{what}: no failed or cancelled job to retry"),
        (0, _) => {}
        (1, _) => println!("{what}: 1 job back in the queue (resuming from its last checkpoint)"),
        (n, _) => {
            println!("{what}: {n} jobs back in the queue (each resuming from its last checkpoint)")
        }
    }
    if answer.still_stopping > 0 {
        let wait = format!(
            "{what}: {} cancelled {} may still be stopping on a worker; retry again once \
             the lease has expired (the coordinator's --lease-timeout, 30 s by default)",
            answer.still_stopping,
            if answer.still_stopping == 1 {
                "job"
            } else {
                "jobs"
            }
        );
        // Nothing done at all is a refusal a script must see.
        if answer.retried == 0 {
            anyhow::bail!(wait);
        }
        println!("{wait}");
    }
    Ok(())
}

pub async fn workers(connect: &ConnectArgs) -> anyhow::Result<()> {
    let mut client = client::connect(connect).await?;
    let workers: Vec<WorkerStatus> = client
        .list_workers(pb::ListWorkersRequest {})
        .await
        .map_err(|s| client::status_error(&connect.coordinator, "listing workers", s))?
        .into_inner()
        .workers
        .into_iter()
        .map(Into::into)
        .collect();
    if workers.is_empty() {
        println!(
            "no workers have registered with the coordinator at {}",
            connect.coordinator
        );
        return Ok(());
    }
    let now_ms = chrono::Utc::now().timestamp_millis();
    println!("{}", tables::workers_table(&workers, now_ms));
    Ok(())
}

pub async fn logs(connect: &ConnectArgs, job: String) -> anyhow::Result<()> {
    let mut client = client::connect(connect).await?;
    let events: Vec<JobEvent> = client
        .get_job_logs(pb::GetJobLogsRequest {
            job_id: job.clone(),
        })
        .await
        .map_err(|s| {
            client::status_error(
                &connect.coordinator,
                &format!("getting the log of job {job}"),
                s,
            )
        })?
        .into_inner()
        .events
        .into_iter()
        .map(Into::into)
        .collect();
    if events.is_empty() {
        bail!(
            "no events for job {job:?} on the coordinator at {}; `sweepctl status` lists the job ids",
            connect.coordinator
        );
    }
    print!("{}", tables::render_logs(&events));
    Ok(())
}

pub async fn show(connect: &ConnectArgs, job: String, json: bool) -> anyhow::Result<()> {
    let mut client = client::connect(connect).await?;
    let answer = client
        .get_provenance(pb::GetProvenanceRequest {
            job_id: job.clone(),
        })
        .await
        .map_err(|s| {
            client::status_error(
                &connect.coordinator,
                &format!("getting the provenance of job {job}"),
                s,
            )
        })?
        .into_inner();
    let provenance = RunProvenance::try_from(answer)
        .with_context(|| format!("reading the provenance of job {job}"))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&provenance)?);
    } else {
        print!("{}", provenance.render());
    }
    Ok(())
}
