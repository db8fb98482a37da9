//! SVG plots of a comparison, drawn with `plotters` (no Python needed).
//!
//! No font is loaded: plotters is built without a font backend, so it lays
//! text out from an estimate of its width, and the SVG names a generic
//! `sans-serif` family that the viewer (a browser, GitHub) renders. Nothing
//! needs to be installed for the plots.

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::{anyhow, bail, Context};
use base64::Engine;
use hdrhistogram::Histogram;
use plotters::prelude::*;

use super::{Manifest, RunRecord};
use crate::result::RunResult;

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

/// The fixed colour of a backend in every plot.
pub fn backend_color(backend: &str) -> RGBColor {
    match backend {
        "fork" => RGBColor(214, 39, 40),
        "threadpool" => RGBColor(255, 127, 14),
        "epoll" => RGBColor(31, 119, 180),
        "uring" => RGBColor(44, 160, 44),
        _ => RGBColor(100, 100, 100),
    }
}

/// Backends in the order the plots list them.
fn backends_of(runs: &[(RunRecord, RunResult)]) -> Vec<String> {
    const ORDER: [&str; 4] = ["fork", "threadpool", "epoll", "uring"];
    let present: BTreeSet<&str> = runs.iter().map(|(r, _)| r.spec.backend.as_str()).collect();
    let mut out: Vec<String> = ORDER
        .iter()
        .filter(|b| present.contains(*b))
        .map(|b| b.to_string())
        .collect();
    out.extend(present.iter().filter(|b| !ORDER.contains(b)).map(|b| b.to_string()));
    out
}

/// Draws every plot the manifest's results allow. Returns the files written.
pub fn draw_all(manifest: &Manifest, dir: &Path) -> anyhow::Result<Vec<PlotFile>> {
    let runs = manifest.load_results(dir);
    draw_from_results(&runs, manifest.open_loop_rate, dir)
}

/// Draws the plots from (record, result) pairs; the entry point the tests use.
pub fn draw_from_results(
    runs: &[(RunRecord, RunResult)],
    open_rate: Option<f64>,
    dir: &Path,
) -> anyhow::Result<Vec<PlotFile>> {
    let runs = super::median_runs(runs);
    let closed: Vec<_> = runs.iter().filter(|(r, _)| !r.spec.is_open_loop()).cloned().collect();
    let open: Vec<_> = runs.iter().filter(|(r, _)| r.spec.is_open_loop()).cloned().collect();
    let mut files = Vec::new();
    if !closed.is_empty() {
        let f = PlotFile {
            file: PLOT_FILES[0].into(),
            title: "Throughput vs connections (closed loop)".into(),
        };
        draw_vs_conns(&closed, &dir.join(&f.file), &f.title, "msgs/s", |res| {
            Some(res.throughput.msgs_per_s)
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
            server_cpu_us_per_msg,
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
        draw_over_time(&closed, &transport, size, &dir.join(&f.file), &f.title)?;
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

/// `extra.server_cpu_us_per_msg`, when recorded.
pub fn server_cpu_us_per_msg(res: &RunResult) -> Option<f64> {
    res.extra.get("server_cpu_us_per_msg").and_then(|v| v.as_f64())
}

/// Decodes the result's HdrHistogram (V2 compressed, base64).
pub fn decode_histogram(res: &RunResult) -> anyhow::Result<Histogram<u64>> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(res.histogram.trim())
        .context("histogram is not base64")?;
    hdrhistogram::serialization::Deserializer::new()
        .deserialize(&mut &bytes[..])
        .map_err(|e| anyhow!("histogram does not decode: {e:?}"))
}

fn plot_err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("drawing: {e:?}")
}

/// A grid of panels (size rows x transport columns), x = connections (log),
/// one line per backend.
fn draw_vs_conns(
    runs: &[(RunRecord, RunResult)],
    path: &Path,
    title: &str,
    y_desc: &str,
    value: impl Fn(&RunResult) -> Option<f64>,
) -> anyhow::Result<()> {
    let transports: Vec<String> = {
        let mut t: Vec<String> = Vec::new();
        for name in ["tcp", "udp", "unix", "unixgram"] {
            if runs.iter().any(|(r, _)| r.spec.transport == name) {
                t.push(name.into());
            }
        }
        t
    };
    let sizes: Vec<u64> = runs
        .iter()
        .map(|(r, _)| r.spec.size_bytes)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let backends = backends_of(runs);
    let (cols, rows) = (transports.len().max(1), sizes.len().max(1));
    let root = SVGBackend::new(path, (430 * cols as u32 + 40, 340 * rows as u32 + 50)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let root = root.titled(title, (FAMILY, 22)).map_err(plot_err)?;
    // One legend for the whole figure, so that it never hides a point.
    let (legend, body) = root.split_vertically(28);
    draw_legend(&legend, &backends)?;
    let panels = body.split_evenly((rows, cols));
    let max_conns = runs.iter().map(|(r, _)| r.spec.conns).max().unwrap_or(1) as f64;
    for (i, panel) in panels.iter().enumerate() {
        let (transport, size) = (&transports[i % cols], sizes[i / cols]);
        let series: Vec<(String, Vec<(f64, f64)>)> = backends
            .iter()
            .map(|b| {
                let mut pts: Vec<(f64, f64)> = runs
                    .iter()
                    .filter(|(r, _)| {
                        &r.spec.backend == b && &r.spec.transport == transport && r.spec.size_bytes == size
                    })
                    .filter_map(|(r, res)| {
                        value(res)
                            .filter(|v| v.is_finite() && *v > 0.0)
                            .map(|v| (r.spec.conns as f64, v))
                    })
                    .collect();
                pts.sort_by(|a, b| a.0.total_cmp(&b.0));
                (b.clone(), pts)
            })
            .collect();
        let ys: Vec<f64> = series.iter().flat_map(|(_, p)| p.iter().map(|p| p.1)).collect();
        let caption = format!("{transport}, {}", size_label(size));
        let x_range = (0.7f64..(max_conns * 1.5).max(10.0)).log_scale();
        let mut builder = ChartBuilder::on(panel);
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
            continue;
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
        for (backend, pts) in &series {
            let color = backend_color(backend);
            chart
                .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
                .map_err(plot_err)?;
            chart
                .draw_series(pts.iter().map(|&p| Circle::new(p, 3, color.filled())))
                .map_err(plot_err)?;
        }
    }
    root.present().map_err(plot_err)?;
    Ok(())
}

/// A row of backend names with their line colours.
fn draw_legend<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    backends: &[String],
) -> anyhow::Result<()> {
    for (i, backend) in backends.iter().enumerate() {
        let x = 60 + 150 * i as i32;
        let color = backend_color(backend);
        area.draw(&PathElement::new(vec![(x, 14), (x + 26, 14)], color.stroke_width(3)))
            .map_err(plot_err)?;
        area.draw(&Text::new(backend.clone(), (x + 32, 6), (FAMILY, 15)))
            .map_err(plot_err)?;
    }
    Ok(())
}

/// Latency by percentile, HdrHistogram style: x = 1/(1-p) on a log axis from
/// p0 to p99.999, y = latency (log). One line per backend.
fn draw_spectrum(runs: &[(RunRecord, RunResult)], path: &Path, title: &str) -> anyhow::Result<()> {
    const STEPS: usize = 400;
    const X_MAX: f64 = 1e5; // p99.999
    let mut series = Vec::new();
    for backend in backends_of(runs) {
        let Some((rec, res)) = runs.iter().find(|(r, _)| r.spec.backend == backend) else {
            continue;
        };
        let hist = decode_histogram(res).with_context(|| rec.result_file.clone())?;
        if hist.is_empty() {
            continue;
        }
        let pts: Vec<(f64, f64)> = (0..=STEPS)
            .map(|i| {
                let x = X_MAX.powf(i as f64 / STEPS as f64);
                let q = 1.0 - 1.0 / x;
                (x, (hist.value_at_quantile(q) as f64).max(1.0))
            })
            .collect();
        series.push((backend, pts));
    }
    if series.is_empty() {
        bail!("no open-loop run has a non-empty histogram");
    }
    let hi = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|p| p.1))
        .fold(1.0, f64::max);
    let lo = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|p| p.1))
        .fold(f64::MAX, f64::min);
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
    for (backend, pts) in &series {
        let color = backend_color(backend);
        chart
            .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
            .map_err(plot_err)?
            .label(backend.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .label_font((FAMILY, 13))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .draw()
        .map_err(plot_err)?;
    root.present().map_err(plot_err)?;
    Ok(())
}

/// The transport and message size the over-time plot compares: tcp (else the
/// first transport run) and the smallest size, the same for every backend, so
/// that one backend's udp run is never drawn against another's tcp run.
fn over_time_point(runs: &[(RunRecord, RunResult)]) -> (String, u64) {
    let transport = runs
        .iter()
        .map(|(r, _)| r.spec.transport.as_str())
        .find(|t| *t == "tcp")
        .or_else(|| runs.first().map(|(r, _)| r.spec.transport.as_str()))
        .unwrap_or("tcp")
        .to_string();
    let size = runs
        .iter()
        .filter(|(r, _)| r.spec.transport == transport)
        .map(|(r, _)| r.spec.size_bytes)
        .min()
        .unwrap_or(0);
    (transport, size)
}

/// Messages per second through each backend's largest run (most connections)
/// at one transport and size, from the result's `series`.
fn draw_over_time(
    runs: &[(RunRecord, RunResult)],
    transport: &str,
    size: u64,
    path: &Path,
    title: &str,
) -> anyhow::Result<()> {
    let mut series = Vec::new();
    for backend in backends_of(runs) {
        let largest = runs
            .iter()
            .filter(|(r, res)| {
                r.spec.backend == backend
                    && r.spec.transport == transport
                    && r.spec.size_bytes == size
                    && !res.series.is_empty()
            })
            .max_by_key(|(r, _)| r.spec.conns);
        let Some((rec, res)) = largest else { continue };
        let mut prev_t = 0.0;
        let pts: Vec<(f64, f64)> = res
            .series
            .iter()
            .map(|p| {
                let dt = (p.t_s - prev_t).max(1e-3);
                prev_t = p.t_s;
                (p.t_s, p.msgs as f64 / dt)
            })
            .collect();
        let label = format!(
            "{backend} ({}, {} conns, {})",
            rec.spec.transport,
            rec.spec.conns,
            size_label(rec.spec.size_bytes)
        );
        series.push((backend, label, pts));
    }
    let t_max = series
        .iter()
        .flat_map(|(_, _, p)| p.iter().map(|p| p.0))
        .fold(1.0, f64::max);
    let hi = series
        .iter()
        .flat_map(|(_, _, p)| p.iter().map(|p| p.1))
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
    for (backend, label, pts) in &series {
        let color = backend_color(backend);
        chart
            .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
            .map_err(plot_err)?
            .label(label.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
        chart
            .draw_series(pts.iter().map(|&p| Circle::new(p, 3, color.filled())))
            .map_err(plot_err)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .label_font((FAMILY, 12))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .draw()
        .map_err(plot_err)?;
    root.present().map_err(plot_err)?;
    Ok(())
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
