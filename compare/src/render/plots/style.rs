//! How a label looks in every plot (colour, marker and dash), the font
//! sizes, and the legend strip above the panels.
//!
//! Each backend differs from the others in all three of colour, marker and
//! dash, so two lines that lie on top of each other still show both (epoll
//! and uring often do), and a reader who cannot tell the colours apart can
//! still tell the lines apart.

use plotters::element::DashedPathElement;
use plotters::prelude::*;
use sockbench::server::BackendKind;

use super::{plot_err, FAMILY, MIN_TEXT_PX};
use crate::plan::Peer;

/// The width at which a README shows an SVG (GitHub's content column).
pub const DISPLAY_WIDTH_PX: f64 = 880.0;

/// The font size to ask plotters for so that text is `display_px` tall when
/// an SVG `svg_width` wide is shown [`DISPLAY_WIDTH_PX`] wide. plotters'
/// SVG backend writes `font-size` as the requested size / 1.24, so the
/// request is scaled up by that much.
pub fn font_px(svg_width: u32, display_px: f64) -> u32 {
    let scale = (svg_width as f64 / DISPLAY_WIDTH_PX).max(1.0);
    (display_px * scale * 1.24).ceil() as u32
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

/// A marker shape, drawn in pixels around its point.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Marker {
    Circle,
    Square,
    TriangleUp,
    Diamond,
    TriangleDown,
}

/// A line's dash: `None` draws it solid, else (dash, gap) in pixels.
pub type Dash = Option<(u32, u32)>;

/// Everything that tells one label's line from another's.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LineStyle {
    pub color: RGBColor,
    pub marker: Marker,
    pub dash: Dash,
}

/// Colours for the second and later labels of one peer (an A/B variant or
/// an A/A entry), none of them a peer's colour.
const VARIANT_COLORS: [RGBColor; 5] = [
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(90, 90, 90),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];
const MARKERS: [Marker; 5] = [
    Marker::Circle,
    Marker::Square,
    Marker::TriangleUp,
    Marker::Diamond,
    Marker::TriangleDown,
];
const DASHES: [Dash; 5] = [None, Some((14, 5)), Some((5, 4)), Some((9, 4)), Some((2, 3))];

/// The style of `label`, run on `peer`, among the `labels` of one plot. A
/// label named after its peer takes the peer's colour, marker and dash; any
/// other label of that peer (`uring@huge`) takes a colour of its own and the
/// next marker and dash, so that variants of one backend differ as much as
/// backends do.
pub fn line_style(label: &str, peer: Peer, labels: &[(String, Peer)]) -> LineStyle {
    let base = match peer {
        Peer::Backend(BackendKind::Fork) => 0,
        Peer::Backend(BackendKind::Threadpool) => 1,
        Peer::Backend(BackendKind::Epoll) => 2,
        Peer::Backend(BackendKind::Uring) => 3,
        Peer::Tokio => 4,
    };
    // Marker and dash indices are offset so that epoll is solid with a triangle.
    let (marker, dash) = (MARKERS[base], DASHES[(base + 3) % 5]);
    if label == peer.name() {
        return LineStyle {
            color: peer_color(peer),
            marker,
            dash,
        };
    }
    let k = labels
        .iter()
        .filter(|(l, p)| *p == peer && l != peer.name())
        .position(|(l, _)| l == label)
        .unwrap_or(0);
    LineStyle {
        color: VARIANT_COLORS[k % VARIANT_COLORS.len()],
        marker: MARKERS[(base + 1 + k) % 5],
        dash: DASHES[(base + 4 + k) % 5],
    }
}

/// The pixel outline of `marker` at radius `r`.
fn outline(marker: Marker, r: i32) -> Vec<(i32, i32)> {
    match marker {
        Marker::Circle => (0..16)
            .map(|i| {
                let a = i as f64 * std::f64::consts::TAU / 16.0;
                ((r as f64 * a.cos()).round() as i32, (r as f64 * a.sin()).round() as i32)
            })
            .collect(),
        Marker::Square => {
            let s = r * 4 / 5;
            vec![(-s, -s), (s, -s), (s, s), (-s, s)]
        }
        Marker::TriangleUp => vec![(0, -r - 1), (r, r * 3 / 4), (-r, r * 3 / 4)],
        Marker::TriangleDown => vec![(0, r + 1), (r, -r * 3 / 4), (-r, -r * 3 / 4)],
        Marker::Diamond => vec![(0, -r - 1), (r, 0), (0, r + 1), (-r, 0)],
    }
}

/// Draws `style`'s marker centred on the pixel `at` of `area`: filled, or
/// white inside its coloured outline when `hollow`.
pub fn draw_marker_px<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    at: (i32, i32),
    style: LineStyle,
    hollow: bool,
) -> anyhow::Result<()> {
    let (fill, ring) = marker_shapes(style, hollow);
    area.draw(&(EmptyElement::at(at) + fill + ring)).map_err(plot_err)
}

/// Draws `style`'s marker centred on the chart point `at`.
pub fn draw_marker<'a, DB, CT>(
    chart: &mut ChartContext<'a, DB, CT>,
    at: (f64, f64),
    style: LineStyle,
    hollow: bool,
) -> anyhow::Result<()>
where
    DB: DrawingBackend + 'a,
    CT: plotters::coord::CoordTranslate<From = (f64, f64)>,
{
    let (fill, ring) = marker_shapes(style, hollow);
    chart
        .draw_series(std::iter::once(EmptyElement::at(at) + fill + ring))
        .map(|_| ())
        .map_err(plot_err)
}

/// A marker's filled shape and its outline, in pixels around (0, 0).
type MarkerShapes = (Polygon<(i32, i32)>, PathElement<(i32, i32)>);

/// The shapes of `style`'s marker.
fn marker_shapes(style: LineStyle, hollow: bool) -> MarkerShapes {
    let pts = outline(style.marker, 6);
    let fill = if hollow { WHITE.filled() } else { style.color.filled() };
    let mut ring = pts.clone();
    ring.push(ring[0]);
    (
        Polygon::new(pts, fill),
        PathElement::new(ring, style.color.stroke_width(2)),
    )
}

/// A line in `style`'s colour and dash through `points` (in chart coordinates).
pub fn draw_line<'a, DB, CT>(
    chart: &mut ChartContext<'a, DB, CT>,
    points: Vec<(f64, f64)>,
    style: LineStyle,
) -> anyhow::Result<()>
where
    DB: DrawingBackend + 'a,
    CT: plotters::coord::CoordTranslate<From = (f64, f64)>,
{
    let stroke = style.color.stroke_width(2);
    match style.dash {
        None => chart.draw_series(LineSeries::new(points, stroke)).map(|_| ()),
        Some((dash, gap)) => chart
            .draw_series(DashedLineSeries::new(points, dash, gap, stroke))
            .map(|_| ()),
    }
    .map_err(plot_err)
}

/// Font sizes (as requested from plotters) for an SVG of a given width.
pub struct Fonts {
    pub title: u32,
    pub caption: u32,
    pub text: u32,
}

impl Fonts {
    pub fn for_width(width: u32) -> Fonts {
        Fonts {
            title: font_px(width, 17.0),
            caption: font_px(width, 15.0),
            text: font_px(width, MIN_TEXT_PX),
        }
    }

    /// The legend's rows of labels and its lines of explanation.
    pub fn legend_height(&self, labels: &[(String, Peer)], width: u32, notes: usize) -> u32 {
        let rows = legend_layout(labels, self, width).rows as u32 + notes as u32;
        rows * (self.text + 6) + 8
    }
}

/// A label in the legend: tokio is marked as the reference implementation.
pub fn legend_name(label: &str, peer: Peer) -> String {
    if peer == Peer::Tokio {
        format!("{label} (reference)")
    } else {
        label.to_string()
    }
}

/// Where each legend entry goes: (x, row), wrapping to a new row when the
/// next entry would pass the right edge; widths from an estimate of the
/// text's width (no font is loaded, see the module doc of [`super`]).
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
        let w = 44 + (legend_name(label, *peer).chars().count() as f64 * char_px) as i32 + 28;
        if x + w > width as i32 - 20 && x > 40 {
            x = 40;
            row += 1;
        }
        at.push((x, row));
        x += w;
    }
    LegendLayout { at, rows: row + 1 }
}

/// Rows of label names, each with its line and marker, then one line per
/// note (what the bars and hollow markers mean, scaled-down runs).
pub fn draw_legend<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    labels: &[(String, Peer)],
    notes: &[String],
    fonts: &Fonts,
    width: u32,
) -> anyhow::Result<()> {
    let layout = legend_layout(labels, fonts, width);
    let row = fonts.text as i32 + 6;
    for ((label, peer), &(x, r)) in labels.iter().zip(&layout.at) {
        let style = line_style(label, *peer, labels);
        let y = r * row + row / 2;
        let stroke = style.color.stroke_width(3);
        match style.dash {
            None => area.draw(&PathElement::new(vec![(x, y), (x + 38, y)], stroke)),
            Some((dash, gap)) => area.draw(&DashedPathElement::new(
                vec![(x, y), (x + 38, y)],
                dash as i32,
                gap as i32,
                stroke,
            )),
        }
        .map_err(plot_err)?;
        draw_marker_px(area, (x + 19, y), style, false)?;
        area.draw(&Text::new(
            legend_name(label, *peer),
            (x + 44, r * row + 2),
            (FAMILY, fonts.text),
        ))
        .map_err(plot_err)?;
    }
    for (i, note) in notes.iter().enumerate() {
        area.draw(&Text::new(
            note.as_str(),
            (40, (layout.rows + i as i32) * row + 4),
            (FAMILY, fonts.text),
        ))
        .map_err(plot_err)?;
    }
    Ok(())
}
