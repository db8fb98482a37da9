//! The grids of panels with an interval on every point: a figure against
//! connections (closed loop) and server CPU against offered rate (matched
//! load).

use std::collections::BTreeSet;
use std::path::Path;

use plotters::prelude::*;
use sockbench::net::Transport;

use super::style::{draw_legend, draw_line, draw_marker, line_style, Fonts};
use super::{axis_count, human, plot_err, size_label, Series, FAMILY};
use crate::analyse::stats::Bottleneck;
use crate::analyse::{PeerStats, PointStats, Summary};
use crate::plan::Peer;

/// One point of a line with its interval.
#[derive(Clone, Debug)]
struct Marked {
    x: f64,
    y: Summary,
    /// Loadgen was saturated (`loadgen` or `both`): drawn hollow.
    hollow: bool,
}

/// One label's line with intervals.
struct IntervalLine {
    label: String,
    peer: Peer,
    points: Vec<Marked>,
}

/// The y axis of a grid: linear from 0, or logarithmic when the points
/// span so much that a linear axis would flatten the differences that matter
/// (server CPU at 1 connection is several times that at 10 or more).
#[derive(Clone, Copy, PartialEq)]
pub enum YAxis {
    Linear,
    Log,
}

/// The explanation under the legend's labels.
const BARS_NOTE: &str = "bars: interval for the median; hollow marker: loadgen ≥ 90% busy";

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

/// The message sizes of `points` that ran at two connection counts or
/// more; the others would make panels of one x each.
pub fn sizes_with_a_line(points: &[&PointStats]) -> Vec<u64> {
    let sizes: BTreeSet<u64> = points.iter().map(|p| p.key.size_bytes).collect();
    sizes
        .into_iter()
        .filter(|&s| {
            let conns: BTreeSet<u64> = points
                .iter()
                .filter(|p| p.key.size_bytes == s)
                .map(|p| p.key.conns)
                .collect();
            conns.len() >= 2
        })
        .collect()
}

/// What a connections grid plots.
pub struct VsConns<'a, F> {
    pub title: &'a str,
    pub y_desc: &'a str,
    pub y_axis: YAxis,
    pub value: F,
}

/// A grid of panels (size rows x transport columns, only sizes with a line),
/// x = connections (log), one line per label, each point with its interval.
/// Returns every series drawn.
pub fn draw_vs_conns<F>(points: &[&PointStats], path: &Path, plot: VsConns<'_, F>) -> anyhow::Result<Vec<Series>>
where
    F: Fn(&PeerStats) -> Option<Summary>,
{
    use clap::ValueEnum;
    let sizes = sizes_with_a_line(points);
    let points: Vec<&PointStats> = points
        .iter()
        .copied()
        .filter(|p| sizes.contains(&p.key.size_bytes))
        .collect();
    let transports: Vec<Transport> = Transport::value_variants()
        .iter()
        .copied()
        .filter(|t| points.iter().any(|p| p.key.transport == *t))
        .collect();
    let labels = labels_of(&points);
    let (cols, rows) = (transports.len().max(1), sizes.len().max(1));
    let width = (330 * cols as u32 + 40).max(700);
    let fonts = Fonts::for_width(width);
    let notes = vec![BARS_NOTE.to_string()]
        .into_iter()
        .chain(scaled_down_note(&points))
        .collect::<Vec<_>>();
    let root = SVGBackend::new(path, (width, 380 * rows as u32 + 90 + 20 * notes.len() as u32)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let root = root.titled(plot.title, (FAMILY, fonts.title)).map_err(plot_err)?;
    // One legend for the whole figure, so that it never hides a point.
    let (legend, body) = root.split_vertically(fonts.legend_height(&labels, width, notes.len()));
    draw_legend(&legend, &labels, &notes, &fonts, width)?;
    let areas = body.split_evenly((rows, cols));
    let max_conns = points.iter().map(|p| p.key.conns).max().unwrap_or(1) as f64;
    let mut series = Vec::new();
    for (i, area) in areas.iter().enumerate() {
        let (transport, size_bytes) = (transports[i % cols], sizes[i / cols]);
        let here: Vec<&PointStats> = points
            .iter()
            .copied()
            .filter(|p| p.key.transport == transport && p.key.size_bytes == size_bytes)
            .collect();
        let lines = lines_of(&labels, &here, |_, s| Some(s.conns as f64), &plot.value);
        let caption = format!("{transport}, {}", size_label(size_bytes));
        series.extend(
            lines
                .iter()
                .map(|l| Series::new(format!("{caption}: {}", l.label), l.points.len())),
        );
        let x_range = (0.7f64..(max_conns * 1.5).max(10.0)).log_scale();
        let panel = Panel {
            caption: &caption,
            x_desc: "connections",
            y_desc: plot.y_desc,
            y_axis: plot.y_axis,
        };
        draw_interval_panel(area, x_range, &panel, &lines, &fonts)?;
    }
    root.present().map_err(plot_err)?;
    Ok(series)
}

/// A grid of the conversation axis: concurrent conversations in rows,
/// transports in columns, x = messages per connection (log), one line per
/// label with intervals (closed-loop conversation points).
pub fn draw_vs_conn_msgs<F>(points: &[&PointStats], path: &Path, plot: VsConns<'_, F>) -> anyhow::Result<Vec<Series>>
where
    F: Fn(&PeerStats) -> Option<Summary>,
{
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
    let notes = vec![BARS_NOTE.to_string()];
    let root = SVGBackend::new(path, (width, 380 * rows as u32 + 90 + 20 * notes.len() as u32)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let root = root.titled(plot.title, (FAMILY, fonts.title)).map_err(plot_err)?;
    let (legend, body) = root.split_vertically(fonts.legend_height(&labels, width, notes.len()));
    draw_legend(&legend, &labels, &notes, &fonts, width)?;
    let areas = body.split_evenly((rows, cols));
    let max_msgs = points.iter().filter_map(|p| p.key.conn_msgs).max().unwrap_or(1) as f64;
    let mut series = Vec::new();
    for (i, area) in areas.iter().enumerate() {
        let (transport, c) = (transports[i % cols], conns[i / cols]);
        let here: Vec<&PointStats> = points
            .iter()
            .copied()
            .filter(|p| p.key.transport == transport && p.key.conns == c)
            .collect();
        let lines = lines_of(&labels, &here, |p, _| p.key.conn_msgs.map(|n| n as f64), &plot.value);
        let caption = format!("{transport}, {} at once", axis_count(c as f64));
        series.extend(
            lines
                .iter()
                .map(|l| Series::new(format!("{caption}: {}", l.label), l.points.len())),
        );
        let x_range = (0.7f64..(max_msgs * 1.5).max(10.0)).log_scale();
        let panel = Panel {
            caption: &caption,
            x_desc: "messages per connection",
            y_desc: plot.y_desc,
            y_axis: plot.y_axis,
        };
        draw_interval_panel(area, x_range, &panel, &lines, &fonts)?;
    }
    root.present().map_err(plot_err)?;
    Ok(series)
}

/// `fork ran 4000 of 10k connections (plotted at 4000)` for each label that
/// was scaled down somewhere, so that no note has to sit on a line.
fn scaled_down_note(points: &[&PointStats]) -> Option<String> {
    let mut seen: Vec<String> = Vec::new();
    for p in points {
        for peer in p.peers.iter().filter(|s| s.scaled_down(&p.key)) {
            let words = format!(
                "{} ran {} of {} connections",
                peer.label,
                axis_count(peer.conns as f64),
                axis_count(p.key.conns as f64)
            );
            if !seen.contains(&words) {
                seen.push(words);
            }
        }
    }
    (!seen.is_empty()).then(|| format!("{} (plotted where it ran)", seen.join("; ")))
}

/// Each label's points in `here`, x from `x`, y from `value`, by x.
fn lines_of(
    labels: &[(String, Peer)],
    here: &[&PointStats],
    x: impl Fn(&PointStats, &PeerStats) -> Option<f64>,
    value: &impl Fn(&PeerStats) -> Option<Summary>,
) -> Vec<IntervalLine> {
    labels
        .iter()
        .map(|(label, peer)| {
            let mut points: Vec<Marked> = here
                .iter()
                .filter_map(|p| {
                    let s = p.peer(label)?;
                    Some(Marked {
                        x: x(p, s)?,
                        y: value(s).filter(|v| v.mid.is_finite() && v.mid > 0.0)?,
                        hollow: loadgen_saturated(s),
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
        .collect()
}

/// Server CPU per message against offered rate, one panel per transport,
/// size and connection count, one line per label. Returns every series drawn.
pub fn draw_matched_load(sweep: &[&PointStats], path: &Path, title: &str) -> anyhow::Result<Vec<Series>> {
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
    let notes = [BARS_NOTE.to_string()];
    let root = SVGBackend::new(path, (width, 300 * rows as u32 + 110)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let root = root.titled(title, (FAMILY, fonts.title)).map_err(plot_err)?;
    let (legend, body) = root.split_vertically(fonts.legend_height(&labels, width, notes.len()));
    draw_legend(&legend, &labels, &notes, &fonts, width)?;
    let areas = body.split_evenly((rows, cols));
    let mut series = Vec::new();
    for (area, &(transport, size, conns)) in areas.iter().zip(&panels) {
        let here: Vec<&PointStats> = sweep
            .iter()
            .copied()
            .filter(|p| p.key.transport == transport && p.key.size_bytes == size && p.key.conns == conns)
            .collect();
        let lines = lines_of(&labels, &here, |p, _| p.offered_per_s, &|s: &PeerStats| {
            s.server_cpu_us_per_msg
        });
        let x_hi = here.iter().filter_map(|p| p.offered_per_s).fold(1.0, f64::max) * 1.1;
        let caption = format!("{transport}, {}, {conns} conns", size_label(size));
        series.extend(
            lines
                .iter()
                .map(|l| Series::new(format!("{caption}: {}", l.label), l.points.len())),
        );
        let panel = Panel {
            caption: &caption,
            x_desc: "offered msgs/s",
            y_desc: "server CPU µs / msg",
            y_axis: YAxis::Linear,
        };
        draw_interval_panel(area, 0f64..x_hi, &panel, &lines, &fonts)?;
    }
    root.present().map_err(plot_err)?;
    Ok(series)
}

/// The words around one panel.
struct Panel<'a> {
    caption: &'a str,
    x_desc: &'a str,
    y_desc: &'a str,
    y_axis: YAxis,
}

/// A panel of lines with error bars and markers (hollow where loadgen was saturated).
fn draw_interval_panel<DB: DrawingBackend, X>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    x_range: X,
    panel: &Panel,
    lines: &[IntervalLine],
    fonts: &Fonts,
) -> anyhow::Result<()>
where
    X: plotters::coord::ranged1d::AsRangedCoord<Value = f64> + Clone,
    X::CoordDescType: plotters::coord::ranged1d::ValueFormatter<f64>,
{
    let ys = || lines.iter().flat_map(|l| l.points.iter());
    let hi = ys().map(|p| p.y.hi.max(p.y.mid)).fold(0.0, f64::max);
    let lo = ys().map(|p| p.y.lo.min(p.y.mid)).fold(f64::MAX, f64::min);
    let hi = if hi > 0.0 { hi } else { 1.0 };
    let mut builder = ChartBuilder::on(area);
    builder
        .caption(panel.caption, (FAMILY, fonts.caption))
        .margin(8)
        .margin_right(16)
        .x_label_area_size(fonts.text * 2 + 8)
        .y_label_area_size(fonts.text * 3 + 10);
    match panel.y_axis {
        YAxis::Linear => {
            let chart = builder.build_cartesian_2d(x_range, 0f64..hi * 1.15).map_err(plot_err)?;
            fill_panel(chart, panel, lines, fonts)
        }
        YAxis::Log => {
            let lo = if lo.is_finite() && lo > 0.0 {
                lo / 1.25
            } else {
                hi / 100.0
            };
            let (lo, hi) = (lo, hi * 1.25);
            let y = (lo..hi).log_scale().with_key_points(log_ticks(lo, hi));
            let chart = builder.build_cartesian_2d(x_range, y).map_err(plot_err)?;
            fill_panel(chart, panel, lines, fonts)
        }
    }
}

/// The mesh, the lines and the points of a built panel.
fn fill_panel<'a, DB, X, Y>(
    mut chart: ChartContext<'a, DB, Cartesian2d<X, Y>>,
    panel: &Panel,
    lines: &[IntervalLine],
    fonts: &Fonts,
) -> anyhow::Result<()>
where
    DB: DrawingBackend + 'a,
    X: Ranged<ValueType = f64> + plotters::coord::ranged1d::ValueFormatter<f64>,
    Y: Ranged<ValueType = f64> + plotters::coord::ranged1d::ValueFormatter<f64>,
{
    chart
        .configure_mesh()
        .x_desc(panel.x_desc)
        .y_desc(panel.y_desc)
        .x_label_formatter(&|x| axis_count(*x))
        .y_label_formatter(&|y| human(*y))
        .x_labels(6)
        .y_labels(8)
        .label_style((FAMILY, fonts.text))
        .axis_desc_style((FAMILY, fonts.text))
        .draw()
        .map_err(plot_err)?;
    let labels: Vec<(String, Peer)> = lines.iter().map(|l| (l.label.clone(), l.peer)).collect();
    // Solid lines first, so that a dashed line on top leaves them visible.
    let mut order: Vec<&IntervalLine> = lines.iter().collect();
    order.sort_by_key(|l| line_style(&l.label, l.peer, &labels).dash.is_some());
    for line in order {
        let style = line_style(&line.label, line.peer, &labels);
        draw_line(&mut chart, line.points.iter().map(|p| (p.x, p.y.mid)).collect(), style)?;
        for p in &line.points {
            draw_bar(&mut chart, p, style.color)?;
            draw_marker(&mut chart, (p.x, p.y.mid), style, p.hollow)?;
        }
    }
    Ok(())
}

/// A point's error bar: its interval, with caps.
fn draw_bar<'a, DB, CT>(chart: &mut ChartContext<'a, DB, CT>, p: &Marked, color: RGBColor) -> anyhow::Result<()>
where
    DB: DrawingBackend + 'a,
    CT: plotters::coord::CoordTranslate<From = (f64, f64)>,
{
    if p.y.level.is_none() {
        return Ok(());
    }
    let bar = color.stroke_width(2);
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
    Ok(())
}

/// Ticks for a log axis from `lo` to `hi`: 1, 2 and 5 times each power of
/// ten in range (plotters labels only the powers, which leaves a short
/// range with one label or none).
fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let mut ticks = Vec::new();
    let mut decade = 10f64.powf(lo.log10().floor());
    while decade <= hi {
        for m in [1.0, 2.0, 5.0] {
            let t = decade * m;
            if (lo..=hi).contains(&t) {
                ticks.push(t);
            }
        }
        decade *= 10.0;
    }
    ticks
}

#[cfg(test)]
mod tests {
    use super::log_ticks;

    #[test]
    fn log_ticks_are_1_2_5_in_range() {
        assert_eq!(log_ticks(1.6, 45.0), vec![2.0, 5.0, 10.0, 20.0]);
    }
}
