//! Throughput through the measured phase at one point, from loadgen's
//! `series`: each backend's median run drawn bold in its own colour, marker
//! and dash, its other repetitions faint behind it, so that a dip that every
//! repetition shows stands apart from one run's hiccup.
//!
//! loadgen records the series in 100 ms buckets (`series_interval_s`; files
//! written before it existed hold one bucket per second). The plot is drawn
//! only when every line has [`MIN_BUCKETS`] buckets: a 1.5 s phase in 1 s
//! buckets leaves one, a dot and no line, and the README then says why.
//! Warm-up is not in the series, so it is not in the plot; the x axis says so.

use std::path::Path;

use loadgen::result::SeriesPoint;
use plotters::prelude::*;
use sockbench::net::Transport;

use super::style::{draw_legend, draw_line, draw_marker, line_style, Fonts};
use super::{human, plot_err, Series, FAMILY};
use crate::analyse::{peers_of, Run};
use crate::plan::{Peer, PointShape};

/// The fewest buckets a line needs to show anything over time.
pub const MIN_BUCKETS: usize = 3;

/// The most markers on one line: markers tell the lines apart, and one per
/// bucket of a long run would hide them.
const MAX_MARKERS: usize = 12;

/// The point the over-time plot compares: tcp (else the first transport
/// run), the smallest size, and the most connections at which every peer
/// ran unscaled, so that every line is the same load on a different server
/// (never one peer's udp run against another's tcp run, nor fork's 4,000
/// connections against epoll's 10,000).
pub fn over_time_point(runs: &[Run]) -> PointShape {
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

/// A line of the over-time plot: one run's buckets.
pub struct OverTimeLine {
    label: String,
    peer: Peer,
    /// The label's median run (bold), or another repetition (faint).
    median: bool,
    repetition: u32,
    /// (middle of the bucket in seconds into the measured phase, msgs/s).
    points: Vec<(f64, f64)>,
    /// The width of the run's buckets, seconds.
    bucket_s: f64,
    /// The run's measured phase and the warm-up before it, seconds.
    window_s: f64,
    warmup_s: f64,
}

impl OverTimeLine {
    /// The name a test or a message gives the line.
    fn name(&self) -> String {
        match self.median {
            true => self.label.clone(),
            false => format!("{} (repetition {}, faint)", self.label, self.repetition),
        }
    }
}

/// Every run at `point` with a series, as lines: per label its median run
/// (the one every table shows) first, then its other repetitions.
pub fn over_time_lines(runs: &[Run], point: PointShape) -> Vec<OverTimeLine> {
    let here: Vec<Run> = runs
        .iter()
        .filter(|r| {
            let s = &r.record.spec;
            s.transport == point.transport
                && s.size_bytes == point.size_bytes
                && s.conns == point.conns
                && !r.result.series.is_empty()
        })
        .cloned()
        .collect();
    let same = |a: &Run, b: &Run| a.record.spec.name() == b.record.spec.name() && a.result.run_id == b.result.run_id;
    let mut lines = Vec::new();
    for median in crate::analyse::median_runs(&here) {
        let label = crate::analyse::label(&median);
        let others = here
            .iter()
            .filter(|r| crate::analyse::label(r) == label && !same(r, &median));
        for (k, run) in std::iter::once(&median).chain(others).enumerate() {
            lines.push(OverTimeLine {
                label: label.clone(),
                peer: run.record.spec.peer,
                median: k == 0,
                repetition: run.record.spec.repetition,
                points: rates_of(&run.result.series),
                bucket_s: run.result.series_interval(),
                window_s: run.result.settings.duration_s,
                warmup_s: run.result.settings.warmup_s,
            });
        }
    }
    lines
}

/// The fewest buckets of any line, 0 without lines.
pub fn fewest_buckets(lines: &[OverTimeLine]) -> usize {
    lines.iter().map(|l| l.points.len()).min().unwrap_or(0)
}

/// The widest of the lines' buckets, seconds (1 s for files from before
/// loadgen recorded it).
pub fn bucket_s(lines: &[OverTimeLine]) -> f64 {
    lines.iter().map(|l| l.bucket_s).fold(0.0, f64::max)
}

/// The longest measured phase of the lines' runs, seconds.
pub fn window_s(lines: &[OverTimeLine]) -> f64 {
    lines.iter().map(|l| l.window_s).fold(0.0, f64::max)
}

/// Seconds to at most two decimals, without trailing zeros: `0.5`, `1`, `1.25`.
pub fn seconds(s: f64) -> String {
    let text = format!("{s:.2}");
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// (middle of the bucket, msgs/s) of each `series` bucket: its messages
/// over its length, the time since the previous bucket's end.
fn rates_of(series: &[SeriesPoint]) -> Vec<(f64, f64)> {
    let mut prev_t = 0.0;
    series
        .iter()
        .map(|p| {
            let dt = (p.t_s - prev_t).max(1e-3);
            let mid = prev_t + dt / 2.0;
            prev_t = p.t_s;
            (mid, p.msgs as f64 / dt)
        })
        .collect()
}

/// Draws the plot; returns every line drawn (faint ones too).
pub fn draw_over_time(lines: &[OverTimeLine], path: &Path, title: &str) -> anyhow::Result<Vec<Series>> {
    let t_max = lines
        .iter()
        .flat_map(|l| l.points.last().map(|p| p.0 + l.bucket_s / 2.0))
        .fold(0.1, f64::max);
    let hi = lines
        .iter()
        .flat_map(|l| l.points.iter().map(|p| p.1))
        .fold(1.0, f64::max);
    let width = 900;
    let fonts = Fonts::for_width(width);
    let mut labels: Vec<(String, Peer)> = Vec::new();
    for l in lines.iter().filter(|l| l.median) {
        labels.push((l.label.clone(), l.peer));
    }
    let mut notes = vec!["each backend's median run; its other repetitions faint behind it".to_string()];
    if lines.iter().all(|l| l.median) {
        notes[0] = "each backend's median run".into();
    }
    let root = SVGBackend::new(path, (width, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let root = root.titled(title, (FAMILY, fonts.title)).map_err(plot_err)?;
    let (legend, body) = root.split_vertically(fonts.legend_height(&labels, width, notes.len()));
    draw_legend(&legend, &labels, &notes, &fonts, width)?;
    let mut chart = ChartBuilder::on(&body)
        .margin(12)
        .margin_right(24)
        .x_label_area_size(fonts.text * 2 + 10)
        .y_label_area_size(fonts.text * 3 + 12)
        .build_cartesian_2d(0f64..t_max, 0f64..hi * 1.15)
        .map_err(plot_err)?;
    let warmup = match lines.iter().map(|l| l.warmup_s).fold(0.0, f64::max) {
        w if w > 0.0 => format!(", after {} s of warm-up", seconds(w)),
        _ => String::new(),
    };
    chart
        .configure_mesh()
        .x_desc(format!(
            "seconds into the measured phase{warmup} ({} ms buckets)",
            human(bucket_s(lines) * 1e3)
        ))
        .y_desc("msgs/s")
        // Major grid lines only: the minor ones would cross every line.
        .max_light_lines(0)
        .x_label_formatter(&|x| seconds(*x))
        .y_label_formatter(&|y| human(*y))
        .label_style((FAMILY, fonts.text))
        .axis_desc_style((FAMILY, fonts.text))
        .draw()
        .map_err(plot_err)?;
    // The faint repetitions first, so that every median line is on top of them.
    for line in lines.iter().filter(|l| !l.median) {
        let color = line_style(&line.label, line.peer, &labels).color;
        chart
            .draw_series(LineSeries::new(line.points.clone(), color.mix(0.3).stroke_width(1)))
            .map_err(plot_err)?;
    }
    for (i, line) in lines.iter().filter(|l| l.median).enumerate() {
        let style = line_style(&line.label, line.peer, &labels);
        draw_line(&mut chart, line.points.clone(), style)?;
        // At most MAX_MARKERS markers, staggered so that lines on top of
        // each other still show every marker.
        let every = line.points.len().div_ceil(MAX_MARKERS).max(1);
        for &p in line.points.iter().skip(i % every).step_by(every) {
            draw_marker(&mut chart, p, style, false)?;
        }
    }
    root.present().map_err(plot_err)?;
    Ok(lines.iter().map(|l| Series::new(l.name(), l.points.len())).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_is_drawn_at_its_middle_at_its_own_rate() {
        let series: Vec<SeriesPoint> = [(0.1, 100), (0.2, 200), (0.35, 150)]
            .into_iter()
            .map(|(t_s, msgs)| SeriesPoint {
                t_s,
                msgs,
                ..SeriesPoint::default()
            })
            .collect();
        let r = rates_of(&series);
        let close = |a: (f64, f64), b: (f64, f64)| (a.0 - b.0).abs() < 1e-9 && (a.1 - b.1).abs() < 1e-6;
        assert!(close(r[0], (0.05, 1_000.0)), "{r:?}");
        assert!(close(r[1], (0.15, 2_000.0)), "{r:?}");
        assert!(close(r[2], (0.275, 1_000.0)), "{r:?}");
        assert_eq!(
            [seconds(0.5), seconds(1.0), seconds(0.0), seconds(1.25)],
            ["0.5", "1", "0", "1.25"]
        );
    }
}
