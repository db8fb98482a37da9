//! SVG plots of a comparison, drawn with `plotters` (no Python needed), one
//! module per kind of plot:
//!
//! - [`panels`]: a figure against connections, and server CPU at matched load;
//! - [`spectrum`]: latency by percentile;
//! - [`over_time`]: throughput over the measured phase;
//! - [`style`]: each label's colour, marker and dash, fonts and the legend.
//!
//! No font is loaded: plotters is built without a font backend, so it lays
//! text out from an estimate of its width, and the SVG names a generic
//! `sans-serif` family that the viewer (a browser, GitHub) renders. Nothing
//! needs to be installed for the plots.

mod over_time;
mod panels;
mod spectrum;
pub mod style;

use std::path::Path;

use anyhow::anyhow;

use crate::analyse::{Analysis, PointStats, Purpose, Run};
use panels::{VsConns, YAxis};
pub use style::{font_px, peer_color, DISPLAY_WIDTH_PX};

/// The font family the SVGs ask the viewer for.
const FAMILY: &str = "sans-serif";

/// Every file [`draw_all`] may write.
pub const PLOT_FILES: [&str; 7] = [
    "throughput_vs_conns.svg",
    "server_cpu_vs_conns.svg",
    "throughput_over_time.svg",
    "latency_spectrum.svg",
    "cost_at_matched_load.svg",
    "conversations_vs_msgs.svg",
    "server_cpu_per_conn.svg",
];

/// The smallest text, in px as displayed at [`DISPLAY_WIDTH_PX`].
pub const MIN_TEXT_PX: f64 = 14.0;

/// One line drawn in a plot and how many points it has.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    /// The panel and the label, e.g. `tcp, 128 B: uring`.
    pub name: String,
    pub points: usize,
}

impl Series {
    fn new(name: String, points: usize) -> Series {
        Series { name, points }
    }
}

/// One plot file written to the output directory.
#[derive(Clone, Debug, PartialEq)]
pub struct PlotFile {
    /// File name, relative to the output directory.
    pub file: String,
    pub title: String,
    /// What the plot leaves out and where it is instead, for the README.
    pub note: Option<String>,
    /// Every line drawn (a test holds that none is a lone point).
    pub series: Vec<Series>,
}

/// What [`draw_all`] drew, and why it drew no more.
pub struct Drawn {
    pub files: Vec<PlotFile>,
    /// A sentence for each plot that was not drawn.
    pub skipped: Vec<String>,
}

/// Draws every plot the runs allow into `dir`, a fresh staging directory.
/// It removes nothing: a stale plot in the output directory is removed when
/// the staging directory is published, and only if compare's manifest shows
/// it wrote that very file.
pub fn draw_all(runs: &[Run], analysis: &Analysis, open_rate: Option<f64>, dir: &Path) -> anyhow::Result<Drawn> {
    let medians = crate::analyse::median_runs(runs);
    let mut drawn = Drawn {
        files: Vec::new(),
        skipped: Vec::new(),
    };
    draw_closed_loop(analysis, dir, &mut drawn)?;
    // Every repetition: the plot draws each label's median run and the others faint.
    let closed: Vec<Run> = runs
        .iter()
        .filter(|r| !r.record.spec.is_open_loop() && r.record.spec.conn_msgs.is_none())
        .cloned()
        .collect();
    if !closed.is_empty() {
        draw_over_time_plot(&closed, dir, &mut drawn)?;
    }
    let open: Vec<Run> = medians
        .iter()
        .filter(|r| crate::analyse::point_key(r).is_latency_view())
        .cloned()
        .collect();
    if let Some(first) = open.first() {
        let s = &first.record.spec;
        let rate = open_rate
            .map(|r| format!(", {r:.0} msgs/s offered"))
            .unwrap_or_default();
        let title = format!(
            "Latency by percentile, open loop: {}, {}, {} connections{rate}",
            s.transport,
            size_label(s.size_bytes),
            s.requested_conns
        );
        let file = PLOT_FILES[3];
        let series = spectrum::draw_spectrum(&open, &dir.join(file), &title)?;
        drawn.files.push(plot_file(file, title, None, series));
    }
    let sweep: Vec<&PointStats> = analysis
        .points
        .iter()
        .filter(|p| matches!(p.key.purpose, Purpose::MatchedLoad { .. }) && p.key.conn_msgs.is_none())
        .collect();
    let lone_rate = sweep.iter().any(|p| {
        let rates = sweep
            .iter()
            .filter(|q| {
                (q.key.transport, q.key.size_bytes, q.key.conns) == (p.key.transport, p.key.size_bytes, p.key.conns)
            })
            .count();
        rates < 2
    });
    if !sweep.is_empty() && lone_rate {
        // One offered rate per point (the full run's 50%) would draw every
        // backend as a lone point: the verdict table says it better.
        drawn.skipped.push(
            "No matched-load plot: the sweep offered one rate per point, so each backend would be a lone point; \
             its ratios are the verdict table's matched-load rows."
                .into(),
        );
    } else if !sweep.is_empty() {
        let title = "Server CPU per message at matched offered load (open loop)".to_string();
        let file = PLOT_FILES[4];
        let series = panels::draw_matched_load(&sweep, &dir.join(file), &title)?;
        drawn.files.push(plot_file(file, title, None, series));
    }
    draw_conversations(analysis, dir, &mut drawn)?;
    Ok(drawn)
}

fn plot_file(file: &str, title: String, note: Option<String>, series: Vec<Series>) -> PlotFile {
    PlotFile {
        file: file.into(),
        title,
        note,
        series,
    }
}

/// Throughput and server CPU against connections, over the closed-loop points.
fn draw_closed_loop(analysis: &Analysis, dir: &Path, drawn: &mut Drawn) -> anyhow::Result<()> {
    let peaks: Vec<&PointStats> = analysis
        .points
        .iter()
        .filter(|p| p.key.purpose == Purpose::Peak && p.key.conn_msgs.is_none())
        .collect();
    if panels::sizes_with_a_line(&peaks).is_empty() {
        if !peaks.is_empty() {
            drawn
                .skipped
                .push("No plot against connections: no message size ran at two connection counts.".into());
        }
        return Ok(());
    }
    let note = one_count_note(&peaks);
    let title = "Throughput vs connections (closed loop)".to_string();
    let plot = VsConns {
        title: &title,
        y_desc: "msgs/s",
        y_axis: YAxis::Linear,
        value: |p: &crate::analyse::PeerStats| p.msgs_per_s,
    };
    let series = panels::draw_vs_conns(&peaks, &dir.join(PLOT_FILES[0]), plot)?;
    drawn.files.push(plot_file(PLOT_FILES[0], title, note.clone(), series));
    let title = "Server CPU per message vs connections (closed loop, log scale)".to_string();
    let plot = VsConns {
        title: &title,
        y_desc: "server CPU µs / msg",
        y_axis: YAxis::Log,
        value: |p: &crate::analyse::PeerStats| p.server_cpu_us_per_msg,
    };
    let series = panels::draw_vs_conns(&peaks, &dir.join(PLOT_FILES[1]), plot)?;
    drawn.files.push(plot_file(PLOT_FILES[1], title, note, series));
    Ok(())
}

/// The conversation axis (closed loop): connections/s, and server CPU per
/// connection by backend, each against messages per connection.
fn draw_conversations(analysis: &Analysis, dir: &Path, drawn: &mut Drawn) -> anyhow::Result<()> {
    let conv: Vec<&PointStats> = analysis
        .points
        .iter()
        .filter(|p| p.key.purpose == Purpose::Peak && p.key.conn_msgs.is_some())
        .collect();
    if conv.is_empty() {
        return Ok(());
    }
    let title = "Connections per second vs messages per connection (closed loop)".to_string();
    let plot = VsConns {
        title: &title,
        y_desc: "connections/s",
        y_axis: YAxis::Log,
        value: |p: &crate::analyse::PeerStats| p.conv.as_ref()?.conns_per_s,
    };
    let series = panels::draw_vs_conn_msgs(&conv, &dir.join(PLOT_FILES[5]), plot)?;
    let note = Some(
        "On loopback the connecting side carries most of the handshake: hollow markers are runs loadgen limited, \
         where connections/s measures loadgen; compare servers by CPU per connection."
            .to_string(),
    );
    drawn.files.push(plot_file(PLOT_FILES[5], title, note, series));
    let title = "Server CPU per connection vs messages per connection (closed loop, log)".to_string();
    let plot = VsConns {
        title: &title,
        y_desc: "server CPU µs / connection",
        y_axis: YAxis::Log,
        value: |p: &crate::analyse::PeerStats| p.conv.as_ref()?.server_cpu_us_per_conn,
    };
    let series = panels::draw_vs_conn_msgs(&conv, &dir.join(PLOT_FILES[6]), plot)?;
    drawn.files.push(plot_file(PLOT_FILES[6], title, None, series));
    Ok(())
}

/// The sizes that ran at one connection count only, which the plots
/// against connections leave out: `4 KiB ran at 100 connections only ...`.
fn one_count_note(peaks: &[&PointStats]) -> Option<String> {
    let with_line = panels::sizes_with_a_line(peaks);
    let mut alone: Vec<(u64, u64)> = peaks
        .iter()
        .filter(|p| !with_line.contains(&p.key.size_bytes))
        .map(|p| (p.key.size_bytes, p.key.conns))
        .collect();
    alone.sort_unstable();
    alone.dedup();
    if alone.is_empty() {
        return None;
    }
    let words: Vec<String> = alone
        .iter()
        .map(|&(size, conns)| format!("{} ran at {conns} connections only", size_label(size)))
        .collect();
    Some(format!(
        "{}, so it is not plotted against connections; its figures are in the tables below.",
        words.join("; ")
    ))
}

/// Throughput over time, when loadgen's buckets make a line of every run;
/// else a sentence saying why not.
fn draw_over_time_plot(closed: &[Run], dir: &Path, drawn: &mut Drawn) -> anyhow::Result<()> {
    let point = over_time::over_time_point(closed);
    let lines = over_time::over_time_lines(closed, point);
    let fewest = over_time::fewest_buckets(&lines);
    if lines.is_empty() {
        drawn
            .skipped
            .push("No throughput-over-time plot: no closed-loop result file holds a throughput series.".into());
        return Ok(());
    }
    if fewest < over_time::MIN_BUCKETS {
        let bucket = over_time::bucket_s(&lines);
        let remedy = if bucket >= 1.0 {
            "The loadgen that wrote them recorded a bucket a second; loadgen now records 100 ms buckets, so a \
             new run draws the plot."
        } else {
            "A longer --duration draws it."
        };
        drawn.skipped.push(format!(
            "No throughput-over-time plot: the result files hold throughput in {} s buckets, {fewest} per run in \
             the {} s measured phase, and a line needs {}. {remedy}",
            over_time::seconds(bucket),
            over_time::seconds(over_time::window_s(&lines)),
            over_time::MIN_BUCKETS
        ));
        return Ok(());
    }
    let title = format!(
        "Throughput over time, {} connections ({}, {}), closed loop",
        point.conns,
        point.transport,
        size_label(point.size_bytes)
    );
    let file = PLOT_FILES[2];
    let series = over_time::draw_over_time(&lines, &dir.join(file), &title)?;
    drawn.files.push(plot_file(file, title, None, series));
    Ok(())
}

fn plot_err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("drawing: {e:?}")
}

/// `128 B`, `4 KiB`.
pub fn size_label(size: u64) -> String {
    if size >= 1024 && size % 1024 == 0 {
        format!("{} KiB", size / 1024)
    } else {
        format!("{size} B")
    }
}

/// A count on an axis: `1`, `10`, `100`, `1k`, `10k`, `25k`, `1.5k`.
pub fn axis_count(v: f64) -> String {
    if v >= 1e3 && (v / 1e3).fract().abs() < 1e-9 {
        format!("{:.0}k", v / 1e3)
    } else if v >= 1.0 && v.fract().abs() < 1e-9 {
        format!("{v:.0}")
    } else {
        human(v)
    }
}

/// 1234567 -> `1.2M`, 45000 -> `45k`, 3.25 -> `3.25`.
pub fn human(v: f64) -> String {
    let a = v.abs();
    if a >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if a >= 1e4 {
        format!("{:.0}k", v / 1e3)
    } else if a >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else if a >= 10.0 || a == 0.0 {
        format!("{v:.0}")
    } else if a >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// The percentile at x = 1/(1-p): 1 -> `0%`, 10 -> `90%`, 1000 -> `99.9%`.
pub fn percentile_label(x: f64) -> String {
    let pct = 100.0 * (1.0 - 1.0 / x);
    let decimals = (x.log10().round() as i64 - 2).clamp(0, 5) as usize;
    format!("{pct:.decimals$}%")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyse::points::{point_stats, RunFacts};
    use crate::analyse::PointKey;
    use crate::plan::Peer;
    use sockbench::net::Transport;
    use sockbench::server::BackendKind;

    /// Every `font-size` in `svg`, as shown when the SVG is displayed
    /// [`DISPLAY_WIDTH_PX`] wide.
    fn displayed_font_sizes(svg: &str) -> Vec<f64> {
        let width: f64 = svg
            .split("width=\"")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .and_then(|s| s.parse().ok())
            .unwrap();
        svg.split("font-size=\"")
            .skip(1)
            .filter_map(|s| s.split('"').next()?.parse::<f64>().ok())
            .map(|px| px * (DISPLAY_WIDTH_PX / width).min(1.0))
            .collect()
    }

    fn sweep_facts() -> Vec<RunFacts> {
        let mut facts = Vec::new();
        for (conns, base) in [(100u64, 40_000.0), (1_000, 30_000.0)] {
            for fraction in [0.25, 0.5, 0.75] {
                for rep in 1..=5u32 {
                    for (peer, cpu) in [(BackendKind::Epoll, 5.0), (BackendKind::Uring, 4.0)] {
                        let offered = base * fraction;
                        let jitter = 1.0 + 0.01 * rep as f64;
                        facts.push(RunFacts {
                            name: format!("matched-{}-c{conns}-f{fraction}-r{rep}", peer.name()),
                            label: peer.name().into(),
                            peer: Peer::Backend(peer),
                            key: PointKey {
                                transport: Transport::Tcp,
                                size_bytes: 128,
                                conns,
                                purpose: Purpose::MatchedLoad { fraction },
                                conn_msgs: None,
                            },
                            conns,
                            repetition: rep,
                            msgs_per_s: offered,
                            server_cpu_us_per_msg: Some(cpu * jitter * (1.2 - fraction / 2.0)),
                            loadgen_cpu_us_per_msg: Some(4.0),
                            p99_us: 100.0,
                            server_busy: Some(0.5),
                            loadgen_busy: Some(if fraction > 0.6 { 0.95 } else { 0.5 }),
                            offered_per_s: Some(offered),
                            errors: 0,
                            disturbed: false,
                            server_peak_rss_kib: None,
                            switches: Default::default(),
                            conv: None,
                        });
                    }
                }
            }
        }
        facts
    }

    #[test]
    fn matched_load_plot_has_a_panel_per_point_and_readable_text() {
        let analysis = Analysis {
            reference: "epoll".into(),
            points: point_stats(&sweep_facts(), "epoll"),
        };
        // A directory of the test's own making (unique name, created here),
        // so the removal below can only delete what this test wrote.
        let dir = tempfile::Builder::new()
            .prefix("sockbench-plots-unit-")
            .tempdir()
            .unwrap()
            .keep();
        let files = draw_all(&[], &analysis, None, &dir).unwrap().files;
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].file, PLOT_FILES[4]);
        let svg = std::fs::read_to_string(dir.join(PLOT_FILES[4])).unwrap();
        for caption in [
            "tcp, 128 B, 100 conns",
            "tcp, 128 B, 1000 conns",
            "offered msgs/s",
            "uring",
            "epoll",
        ] {
            assert!(svg.contains(caption), "no {caption:?}");
        }
        let sizes = displayed_font_sizes(&svg);
        assert!(!sizes.is_empty());
        assert!(sizes.iter().all(|&px| px >= MIN_TEXT_PX - 0.01), "{sizes:?}");
        // Error bars: a vertical path per point with an interval (2 labels × 6 points).
        assert!(svg.matches("<polyline").count() >= 12 + 4, "too few lines drawn");
        // KEEP_PLOTS=1 leaves the SVG to look at.
        if std::env::var_os("KEEP_PLOTS").is_none() {
            let _ = std::fs::remove_dir_all(&dir);
        }
    }

    #[test]
    fn font_sizes_scale_with_the_width() {
        assert_eq!(font_px(880, 14.0), 18); // 14 × 1.24, rounded up
        assert_eq!(font_px(600, 14.0), 18); // never below 14 px: small SVGs are not shrunk
        assert!(font_px(1760, 14.0) >= 34);
        assert_eq!(axis_count(1.0), "1");
        assert_eq!(axis_count(10_000.0), "10k");
        assert_eq!(axis_count(2_500.0), "2500");
    }
}
