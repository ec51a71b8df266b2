//! `ghost bench lab`: the fan-out benchmark ([`bench::fanout`]) over a matrix of network
//! paths, its viewers behind the network lab and its streamer near the stack. Each cell is a
//! short run of its own (a fresh stream, a fresh lab); the command prints a table and writes
//! `lab.json` and a chart of delay against loss per round-trip time.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use api::client::FanoutReport;
use serde::{Deserialize, Serialize};

use crate::bench::{self, Carrier, FanoutArgs, Target};
use crate::chart;
use crate::exit::{self, Exit, Outcome};

/// Why the matrix could not run, or its results not be written.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A cell could not start (no lab, no stack): the next would fail the same way.
    #[error(transparent)]
    Bench(#[from] bench::Error),
    /// The output directory could not be made.
    #[error("making {}", path.display())]
    MakeDir {
        /// The directory.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// `lab.json` could not be encoded.
    #[error("encoding lab.json")]
    Encode(#[source] serde_json::Error),
    /// A file could not be written.
    #[error("writing {}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// A chart could not be drawn.
    #[error(transparent)]
    Chart(#[from] chart::Error),
}

impl Outcome for Error {
    fn exit(&self) -> Option<&Exit> {
        match self {
            Error::Bench(e) => e.exit(),
            _ => None,
        }
    }
}

/// Round-trip times of the matrix, milliseconds.
const RTTS_MS: [u64; 2] = [20, 100];

/// Random loss rates of the full matrix, percent.
const LOSSES: [f64; 4] = [0.0, 0.5, 2.0, 5.0];

/// Random loss rates of the quick matrix, percent.
const QUICK_LOSSES: [f64; 2] = [0.0, 2.0];

/// The bursty case: 2% of packets lost in bursts of 4 on average, as on a radio link that
/// fades, at the same rate as one of the random cases so the two compare.
const BURST_LOSS: f64 = 2.0;
const BURST_LENGTH: f64 = 4.0;

/// The rate-capped case: the path carries this many times the viewers' combined stream
/// rate, so each viewer's fair share is this many times one stream.
const RATE_HEADROOM: f64 = 1.2;

/// `ghost bench lab` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct LabArgs {
    /// A short matrix for a first look: 5 viewers, 4 s a cell, RTT 20 and 100 ms × loss 0
    /// and 2% × the carriers.
    #[arg(long)]
    pub quick: bool,
    /// Where `lab.json` and the charts (`delay-rtt<N>ms.svg`) go; made if missing.
    #[arg(long, value_name = "DIR", default_value = "ghost-lab")]
    pub out: PathBuf,
    /// Viewers in each cell [default: 20; 5 with --quick].
    #[arg(long)]
    pub viewers: Option<usize>,
    /// Measured time of each cell, after its ramp [default: 15s; 4s with --quick].
    #[arg(long)]
    pub duration: Option<humantime::Duration>,
    /// The carriers of each path, in this order; `quic-one-stream`, the control case (every
    /// group on one QUIC stream), is left out unless named, so the matrix keeps its length.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_values_t = Carrier::ALL,
        value_name = "CARRIER,..."
    )]
    pub carriers: Vec<Carrier>,
    /// Run only the matrix's first N cells (tests of the command itself).
    #[arg(long, hide = true, value_name = "N")]
    pub cells: Option<usize>,
}

/// One cell of the matrix, before it runs.
#[derive(Debug, Clone, PartialEq)]
pub struct Spec {
    /// The viewers' carrier.
    pub carrier: Carrier,
    /// The path between the viewers and the stack.
    pub impairment: netlab::Impairment,
}

/// The kind of path a cell measures, which says where it goes in the charts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PathKind {
    /// Independent random loss (0 included): a point on the charts' loss axis.
    Random,
    /// Loss in bursts.
    Bursty,
    /// A rate cap a little above the viewers' stream rate.
    RateCapped,
}

/// One measured cell.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Cell {
    /// The viewers' carrier: `quic`, `webtransport`, `websocket` or `quic-one-stream`.
    pub carrier: String,
    /// Round-trip time the path added, milliseconds.
    pub rtt_ms: u64,
    /// Loss rate of the path, percent.
    pub loss_percent: f64,
    /// What kind of path it was.
    pub path: PathKind,
    /// The run's figures; `impairment` in it is the path in full.
    pub report: FanoutReport,
    /// Viewers that failed for a reason other than capacity, counted by reason.
    pub failures: BTreeMap<String, usize>,
}

/// `lab.json`: the matrix as run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// Whether it was the quick matrix.
    pub quick: bool,
    /// Viewers in each cell.
    pub viewers: usize,
    /// Measured seconds of each cell.
    pub duration_s: f64,
    /// Frames per second of the synthetic stream.
    pub fps: u32,
    /// Bytes per frame of the synthetic stream.
    pub frame_size: usize,
    /// The cells, in the order they ran.
    pub cells: Vec<Cell>,
}

/// The matrix: for each round-trip time, each loss (and, in the full matrix, a bursty case
/// and a rate-capped one), each of `carriers`. `stream_bps` is one viewer's stream rate.
pub fn matrix(quick: bool, viewers: usize, stream_bps: f64, carriers: &[Carrier]) -> Vec<Spec> {
    let mut paths = Vec::new();
    for rtt_ms in RTTS_MS {
        let base = netlab::Impairment {
            rtt: Duration::from_millis(rtt_ms),
            ..Default::default()
        };
        let losses: &[f64] = if quick { &QUICK_LOSSES } else { &LOSSES };
        for &loss_percent in losses {
            paths.push(netlab::Impairment {
                loss_percent,
                ..base
            });
        }
        if !quick {
            paths.push(netlab::Impairment {
                loss_percent: BURST_LOSS,
                burst: Some(BURST_LENGTH),
                ..base
            });
            let rate = RATE_HEADROOM * stream_bps * viewers.max(1) as f64;
            paths.push(netlab::Impairment {
                rate_bps: Some(rate.round().max(1_000.0) as u64),
                ..base
            });
        }
    }
    paths
        .into_iter()
        .flat_map(|impairment| {
            carriers.iter().map(move |&carrier| Spec {
                carrier,
                impairment,
            })
        })
        .collect()
}

fn path_kind(impairment: &netlab::Impairment) -> PathKind {
    if impairment.rate_bps.is_some() {
        PathKind::RateCapped
    } else if impairment.burst.is_some() {
        PathKind::Bursty
    } else {
        PathKind::Random
    }
}

/// Runs the matrix against `stack`, writes `lab.json` and the charts into `args.out`, and
/// returns the report. `progress` hears a line per cell as it starts.
pub async fn run(
    stack: &Target,
    args: &LabArgs,
    progress: &(dyn Fn(&str) + Send + Sync),
) -> Result<Report, Error> {
    let viewers = args.viewers.unwrap_or(if args.quick { 5 } else { 20 });
    let duration: Duration = args.duration.map_or(
        Duration::from_secs(if args.quick { 4 } else { 15 }),
        Into::into,
    );
    let ramp = Duration::from_secs(if args.quick { 1 } else { 2 });
    // Long enough for a join's catch-up burst to cross the longest path of the matrix.
    let settle = Duration::from_secs(1);
    let (fps, frame_size) = (30u32, 8000usize);
    let stream_bps = f64::from(fps) * frame_size as f64 * 8.0;
    let mut specs = matrix(args.quick, viewers, stream_bps, &args.carriers);
    if let Some(n) = args.cells {
        specs.truncate(n);
    }
    std::fs::create_dir_all(&args.out).map_err(|source| Error::MakeDir {
        path: args.out.clone(),
        source,
    })?;
    let mut report = Report {
        quick: args.quick,
        viewers,
        duration_s: duration.as_secs_f64(),
        fps,
        frame_size,
        cells: Vec::new(),
    };
    let count = specs.len();
    for (i, spec) in specs.into_iter().enumerate() {
        progress(&format!(
            "lab cell {}/{count}: {} viewers over {}, path {}",
            i + 1,
            viewers,
            spec.carrier.name(),
            spec.impairment
        ));
        let fanout_args = FanoutArgs {
            viewers,
            transport: spec.carrier,
            impair: Some(spec.impairment),
            stream: None,
            streams: 1,
            slow_viewers: 0,
            webtransport: 0,
            websocket: 0,
            fps,
            frame_size,
            group: 60,
            duration: duration.into(),
            ramp: ramp.into(),
            settle: settle.into(),
            json: false,
            profile: None,
        };
        // A cell that cannot start (no lab, no stack) ends the matrix: the next would fail
        // the same way.
        let run = bench::fanout(stack, fanout_args).await?;
        report.cells.push(Cell {
            carrier: spec.carrier.name().to_owned(),
            rtt_ms: u64::try_from(spec.impairment.rtt.as_millis()).unwrap_or(u64::MAX),
            loss_percent: spec.impairment.loss_percent,
            path: path_kind(&spec.impairment),
            report: run.report,
            failures: run.failures,
        });
    }
    write(&args.out, &report)?;
    Ok(report)
}

/// Writes `lab.json` and one chart per round-trip time into `dir`.
pub fn write(dir: &Path, report: &Report) -> Result<(), Error> {
    let json = serde_json::to_vec_pretty(report).map_err(Error::Encode)?;
    let file = dir.join("lab.json");
    std::fs::write(&file, json).map_err(|source| Error::Write { path: file, source })?;
    let mut rtts: Vec<u64> = report.cells.iter().map(|c| c.rtt_ms).collect();
    rtts.sort_unstable();
    rtts.dedup();
    for rtt in rtts {
        let lines: Vec<chart::Line> = Carrier::WITH_CONTROL
            .iter()
            .filter_map(|carrier| {
                let mut points: Vec<(f64, f64, f64)> = report
                    .cells
                    .iter()
                    .filter(|c| {
                        c.rtt_ms == rtt && c.carrier == carrier.name() && c.path == PathKind::Random
                    })
                    .map(|c| {
                        (
                            c.loss_percent,
                            c.report.latency_ms.p50,
                            c.report.latency_ms.p99,
                        )
                    })
                    .collect();
                points.sort_by(|a, b| a.0.total_cmp(&b.0));
                (!points.is_empty()).then(|| chart::Line {
                    carrier: carrier.name().to_owned(),
                    points,
                })
            })
            .collect();
        let svg = chart::delay_against_loss(rtt, &lines)?;
        let file = dir.join(format!("delay-rtt{rtt}ms.svg"));
        std::fs::write(&file, svg).map_err(|source| Error::Write { path: file, source })?;
    }
    Ok(())
}

/// The matrix as a table, a line per cell.
pub fn table(report: &Report) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<15} {:>5} {:<16} {:>8} {:>8} {:>8} {:>6} {:>8} {:>7} {:>9} {:>9}",
        "carrier",
        "rtt",
        "path",
        "p50 ms",
        "p99 ms",
        "max ms",
        "late",
        "stall/m",
        "skipped",
        "CPU-s/GB",
        "delivered"
    );
    for cell in &report.cells {
        let r = &cell.report;
        let path = match cell.path {
            PathKind::Random => format!("loss {}%", cell.loss_percent),
            PathKind::Bursty => format!("loss {}% bursty", cell.loss_percent),
            PathKind::RateCapped => format!("rate {RATE_HEADROOM}x"),
        };
        let _ = writeln!(
            out,
            "{:<15} {:>5} {:<16} {:>8.1} {:>8.1} {:>8.1} {:>6} {:>7.2}s {:>7} {:>9.1} {:>9.4}",
            cell.carrier,
            format!("{}ms", cell.rtt_ms),
            path,
            r.latency_ms.p50,
            r.latency_ms.p99,
            r.latency_ms.max,
            r.late_frames,
            r.stall_s_per_min,
            r.skipped_groups,
            r.relay_cpu_s_per_gb,
            r.delivered_ratio,
        );
    }
    out
}

/// The matrix's verdict: a cell where no viewer watched, or where some failed, measured
/// less than it says.
pub fn verdict(report: &Report) -> Result<(), Exit> {
    let broken: Vec<String> = report
        .cells
        .iter()
        .filter(|c| c.report.admitted == 0 || !c.failures.is_empty())
        .map(|c| format!("{} over {}", c.carrier, c.report.impairment))
        .collect();
    if broken.is_empty() {
        Ok(())
    } else {
        Err(Exit::new(
            exit::FAILURE,
            format!(
                "{} cells had viewers that failed or none admitted: {}",
                broken.len(),
                broken.join("; ")
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_full_matrix_covers_every_carrier_rtt_and_loss() {
        let cells = matrix(false, 20, 1_920_000.0, &Carrier::ALL);
        // Two RTTs × (four losses, a bursty case, a capped one) × three carriers.
        assert_eq!(cells.len(), 2 * 6 * 3);
        for carrier in Carrier::ALL {
            for rtt in RTTS_MS {
                let of = |kind| {
                    cells
                        .iter()
                        .filter(|c| {
                            c.carrier == carrier
                                && c.impairment.rtt == Duration::from_millis(rtt)
                                && path_kind(&c.impairment) == kind
                        })
                        .count()
                };
                assert_eq!(of(PathKind::Random), 4);
                assert_eq!(of(PathKind::Bursty), 1);
                assert_eq!(of(PathKind::RateCapped), 1);
            }
        }
        let capped = cells
            .iter()
            .find_map(|c| c.impairment.rate_bps)
            .expect("a capped cell");
        assert_eq!(capped, 46_080_000);
    }

    #[test]
    fn the_quick_matrix_is_twelve_cells_of_random_loss() {
        let cells = matrix(true, 5, 1_920_000.0, &Carrier::ALL);
        assert_eq!(cells.len(), 12);
        assert!(
            cells
                .iter()
                .all(|c| path_kind(&c.impairment) == PathKind::Random)
        );
        // Its first cell is the native carrier on the shortest, cleanest path.
        assert_eq!(cells[0].carrier, Carrier::Quic);
        assert_eq!(cells[0].impairment.to_string(), "rtt=20ms");
    }

    #[test]
    fn the_control_carrier_is_a_column_only_when_asked_for() {
        let asked = [Carrier::Quic, Carrier::QuicOneStream, Carrier::Websocket];
        let cells = matrix(true, 5, 1_920_000.0, &asked);
        assert_eq!(cells.len(), 4 * 3);
        let first: Vec<Carrier> = cells.iter().take(3).map(|c| c.carrier).collect();
        assert_eq!(first, asked);
        assert!(
            !matrix(true, 5, 1_920_000.0, &Carrier::ALL)
                .iter()
                .any(|c| c.carrier == Carrier::QuicOneStream)
        );
    }
}
