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
use plotters::style::text_anchor::{HPos, Pos, VPos};
use sockbench::net::Transport;
use sockbench::server::BackendKind;

use crate::analyse::stats::Bottleneck;
use crate::analyse::{peers_of, Analysis, PeerStats, PointStats, Purpose, Run, Summary};
use crate::plan::{Peer, PointShape};

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

/// The width at which a README shows an SVG (GitHub's content column).
pub const DISPLAY_WIDTH_PX: f64 = 880.0;

/// The smallest text, in px as displayed at [`DISPLAY_WIDTH_PX`].
pub const MIN_TEXT_PX: f64 = 14.0;

/// The font size to ask plotters for so that text is `display_px` tall when
/// an SVG `svg_width` wide is shown [`DISPLAY_WIDTH_PX`] wide. plotters'
/// SVG backend writes `font-size` as the requested size / 1.24, so the
/// request is scaled up by that much.
pub fn font_px(svg_width: u32, display_px: f64) -> u32 {
    let scale = (svg_width as f64 / DISPLAY_WIDTH_PX).max(1.0);
    (display_px * scale * 1.24).ceil() as u32
}

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

/// A label's colour: its peer's, darkened for a second label of the same
/// peer (an A/A entry or a calibration variant) so the two lines differ.
fn label_color(label: &str, peer: Peer) -> RGBColor {
    let c = peer_color(peer);
    if label == peer.name() {
        c
    } else {
        RGBColor(c.0 / 2, c.1 / 2, c.2 / 2)
    }
}

/// Draws every plot the runs allow into `dir`. Returns the files written.
pub fn draw_all(
    runs: &[Run],
    analysis: &Analysis,
    open_rate: Option<f64>,
    dir: &Path,
) -> anyhow::Result<Vec<PlotFile>> {
    let medians = crate::analyse::median_runs(runs);
    let closed: Vec<Run> = medians
        .iter()
        .filter(|r| !r.record.spec.is_open_loop() && r.record.spec.conn_msgs.is_none())
        .cloned()
        .collect();
    let open: Vec<Run> = medians
        .iter()
        .filter(|r| crate::analyse::point_key(r).is_latency_view())
        .cloned()
        .collect();
    let peaks: Vec<&PointStats> = analysis
        .points
        .iter()
        .filter(|p| p.key.purpose == Purpose::Peak && p.key.conn_msgs.is_none())
        .collect();
    let mut files = Vec::new();
    if !peaks.is_empty() {
        let f = PlotFile {
            file: PLOT_FILES[0].into(),
            title: "Throughput vs connections (closed loop)".into(),
        };
        draw_vs_conns(&peaks, &dir.join(&f.file), &f.title, "msgs/s", |p| p.msgs_per_s)?;
        files.push(f);
        let f = PlotFile {
            file: PLOT_FILES[1].into(),
            title: "Server CPU per message vs connections".into(),
        };
        draw_vs_conns(&peaks, &dir.join(&f.file), &f.title, "server CPU µs / msg", |p| {
            p.server_cpu_us_per_msg
        })?;
        files.push(f);
    }
    if !closed.is_empty() {
        let point = over_time_point(&closed);
        let f = PlotFile {
            file: PLOT_FILES[2].into(),
            title: format!(
                "Throughput over time, {} connections ({}, {}), each backend's median run",
                point.conns,
                point.transport,
                size_label(point.size_bytes)
            ),
        };
        draw_over_time(&closed, point, &dir.join(&f.file), &f.title)?;
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
    let sweep: Vec<&PointStats> = analysis
        .points
        .iter()
        .filter(|p| matches!(p.key.purpose, Purpose::MatchedLoad { .. }) && p.key.conn_msgs.is_none())
        .collect();
    if !sweep.is_empty() {
        let f = PlotFile {
            file: PLOT_FILES[4].into(),
            title: "Server CPU per message at matched offered load (open loop)".into(),
        };
        draw_matched_load(&sweep, &dir.join(&f.file), &f.title)?;
        files.push(f);
    }
    files.extend(draw_conversations(analysis, dir)?);
    Ok(files)
}

/// The conversation axis's two plots: connections/s, and server CPU per
/// connection by backend, each against messages per connection (closed loop).
fn draw_conversations(analysis: &Analysis, dir: &Path) -> anyhow::Result<Vec<PlotFile>> {
    let conv: Vec<&PointStats> = analysis
        .points
        .iter()
        .filter(|p| p.key.purpose == Purpose::Peak && p.key.conn_msgs.is_some())
        .collect();
    if conv.is_empty() {
        return Ok(Vec::new());
    }
    let f = PlotFile {
        file: PLOT_FILES[5].into(),
        title: "Connections per second vs messages per connection (closed loop)".into(),
    };
    draw_vs_conn_msgs(&conv, &dir.join(&f.file), &f.title, "connections/s", |p| {
        p.conv.as_ref()?.conns_per_s
    })?;
    let g = PlotFile {
        file: PLOT_FILES[6].into(),
        title: "Server CPU per connection by backend vs messages per connection".into(),
    };
    draw_vs_conn_msgs(
        &conv,
        &dir.join(&g.file),
        &g.title,
        "server CPU µs / connection",
        |p| p.conv.as_ref()?.server_cpu_us_per_conn,
    )?;
    Ok(vec![f, g])
}

/// A grid of panels (concurrent conversations rows x transport columns),
/// x = messages per connection (log), one line per label with intervals;
/// hollow where loadgen was the limit.
fn draw_vs_conn_msgs(
    points: &[&PointStats],
    path: &Path,
    title: &str,
    y_desc: &str,
    value: impl Fn(&PeerStats) -> Option<Summary>,
) -> anyhow::Result<()> {
    use clap::ValueEnum;
    let transports: Vec<Transport> = Transport::value_variants()
        .iter()
        .copied()
        .filter(|t| points.iter().any(|p| p.key.transport == *t))
        .collect();
    let conns: Vec<u64> = points
        .iter()
        .map(|p| p.key.conns)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let labels = labels_of(points);
    let (cols, rows) = (transports.len().max(1), conns.len().max(1));
    let width = (330 * cols as u32 + 40).max(700);
    let fonts = Fonts::for_width(width);
    let root = SVGBackend::new(path, (width, 300 * rows as u32 + 110)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let root = root.titled(title, (FAMILY, fonts.title)).map_err(plot_err)?;
    let (legend, body) = root.split_vertically(fonts.legend_height(&labels, width));
    draw_legend(&legend, &labels, &fonts, width)?;
    let areas = body.split_evenly((rows, cols));
    let max_msgs = points.iter().filter_map(|p| p.key.conn_msgs).max().unwrap_or(1) as f64;
    for (i, area) in areas.iter().enumerate() {
        let (transport, c) = (transports[i % cols], conns[i / cols]);
        let lines: Vec<IntervalLine> = labels
            .iter()
            .map(|(label, peer)| {
                let mut marks: Vec<Marked> = points
                    .iter()
                    .filter(|p| p.key.transport == transport && p.key.conns == c)
                    .filter_map(|p| {
                        let stats = p.peer(label)?;
                        let y = value(stats).filter(|s| s.mid.is_finite() && s.mid > 0.0)?;
                        Some(Marked {
                            x: p.key.conn_msgs? as f64,
                            y,
                            hollow: loadgen_saturated(stats),
                            note: None,
                        })
                    })
                    .collect();
                marks.sort_by(|a, b| a.x.total_cmp(&b.x));
                IntervalLine {
                    label: label.clone(),
                    peer: *peer,
                    points: marks,
                }
            })
            .collect();
        let x_range = (0.7f64..(max_msgs * 1.5).max(10.0)).log_scale();
        let caption = format!("{transport}, {c} conversations at once");
        draw_interval_panel(
            area,
            &caption,
            x_range,
            "messages per connection",
            &lines,
            y_desc,
            &fonts,
        )?;
    }
    root.present().map_err(plot_err)?;
    Ok(())
}

fn plot_err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("drawing: {e:?}")
}

/// One line of a plot: a peer and its points.
struct Line {
    peer: Peer,
    points: Vec<(f64, f64)>,
}

/// One point of a line with its interval.
#[derive(Clone, Debug)]
struct Marked {
    x: f64,
    y: Summary,
    /// Loadgen was saturated (`loadgen` or `both`): drawn hollow.
    hollow: bool,
    /// Drawn beside the point, e.g. `fork 4000` for a scaled-down run.
    note: Option<String>,
}

/// One label's line with intervals.
struct IntervalLine {
    label: String,
    peer: Peer,
    points: Vec<Marked>,
}

/// The labels of `points` in their order of appearance (points list them in peer order).
fn labels_of(points: &[&PointStats]) -> Vec<(String, Peer)> {
    let mut labels: Vec<(String, Peer)> = Vec::new();
    for p in points.iter().flat_map(|p| &p.peers) {
        if !labels.iter().any(|(l, _)| *l == p.label) {
            labels.push((p.label.clone(), p.peer));
        }
    }
    let rank = |p: Peer| Peer::all().position(|q| q == p).unwrap_or(usize::MAX);
    labels.sort_by(|a, b| (rank(a.1), &a.0).cmp(&(rank(b.1), &b.0)));
    labels
}

/// Whether loadgen was saturated in `p`'s runs.
fn loadgen_saturated(p: &PeerStats) -> bool {
    matches!(p.bottleneck, Some(Bottleneck::Loadgen | Bottleneck::Both))
}

/// A grid of panels (size rows x transport columns), x = connections (log),
/// one line per label, each point with its interval.
fn draw_vs_conns(
    points: &[&PointStats],
    path: &Path,
    title: &str,
    y_desc: &str,
    value: impl Fn(&PeerStats) -> Option<Summary>,
) -> anyhow::Result<()> {
    use clap::ValueEnum;
    let transports: Vec<Transport> = Transport::value_variants()
        .iter()
        .copied()
        .filter(|t| points.iter().any(|p| p.key.transport == *t))
        .collect();
    let sizes: Vec<u64> = points
        .iter()
        .map(|p| p.key.size_bytes)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let labels = labels_of(points);
    let (cols, rows) = (transports.len().max(1), sizes.len().max(1));
    let width = (330 * cols as u32 + 40).max(700);
    let fonts = Fonts::for_width(width);
    let root = SVGBackend::new(path, (width, 300 * rows as u32 + 110)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let root = root.titled(title, (FAMILY, fonts.title)).map_err(plot_err)?;
    // One legend for the whole figure, so that it never hides a point.
    let (legend, body) = root.split_vertically(fonts.legend_height(&labels, width));
    draw_legend(&legend, &labels, &fonts, width)?;
    let areas = body.split_evenly((rows, cols));
    let max_conns = points.iter().map(|p| p.key.conns).max().unwrap_or(1) as f64;
    for (i, area) in areas.iter().enumerate() {
        let panel = Panel {
            transport: transports[i % cols],
            size_bytes: sizes[i / cols],
        };
        let lines: Vec<IntervalLine> = labels
            .iter()
            .map(|(label, peer)| IntervalLine {
                label: label.clone(),
                peer: *peer,
                points: panel_points(points, label, panel, &value),
            })
            .collect();
        let x_range = (0.7f64..(max_conns * 1.5).max(10.0)).log_scale();
        let caption = format!("{}, {}", panel.transport, size_label(panel.size_bytes));
        draw_interval_panel(area, &caption, x_range, "connections", &lines, y_desc, &fonts)?;
    }
    root.present().map_err(plot_err)?;
    Ok(())
}

/// Font sizes (as requested from plotters) for an SVG of a given width.
struct Fonts {
    title: u32,
    caption: u32,
    text: u32,
}

impl Fonts {
    fn for_width(width: u32) -> Fonts {
        Fonts {
            title: font_px(width, 17.0),
            caption: font_px(width, 15.0),
            text: font_px(width, MIN_TEXT_PX),
        }
    }

    /// The legend's rows of labels and its line of explanation.
    fn legend_height(&self, labels: &[(String, Peer)], width: u32) -> u32 {
        let rows = legend_layout(labels, self, width).rows as u32 + 1;
        rows * (self.text + 6) + 8
    }
}

/// One panel of the grid: a transport and a message size.
#[derive(Clone, Copy)]
struct Panel {
    transport: Transport,
    size_bytes: u64,
}

/// (connections, figure) of `label` in `panel`, by connections; a
/// scaled-down point carries its note.
fn panel_points(
    points: &[&PointStats],
    label: &str,
    panel: Panel,
    value: &impl Fn(&PeerStats) -> Option<Summary>,
) -> Vec<Marked> {
    let mut out: Vec<Marked> = points
        .iter()
        .filter(|p| p.key.transport == panel.transport && p.key.size_bytes == panel.size_bytes)
        .filter_map(|p| {
            let peer = p.peer(label)?;
            let y = value(peer).filter(|s| s.mid.is_finite() && s.mid > 0.0)?;
            Some(Marked {
                x: peer.conns as f64,
                y,
                hollow: loadgen_saturated(peer),
                note: peer.scaled_down(&p.key).then(|| format!("{label} {}", peer.conns)),
            })
        })
        .collect();
    out.sort_by(|a, b| a.x.total_cmp(&b.x));
    out
}

/// A panel of lines with error bars, hollow markers and notes.
fn draw_interval_panel<DB: DrawingBackend, X>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    caption: &str,
    x_range: X,
    x_desc: &str,
    lines: &[IntervalLine],
    y_desc: &str,
    fonts: &Fonts,
) -> anyhow::Result<()>
where
    X: plotters::coord::ranged1d::AsRangedCoord<Value = f64>,
    X::CoordDescType: plotters::coord::ranged1d::ValueFormatter<f64>,
{
    let hi = lines
        .iter()
        .flat_map(|l| l.points.iter().map(|p| p.y.hi.max(p.y.mid)))
        .fold(0.0, f64::max);
    let hi = if hi > 0.0 { hi * 1.15 } else { 1.0 };
    let mut chart = ChartBuilder::on(area)
        .caption(caption, (FAMILY, fonts.caption))
        .margin(8)
        .margin_right(16)
        .x_label_area_size(fonts.text * 2 + 8)
        .y_label_area_size(fonts.text * 3 + 10)
        .build_cartesian_2d(x_range, 0f64..hi)
        .map_err(plot_err)?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .x_label_formatter(&|x| axis_count(*x))
        .y_label_formatter(&|y| human(*y))
        .x_labels(6)
        .y_labels(6)
        .label_style((FAMILY, fonts.text))
        .axis_desc_style((FAMILY, fonts.text))
        .draw()
        .map_err(plot_err)?;
    if lines.iter().all(|l| l.points.is_empty()) {
        return Ok(());
    }
    for line in lines {
        let color = label_color(&line.label, line.peer);
        let mids: Vec<(f64, f64)> = line.points.iter().map(|p| (p.x, p.y.mid)).collect();
        chart
            .draw_series(LineSeries::new(mids, color.stroke_width(2)))
            .map_err(plot_err)?;
        for p in &line.points {
            draw_marked(&mut chart, p, color, fonts)?;
        }
    }
    Ok(())
}

/// A point's error bar (its interval, with caps), its marker (hollow when
/// loadgen was saturated) and its note.
fn draw_marked<'a, DB, CT>(
    chart: &mut ChartContext<'a, DB, CT>,
    p: &Marked,
    color: RGBColor,
    fonts: &Fonts,
) -> anyhow::Result<()>
where
    DB: DrawingBackend + 'a,
    CT: plotters::coord::CoordTranslate<From = (f64, f64)>,
{
    let bar = color.stroke_width(2);
    if p.y.level.is_some() {
        chart
            .draw_series(std::iter::once(PathElement::new(
                vec![(p.x, p.y.lo), (p.x, p.y.hi)],
                bar,
            )))
            .map_err(plot_err)?;
        for end in [p.y.lo, p.y.hi] {
            let cap = EmptyElement::at((p.x, end)) + PathElement::new(vec![(-5, 0), (5, 0)], bar);
            chart.draw_series(std::iter::once(cap)).map_err(plot_err)?;
        }
    }
    let marker = if p.hollow {
        EmptyElement::at((p.x, p.y.mid)) + Circle::new((0, 0), 5, WHITE.filled()) + Circle::new((0, 0), 5, bar)
    } else {
        EmptyElement::at((p.x, p.y.mid)) + Circle::new((0, 0), 5, color.filled()) + Circle::new((0, 0), 5, bar)
    };
    chart.draw_series(std::iter::once(marker)).map_err(plot_err)?;
    if let Some(note) = &p.note {
        // Centred below the marker, so it stays inside the panel at either end.
        let text = EmptyElement::at((p.x, p.y.mid))
            + Text::new(
                note.clone(),
                (0, 9),
                (FAMILY, fonts.text)
                    .into_font()
                    .color(&color)
                    .pos(Pos::new(HPos::Center, VPos::Top)),
            );
        chart.draw_series(std::iter::once(text)).map_err(plot_err)?;
    }
    Ok(())
}

/// Server CPU per message against offered rate, one panel per transport,
/// size and connection count, one line per label.
fn draw_matched_load(sweep: &[&PointStats], path: &Path, title: &str) -> anyhow::Result<()> {
    let mut panels: Vec<(Transport, u64, u64)> = Vec::new();
    for p in sweep {
        let k = (p.key.transport, p.key.size_bytes, p.key.conns);
        if !panels.contains(&k) {
            panels.push(k);
        }
    }
    let labels = labels_of(sweep);
    let cols = panels.len().clamp(1, 3);
    let rows = panels.len().div_ceil(cols).max(1);
    let width = (330 * cols as u32 + 40).max(700);
    let fonts = Fonts::for_width(width);
    let root = SVGBackend::new(path, (width, 300 * rows as u32 + 110)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let root = root.titled(title, (FAMILY, fonts.title)).map_err(plot_err)?;
    let (legend, body) = root.split_vertically(fonts.legend_height(&labels, width));
    draw_legend(&legend, &labels, &fonts, width)?;
    let areas = body.split_evenly((rows, cols));
    for (area, &(transport, size, conns)) in areas.iter().zip(&panels) {
        let here: Vec<&&PointStats> = sweep
            .iter()
            .filter(|p| p.key.transport == transport && p.key.size_bytes == size && p.key.conns == conns)
            .collect();
        let lines: Vec<IntervalLine> = labels
            .iter()
            .map(|(label, peer)| {
                let mut points: Vec<Marked> = here
                    .iter()
                    .filter_map(|p| {
                        let s = p.peer(label)?;
                        Some(Marked {
                            x: p.offered_per_s?,
                            y: s.server_cpu_us_per_msg?,
                            hollow: loadgen_saturated(s),
                            note: None,
                        })
                    })
                    .collect();
                points.sort_by(|a, b| a.x.total_cmp(&b.x));
                IntervalLine {
                    label: label.clone(),
                    peer: *peer,
                    points,
                }
            })
            .collect();
        let x_hi = here.iter().filter_map(|p| p.offered_per_s).fold(1.0, f64::max) * 1.1;
        let caption = format!("{transport}, {}, {conns} conns", size_label(size));
        draw_interval_panel(
            area,
            &caption,
            0f64..x_hi,
            "offered msgs/s",
            &lines,
            "server CPU µs / msg",
            &fonts,
        )?;
    }
    root.present().map_err(plot_err)?;
    Ok(())
}

/// A row of label names with their line colours, and a second row saying
/// what the bars and hollow markers mean.
fn draw_legend<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    labels: &[(String, Peer)],
    fonts: &Fonts,
    width: u32,
) -> anyhow::Result<()> {
    let layout = legend_layout(labels, fonts, width);
    let row = fonts.text as i32 + 6;
    for ((label, peer), &(x, r)) in labels.iter().zip(&layout.at) {
        let color = label_color(label, *peer);
        let y = r * row + row / 2;
        area.draw(&PathElement::new(vec![(x, y), (x + 26, y)], color.stroke_width(3)))
            .map_err(plot_err)?;
        area.draw(&Text::new(
            legend_name(label, *peer),
            (x + 32, r * row + 2),
            (FAMILY, fonts.text),
        ))
        .map_err(plot_err)?;
    }
    area.draw(&Text::new(
        "bars: interval for the median; hollow: loadgen ≥ 90% busy",
        (40, layout.rows * row + 4),
        (FAMILY, fonts.text),
    ))
    .map_err(plot_err)?;
    Ok(())
}

/// A label in the legend: tokio is marked as the reference implementation.
fn legend_name(label: &str, peer: Peer) -> String {
    if peer == Peer::Tokio {
        format!("{label} (reference)")
    } else {
        label.to_string()
    }
}

/// Where each legend entry goes: (x, row), wrapping to a new row when the
/// next entry would pass the right edge; widths from an estimate of the
/// text's width (no font is loaded, see the module doc).
struct LegendLayout {
    at: Vec<(i32, i32)>,
    rows: i32,
}

fn legend_layout(labels: &[(String, Peer)], fonts: &Fonts, width: u32) -> LegendLayout {
    // plotters writes font-size as the request / 1.24; sans-serif averages
    // about 0.6 em per character.
    let char_px = fonts.text as f64 / 1.24 * 0.6;
    let (mut x, mut row) = (40i32, 0i32);
    let mut at = Vec::new();
    for (label, peer) in labels {
        let w = 32 + (legend_name(label, *peer).chars().count() as f64 * char_px) as i32 + 28;
        if x + w > width as i32 - 20 && x > 40 {
            x = 40;
            row += 1;
        }
        at.push((x, row));
        x += w;
    }
    LegendLayout { at, rows: row + 1 }
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
    let width = 900;
    let fonts = Fonts::for_width(width);
    let root = SVGBackend::new(path, (width, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, (FAMILY, fonts.caption))
        .margin(12)
        .margin_right(40)
        .x_label_area_size(fonts.text * 2 + 10)
        .y_label_area_size(fonts.text * 3 + 12)
        .build_cartesian_2d((1f64..X_MAX).log_scale(), (lo / 1.5..hi * 1.5).log_scale())
        .map_err(plot_err)?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("latency (µs)")
        .x_label_formatter(&|x| percentile_label(*x))
        .y_label_formatter(&|y| human(*y))
        .label_style((FAMILY, fonts.text))
        .axis_desc_style((FAMILY, fonts.text))
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
    draw_series_labels(&mut chart, SeriesLabelPosition::UpperLeft, fonts.text)?;
    root.present().map_err(plot_err)?;
    Ok(())
}

/// The point the over-time plot compares: tcp (else the first transport
/// run), the smallest size, and the most connections at which every peer
/// ran unscaled, so that every line is the same load on a different server
/// (never one peer's udp run against another's tcp run, nor fork's 4,000
/// connections against epoll's 10,000).
fn over_time_point(runs: &[Run]) -> PointShape {
    let transport = runs
        .iter()
        .map(|r| r.record.spec.transport)
        .find(|t| *t == Transport::Tcp)
        .or_else(|| runs.first().map(|r| r.record.spec.transport))
        .unwrap_or(Transport::Tcp);
    let at = |r: &&Run| r.record.spec.transport == transport;
    let size_bytes = runs
        .iter()
        .filter(at)
        .map(|r| r.record.spec.size_bytes)
        .min()
        .unwrap_or(0);
    let here: Vec<&Run> = runs
        .iter()
        .filter(at)
        .filter(|r| r.record.spec.size_bytes == size_bytes && !r.result.series.is_empty())
        .collect();
    let peers = peers_of(runs);
    let everyone_at = |conns: u64| {
        peers.iter().all(|&peer| {
            here.iter().any(|r| {
                r.record.spec.peer == peer && r.record.spec.conns == conns && r.record.spec.requested_conns == conns
            })
        })
    };
    let mut counts: Vec<u64> = here.iter().map(|r| r.record.spec.conns).collect();
    counts.sort_unstable();
    counts.dedup();
    let conns = counts
        .iter()
        .rev()
        .copied()
        .find(|&c| everyone_at(c))
        .or_else(|| counts.last().copied())
        .unwrap_or(1);
    PointShape {
        transport,
        conns,
        size_bytes,
        conn_msgs: None,
    }
}

/// A labelled line of the over-time plot.
struct LabelledLine {
    line: Line,
    label: String,
}

/// Messages per second through each peer's (median) run at `point`, from
/// the result's `series` (loadgen's buckets, one second each).
fn over_time_lines(runs: &[Run], point: PointShape) -> Vec<LabelledLine> {
    let mut lines = Vec::new();
    for run in runs.iter().filter(|r| {
        let s = &r.record.spec;
        s.transport == point.transport
            && s.size_bytes == point.size_bytes
            && s.conns == point.conns
            && !r.result.series.is_empty()
    }) {
        let mut prev_t = 0.0;
        let points = rates_of(&run.result, &mut prev_t);
        let peer = run.record.spec.peer;
        lines.push(LabelledLine {
            label: crate::analyse::label(run),
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

fn draw_over_time(runs: &[Run], point: PointShape, path: &Path, title: &str) -> anyhow::Result<()> {
    let lines = over_time_lines(runs, point);
    let t_max = lines
        .iter()
        .flat_map(|l| l.line.points.iter().map(|p| p.0))
        .fold(1.0, f64::max);
    let hi = lines
        .iter()
        .flat_map(|l| l.line.points.iter().map(|p| p.1))
        .fold(1.0, f64::max);
    let width = 900;
    let fonts = Fonts::for_width(width);
    let root = SVGBackend::new(path, (width, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, (FAMILY, fonts.caption))
        .margin(12)
        .margin_right(24)
        .x_label_area_size(fonts.text * 2 + 10)
        .y_label_area_size(fonts.text * 3 + 12)
        .build_cartesian_2d(0f64..t_max, 0f64..hi * 1.5)
        .map_err(plot_err)?;
    chart
        .configure_mesh()
        .x_desc("seconds into the measured phase (1 s buckets)")
        .y_desc("msgs/s")
        .y_label_formatter(&|y| human(*y))
        .label_style((FAMILY, fonts.text))
        .axis_desc_style((FAMILY, fonts.text))
        .draw()
        .map_err(plot_err)?;
    for LabelledLine { line, label } in &lines {
        let color = label_color(label, line.peer);
        chart
            .draw_series(LineSeries::new(line.points.clone(), color.stroke_width(2)))
            .map_err(plot_err)?
            .label(label.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
        chart
            .draw_series(line.points.iter().map(|&p| Circle::new(p, 4, color.filled())))
            .map_err(plot_err)?;
    }
    draw_series_labels(&mut chart, SeriesLabelPosition::UpperLeft, fonts.text)?;
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
        let dir = std::env::temp_dir().join(format!("sockbench-plots-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let files = draw_all(&[], &analysis, None, &dir).unwrap();
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
