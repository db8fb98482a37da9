//! Throughput over the measured phase, one line per peer, from loadgen's
//! `series` (one bucket per report interval, one second in today's loadgen).
//! Drawn only when every line has [`MIN_BUCKETS`] buckets: the default runs
//! measure 1.5 s, which leaves one bucket per line, a dot and no line.
//! (Finer buckets would be loadgen's to report; compare draws what it has.)

use std::path::Path;

use loadgen::result::RunResult;
use plotters::prelude::*;
use sockbench::net::Transport;

use super::style::{draw_legend, draw_line, draw_marker, line_style, Fonts};
use super::{human, plot_err, Series, FAMILY};
use crate::analyse::{peers_of, Run};
use crate::plan::{Peer, PointShape};

/// The fewest buckets a line needs to show anything over time.
pub const MIN_BUCKETS: usize = 3;

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

/// A labelled line of the over-time plot.
pub struct OverTimeLine {
    label: String,
    peer: Peer,
    points: Vec<(f64, f64)>,
}

/// Messages per second through each peer's (median) run at `point`.
pub fn over_time_lines(runs: &[Run], point: PointShape) -> Vec<OverTimeLine> {
    runs.iter()
        .filter(|r| {
            let s = &r.record.spec;
            s.transport == point.transport
                && s.size_bytes == point.size_bytes
                && s.conns == point.conns
                && !r.result.series.is_empty()
        })
        .map(|run| OverTimeLine {
            label: crate::analyse::label(run),
            peer: run.record.spec.peer,
            points: rates_of(&run.result),
        })
        .collect()
}

/// The fewest buckets of any line, 0 without lines.
pub fn fewest_buckets(lines: &[OverTimeLine]) -> usize {
    lines.iter().map(|l| l.points.len()).min().unwrap_or(0)
}

/// The length of the runs' buckets, seconds (the first bucket's end).
pub fn bucket_s(lines: &[OverTimeLine]) -> Option<f64> {
    lines
        .iter()
        .filter_map(|l| l.points.first().map(|p| p.0))
        .reduce(f64::min)
}

/// The longest measured phase of the lines, seconds (the last bucket's end).
pub fn window_s(lines: &[OverTimeLine]) -> f64 {
    lines
        .iter()
        .filter_map(|l| l.points.last().map(|p| p.0))
        .fold(0.0, f64::max)
}

/// (seconds, msgs/s) of each `series` interval.
fn rates_of(res: &RunResult) -> Vec<(f64, f64)> {
    let mut prev_t = 0.0;
    res.series
        .iter()
        .map(|p| {
            let dt = (p.t_s - prev_t).max(1e-3);
            prev_t = p.t_s;
            (p.t_s, p.msgs as f64 / dt)
        })
        .collect()
}

pub fn draw_over_time(lines: &[OverTimeLine], path: &Path, title: &str) -> anyhow::Result<Vec<Series>> {
    let t_max = lines
        .iter()
        .flat_map(|l| l.points.iter().map(|p| p.0))
        .fold(1.0, f64::max);
    let hi = lines
        .iter()
        .flat_map(|l| l.points.iter().map(|p| p.1))
        .fold(1.0, f64::max);
    let width = 900;
    let fonts = Fonts::for_width(width);
    let labels: Vec<(String, Peer)> = lines.iter().map(|l| (l.label.clone(), l.peer)).collect();
    let root = SVGBackend::new(path, (width, 540)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let root = root.titled(title, (FAMILY, fonts.title)).map_err(plot_err)?;
    let (legend, body) = root.split_vertically(fonts.legend_height(&labels, width, 0));
    draw_legend(&legend, &labels, &[], &fonts, width)?;
    let mut chart = ChartBuilder::on(&body)
        .margin(12)
        .margin_right(24)
        .x_label_area_size(fonts.text * 2 + 10)
        .y_label_area_size(fonts.text * 3 + 12)
        .build_cartesian_2d(0f64..t_max, 0f64..hi * 1.15)
        .map_err(plot_err)?;
    let bucket = bucket_s(lines)
        .map(|b| format!(" ({} s buckets)", human(b)))
        .unwrap_or_default();
    chart
        .configure_mesh()
        .x_desc(format!("seconds into the measured phase{bucket}"))
        .y_desc("msgs/s")
        .y_label_formatter(&|y| human(*y))
        .label_style((FAMILY, fonts.text))
        .axis_desc_style((FAMILY, fonts.text))
        .draw()
        .map_err(plot_err)?;
    for line in lines {
        let style = line_style(&line.label, line.peer, &labels);
        draw_line(&mut chart, line.points.clone(), style)?;
        for &p in &line.points {
            draw_marker(&mut chart, p, style, false)?;
        }
    }
    root.present().map_err(plot_err)?;
    Ok(lines
        .iter()
        .map(|l| Series::new(l.label.clone(), l.points.len()))
        .collect())
}
