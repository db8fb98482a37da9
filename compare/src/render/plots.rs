//! SVG plots of a comparison, drawn with `plotters` (no Python needed).
//!
//! No font is loaded: plotters is built without a font backend, so it lays
//! text out from an estimate of its width, and the SVG names a generic
//! `sans-serif` family that the viewer (a browser, GitHub) renders. Nothing
//! needs to be installed for the plots.

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::{anyhow, bail, Context};
use loadgen::result::{decode_histogram, RunResult};
use plotters::prelude::*;
use sockbench::net::Transport;
use sockbench::server::BackendKind;

use crate::analyse::{peers_of, Run};
use crate::plan::Peer;

/// The font family the SVGs ask the viewer for.
const FAMILY: &str = "sans-serif";

/// Every file [`draw_all`] may write.
pub const PLOT_FILES: [&str; 4] = [
    "throughput_vs_conns.svg",
    "server_cpu_vs_conns.svg",
    "throughput_over_time.svg",
    "latency_spectrum.svg",
];

/// One plot file written to the output directory.
#[derive(Clone, Debug, PartialEq)]
pub struct PlotFile {
    /// File name, relative to the output directory.
    pub file: String,
    pub title: String,
}

/// The fixed colour of a peer in every plot.
pub fn peer_color(peer: Peer) -> RGBColor {
    match peer {
        Peer::Backend(BackendKind::Fork) => RGBColor(214, 39, 40),
        Peer::Backend(BackendKind::Threadpool) => RGBColor(255, 127, 14),
        Peer::Backend(BackendKind::Epoll) => RGBColor(31, 119, 180),
        Peer::Backend(BackendKind::Uring) => RGBColor(44, 160, 44),
        Peer::Tokio => RGBColor(148, 103, 189),
    }
}

/// Draws every plot the runs allow into `dir`. Returns the files written.
pub fn draw_all(runs: &[Run], open_rate: Option<f64>, dir: &Path) -> anyhow::Result<Vec<PlotFile>> {
    let runs = crate::analyse::median_runs(runs);
    let closed: Vec<Run> = runs.iter().filter(|r| !r.record.spec.is_open_loop()).cloned().collect();
    let open: Vec<Run> = runs.iter().filter(|r| r.record.spec.is_open_loop()).cloned().collect();
    let mut files = Vec::new();
    if !closed.is_empty() {
        let f = PlotFile {
            file: PLOT_FILES[0].into(),
            title: "Throughput vs connections (closed loop)".into(),
        };
        draw_vs_conns(&closed, &dir.join(&f.file), &f.title, "msgs/s", |run| {
            Some(run.result.throughput.msgs_per_s)
        })?;
        files.push(f);
        let f = PlotFile {
            file: PLOT_FILES[1].into(),
            title: "Server CPU per message vs connections".into(),
        };
        draw_vs_conns(
            &closed,
            &dir.join(&f.file),
            &f.title,
            "server CPU µs / msg",
            Run::server_cpu_us_per_msg,
        )?;
        files.push(f);
        let (transport, size) = over_time_point(&closed);
        let f = PlotFile {
            file: PLOT_FILES[2].into(),
            title: format!(
                "Throughput over time, each backend's largest run ({transport}, {})",
                size_label(size)
            ),
        };
        draw_over_time(&closed, transport, size, &dir.join(&f.file), &f.title)?;
        files.push(f);
    }
    if !open.is_empty() {
        let rate = open_rate
            .map(|r| format!(" at {r:.0} msgs/s offered"))
            .unwrap_or_default();
        let f = PlotFile {
            file: PLOT_FILES[3].into(),
            title: format!("Latency by percentile, open loop{rate} (corrected for coordinated omission)"),
        };
        draw_spectrum(&open, &dir.join(&f.file), &f.title)?;
        files.push(f);
    }
    Ok(files)
}

fn plot_err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("drawing: {e:?}")
}

/// One line of a plot: a peer and its points.
struct Line {
    peer: Peer,
    points: Vec<(f64, f64)>,
}

/// One panel of the grid: a transport and a message size.
#[derive(Clone, Copy)]
struct Panel {
    transport: Transport,
    size_bytes: u64,
}

/// A grid of panels (size rows x transport columns), x = connections (log),
/// one line per peer.
fn draw_vs_conns(
    runs: &[Run],
    path: &Path,
    title: &str,
    y_desc: &str,
    value: impl Fn(&Run) -> Option<f64>,
) -> anyhow::Result<()> {
    use clap::ValueEnum;
    let transports: Vec<Transport> = Transport::value_variants()
        .iter()
        .copied()
        .filter(|t| runs.iter().any(|r| r.record.spec.transport == *t))
        .collect();
    let sizes: Vec<u64> = runs
        .iter()
        .map(|r| r.record.spec.size_bytes)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let peers = peers_of(runs);
    let (cols, rows) = (transports.len().max(1), sizes.len().max(1));
    let root = SVGBackend::new(path, (430 * cols as u32 + 40, 340 * rows as u32 + 50)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let root = root.titled(title, (FAMILY, 22)).map_err(plot_err)?;
    // One legend for the whole figure, so that it never hides a point.
    let (legend, body) = root.split_vertically(28);
    draw_legend(&legend, &peers)?;
    let areas = body.split_evenly((rows, cols));
    let max_conns = runs.iter().map(|r| r.record.spec.conns).max().unwrap_or(1) as f64;
    for (i, area) in areas.iter().enumerate() {
        let panel = Panel {
            transport: transports[i % cols],
            size_bytes: sizes[i / cols],
        };
        let lines: Vec<Line> = peers
            .iter()
            .map(|&peer| Line {
                peer,
                points: panel_points(runs, peer, panel, &value),
            })
            .collect();
        draw_panel(area, panel, &lines, y_desc, max_conns)?;
    }
    root.present().map_err(plot_err)?;
    Ok(())
}

/// (connections, value) of `peer`'s runs in `panel`, by connections.
fn panel_points(runs: &[Run], peer: Peer, panel: Panel, value: &impl Fn(&Run) -> Option<f64>) -> Vec<(f64, f64)> {
    let mut pts: Vec<(f64, f64)> = runs
        .iter()
        .filter(|r| {
            let s = &r.record.spec;
            s.peer == peer && s.transport == panel.transport && s.size_bytes == panel.size_bytes
        })
        .filter_map(|r| {
            value(r)
                .filter(|v| v.is_finite() && *v > 0.0)
                .map(|v| (r.record.spec.conns as f64, v))
        })
        .collect();
    pts.sort_by(|a, b| a.0.total_cmp(&b.0));
    pts
}

fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    panel: Panel,
    lines: &[Line],
    y_desc: &str,
    max_conns: f64,
) -> anyhow::Result<()> {
    let ys: Vec<f64> = lines.iter().flat_map(|l| l.points.iter().map(|p| p.1)).collect();
    let caption = format!("{}, {}", panel.transport, size_label(panel.size_bytes));
    let x_range = (0.7f64..(max_conns * 1.5).max(10.0)).log_scale();
    let mut builder = ChartBuilder::on(area);
    builder
        .caption(&caption, (FAMILY, 17))
        .margin(8)
        .x_label_area_size(36)
        .y_label_area_size(62);
    if ys.is_empty() {
        let mut chart = builder.build_cartesian_2d(x_range, 0f64..1f64).map_err(plot_err)?;
        chart.configure_mesh().x_desc("connections").draw().map_err(plot_err)?;
        chart
            .draw_series(std::iter::once(Text::new("no data", (3.0, 0.5), (FAMILY, 16))))
            .map_err(plot_err)?;
        return Ok(());
    }
    let hi = ys.iter().cloned().fold(0.0, f64::max);
    let mut chart = builder.build_cartesian_2d(x_range, 0f64..hi * 1.15).map_err(plot_err)?;
    chart
        .configure_mesh()
        .x_desc("connections")
        .y_desc(y_desc)
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| human(*y))
        .label_style((FAMILY, 12))
        .draw()
        .map_err(plot_err)?;
    for line in lines {
        let color = peer_color(line.peer);
        chart
            .draw_series(LineSeries::new(line.points.clone(), color.stroke_width(2)))
            .map_err(plot_err)?;
        chart
            .draw_series(line.points.iter().map(|&p| Circle::new(p, 3, color.filled())))
            .map_err(plot_err)?;
    }
    Ok(())
}

/// A row of peer names with their line colours.
fn draw_legend<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    peers: &[Peer],
) -> anyhow::Result<()> {
    for (i, &peer) in peers.iter().enumerate() {
        let x = 60 + 150 * i as i32;
        let color = peer_color(peer);
        area.draw(&PathElement::new(vec![(x, 14), (x + 26, 14)], color.stroke_width(3)))
            .map_err(plot_err)?;
        area.draw(&Text::new(peer.name(), (x + 32, 6), (FAMILY, 15)))
            .map_err(plot_err)?;
    }
    Ok(())
}

/// Latency by percentile, HdrHistogram style: x = 1/(1-p) on a log axis from
/// p0 to p99.999. One line per peer.
fn spectrum_lines(runs: &[Run], x_max: f64) -> anyhow::Result<Vec<Line>> {
    const STEPS: usize = 400;
    let mut lines = Vec::new();
    for peer in peers_of(runs) {
        let Some(run) = runs.iter().find(|r| r.record.spec.peer == peer) else {
            continue;
        };
        let hist = decode_histogram(&run.result.histogram).with_context(|| run.record.result_file.to_string())?;
        if hist.is_empty() {
            continue;
        }
        let points = (0..=STEPS)
            .map(|i| {
                let x = x_max.powf(i as f64 / STEPS as f64);
                let q = 1.0 - 1.0 / x;
                (x, (hist.value_at_quantile(q) as f64).max(1.0))
            })
            .collect();
        lines.push(Line { peer, points });
    }
    Ok(lines)
}

/// Latency by percentile (log x from p0 to p99.999, log y), the open-loop runs.
fn draw_spectrum(runs: &[Run], path: &Path, title: &str) -> anyhow::Result<()> {
    const X_MAX: f64 = 1e5; // p99.999
    let lines = spectrum_lines(runs, X_MAX)?;
    if lines.is_empty() {
        bail!("no open-loop run has a non-empty histogram");
    }
    let ys = || lines.iter().flat_map(|l| l.points.iter().map(|p| p.1));
    let hi = ys().fold(1.0, f64::max);
    let lo = ys().fold(f64::MAX, f64::min);
    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, (FAMILY, 18))
        .margin(12)
        .margin_right(40)
        .x_label_area_size(42)
        .y_label_area_size(70)
        .build_cartesian_2d((1f64..X_MAX).log_scale(), (lo / 1.5..hi * 1.5).log_scale())
        .map_err(plot_err)?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("latency (µs)")
        .x_label_formatter(&|x| percentile_label(*x))
        .y_label_formatter(&|y| human(*y))
        .label_style((FAMILY, 12))
        .draw()
        .map_err(plot_err)?;
    for line in &lines {
        let color = peer_color(line.peer);
        chart
            .draw_series(LineSeries::new(line.points.clone(), color.stroke_width(2)))
            .map_err(plot_err)?
            .label(line.peer.name())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
    }
    draw_series_labels(&mut chart, SeriesLabelPosition::UpperLeft, 13)?;
    root.present().map_err(plot_err)?;
    Ok(())
}

/// The transport and message size the over-time plot compares: tcp (else the
/// first transport run) and the smallest size, the same for every peer, so
/// that one peer's udp run is never drawn against another's tcp run.
fn over_time_point(runs: &[Run]) -> (Transport, u64) {
    let transport = runs
        .iter()
        .map(|r| r.record.spec.transport)
        .find(|t| *t == Transport::Tcp)
        .or_else(|| runs.first().map(|r| r.record.spec.transport))
        .unwrap_or(Transport::Tcp);
    let size = runs
        .iter()
        .filter(|r| r.record.spec.transport == transport)
        .map(|r| r.record.spec.size_bytes)
        .min()
        .unwrap_or(0);
    (transport, size)
}

/// A labelled line of the over-time plot.
struct LabelledLine {
    line: Line,
    label: String,
}

/// Messages per second through each peer's largest run (most connections)
/// at one transport and size, from the result's `series`.
fn over_time_lines(runs: &[Run], transport: Transport, size: u64) -> Vec<LabelledLine> {
    let mut lines = Vec::new();
    for peer in peers_of(runs) {
        let largest = runs
            .iter()
            .filter(|r| {
                let s = &r.record.spec;
                s.peer == peer && s.transport == transport && s.size_bytes == size && !r.result.series.is_empty()
            })
            .max_by_key(|r| r.record.spec.conns);
        let Some(run) = largest else { continue };
        let mut prev_t = 0.0;
        let points = rates_of(&run.result, &mut prev_t);
        let spec = &run.record.spec;
        lines.push(LabelledLine {
            label: format!(
                "{peer} ({}, {} conns, {})",
                spec.transport,
                spec.conns,
                size_label(spec.size_bytes)
            ),
            line: Line { peer, points },
        });
    }
    lines
}

/// (seconds, msgs/s) of each `series` interval.
fn rates_of(res: &RunResult, prev_t: &mut f64) -> Vec<(f64, f64)> {
    res.series
        .iter()
        .map(|p| {
            let dt = (p.t_s - *prev_t).max(1e-3);
            *prev_t = p.t_s;
            (p.t_s, p.msgs as f64 / dt)
        })
        .collect()
}

fn draw_over_time(runs: &[Run], transport: Transport, size: u64, path: &Path, title: &str) -> anyhow::Result<()> {
    let lines = over_time_lines(runs, transport, size);
    let t_max = lines
        .iter()
        .flat_map(|l| l.line.points.iter().map(|p| p.0))
        .fold(1.0, f64::max);
    let hi = lines
        .iter()
        .flat_map(|l| l.line.points.iter().map(|p| p.1))
        .fold(1.0, f64::max);
    let root = SVGBackend::new(path, (900, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, (FAMILY, 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..t_max, 0f64..hi * 1.25)
        .map_err(plot_err)?;
    chart
        .configure_mesh()
        .x_desc("seconds into the measured phase")
        .y_desc("msgs/s")
        .y_label_formatter(&|y| human(*y))
        .label_style((FAMILY, 12))
        .draw()
        .map_err(plot_err)?;
    for LabelledLine { line, label } in &lines {
        let color = peer_color(line.peer);
        chart
            .draw_series(LineSeries::new(line.points.clone(), color.stroke_width(2)))
            .map_err(plot_err)?
            .label(label.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
        chart
            .draw_series(line.points.iter().map(|&p| Circle::new(p, 3, color.filled())))
            .map_err(plot_err)?;
    }
    draw_series_labels(&mut chart, SeriesLabelPosition::LowerRight, 12)?;
    root.present().map_err(plot_err)?;
    Ok(())
}

/// The box naming each labelled series, on a translucent white background.
fn draw_series_labels<'a, DB, CT>(
    chart: &mut ChartContext<'a, DB, CT>,
    position: SeriesLabelPosition,
    font_px: u32,
) -> anyhow::Result<()>
where
    DB: DrawingBackend + 'a,
    CT: plotters::coord::CoordTranslate,
{
    chart
        .configure_series_labels()
        .position(position)
        .label_font((FAMILY, font_px))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .draw()
        .map_err(plot_err)
}

/// `128 B`, `4 KiB`.
pub fn size_label(size: u64) -> String {
    if size >= 1024 && size % 1024 == 0 {
        format!("{} KiB", size / 1024)
    } else {
        format!("{size} B")
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
