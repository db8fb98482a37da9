//! Latency by percentile, HdrHistogram style: x = 1/(1-p) on a log axis up
//! to p99.999, y = latency in ms on a log axis, one line per peer, from the
//! open-loop runs that every peer made at one rate.

use std::path::Path;

use anyhow::{bail, Context};
use loadgen::result::decode_histogram;
use plotters::prelude::*;

use super::style::{draw_legend, draw_line, line_style, Fonts};
use super::{human, percentile_label, plot_err, Series, FAMILY};
use crate::analyse::{peers_of, Run};
use crate::plan::Peer;

/// p99.999.
const X_MAX: f64 = 1e5;
/// p1: the line starts here, a hair right of p0, whose value is the
/// histogram's lowest bucket rather than a latency any message saw.
const X_MIN: f64 = 1.0 / 0.99;

/// One peer's (x, ms) points.
struct Line {
    peer: Peer,
    points: Vec<(f64, f64)>,
}

fn spectrum_lines(runs: &[Run]) -> anyhow::Result<Vec<Line>> {
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
                let x = X_MIN * (X_MAX / X_MIN).powf(i as f64 / STEPS as f64);
                let q = 1.0 - 1.0 / x;
                (x, (hist.value_at_quantile(q) as f64).max(1.0) / 1000.0)
            })
            .collect();
        lines.push(Line { peer, points });
    }
    Ok(lines)
}

/// Draws the spectrum of `runs` (one median run per peer, all at one point).
pub fn draw_spectrum(runs: &[Run], path: &Path, title: &str) -> anyhow::Result<Vec<Series>> {
    let lines = spectrum_lines(runs)?;
    if lines.is_empty() {
        bail!("no open-loop run has a non-empty histogram");
    }
    let ys = || lines.iter().flat_map(|l| l.points.iter().map(|p| p.1));
    let hi = ys().fold(0.001, f64::max);
    let lo = ys().fold(f64::MAX, f64::min);
    let width = 900;
    let fonts = Fonts::for_width(width);
    let labels: Vec<(String, Peer)> = lines.iter().map(|l| (l.peer.name().to_string(), l.peer)).collect();
    let notes = ["corrected for coordinated omission: latency counts from when each message was due".to_string()];
    let root = SVGBackend::new(path, (width, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let root = root.titled(title, (FAMILY, fonts.title)).map_err(plot_err)?;
    let (legend, body) = root.split_vertically(fonts.legend_height(&labels, width, notes.len()));
    draw_legend(&legend, &labels, &notes, &fonts, width)?;
    let mut chart = ChartBuilder::on(&body)
        .margin(12)
        .margin_right(40)
        .x_label_area_size(fonts.text * 2 + 10)
        .y_label_area_size(fonts.text * 3 + 12)
        .build_cartesian_2d((1f64..X_MAX).log_scale(), (lo / 1.5..hi * 1.5).log_scale())
        .map_err(plot_err)?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("latency (ms)")
        .x_label_formatter(&|x| percentile_label(*x))
        .y_label_formatter(&|y| human(*y))
        .label_style((FAMILY, fonts.text))
        .axis_desc_style((FAMILY, fonts.text))
        .draw()
        .map_err(plot_err)?;
    let mut order: Vec<&Line> = lines.iter().collect();
    order.sort_by_key(|l| line_style(l.peer.name(), l.peer, &labels).dash.is_some());
    for line in order {
        draw_line(
            &mut chart,
            line.points.clone(),
            line_style(line.peer.name(), line.peer, &labels),
        )?;
    }
    root.present().map_err(plot_err)?;
    Ok(lines
        .iter()
        .map(|l| Series::new(l.peer.name().to_string(), l.points.len()))
        .collect())
}
