//! Graphs as pictures: data in, PNG or SVG bytes out. Pure and synchronous;
//! callers run it on the blocking pool.
//!
//! The look follows rrdtool and Munin (white canvas, light grid, a legend table
//! with current, min, average and max) with Grafana's colours. Text is drawn
//! with DejaVu Sans embedded in the binary, so no system font is needed.

pub mod marks;
pub mod png;
pub mod text;
pub mod threshold;
pub mod time;
pub mod units;

pub use marks::Mark;
use text::{Label, Style};
pub use threshold::{range_bounds, Level, Threshold};
pub use units::Unit;

use plotters::coord::Shift;
use plotters::element::DashedPathElement;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, VPos};
use std::sync::Once;

/// The font every graph's text is measured and drawn with.
static FONT: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");
const FAMILY: &str = "sans-serif";

/// Registers the embedded font with plotters. Cheap after the first call;
/// call it at start so a broken font shows up at once, not at the first graph.
pub fn init() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if plotters::style::register_font(FAMILY, FontStyle::Normal, FONT).is_err() {
            // The bytes are fixed at build time and checked by the tests.
            tracing::error!("the embedded graph font is not a valid TrueType font");
        }
    });
}

/// Plot gutters: the dashboard maps a drag across a graph to times with
/// these (static/graphs.js); y labels wider than the left one push it.
pub const PLOT_LEFT: i32 = 72;
pub const PLOT_RIGHT: i32 = 14;

/// Most characters of a title or legend label; longer ones end with "…".
const MAX_TEXT: usize = 120;

/// Per row: (time, min, max).
pub type Band = Vec<(i64, Option<f64>, Option<f64>)>;

/// One line of a graph.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    pub label: String,
    /// (row time, value); `None` where the value is unknown: the line breaks.
    pub points: Vec<(i64, Option<f64>)>,
    /// Per row (min, max), drawn as a band under the line.
    pub band: Option<Band>,
}

/// Everything one picture shows.
#[derive(Debug, Clone, PartialEq)]
pub struct Graph {
    pub title: Option<String>,
    pub width: u32,
    pub height: u32,
    /// The time range shown: (from, to].
    pub from: i64,
    pub to: i64,
    /// Row width of the data, in seconds.
    pub step: i64,
    pub unit: Unit,
    pub lines: Vec<Line>,
    pub thresholds: Vec<Threshold>,
    /// Transitions of the alarms that judge what is drawn.
    pub marks: Vec<Mark>,
    /// Time zone of the axis labels, seconds east of UTC.
    pub utc_offset: i32,
}

#[derive(Debug, thiserror::Error)]
pub enum GraphError {
    #[error("drawing the graph failed: {0}")]
    Draw(String),
}

/// Below this the picture is a sparkline: the lines and nothing else.
pub fn is_sparkline(width: u32, height: u32) -> bool {
    width < 240 || height < 100
}

/// Renders a PNG.
pub fn render_png(g: &Graph) -> Result<Vec<u8>, GraphError> {
    init();
    let (w, h) = (g.width.max(1), g.height.max(1));
    let mut rgb = vec![0u8; w as usize * h as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (w, h)).into_drawing_area();
        draw(&root, g)?;
        root.present().map_err(err)?;
    }
    Ok(png::encode_rgb(&rgb, w, h))
}

/// Renders an SVG document. Every text is escaped by plotters; control
/// characters, which XML cannot carry even escaped, are dropped first.
pub fn render_svg(g: &Graph) -> Result<String, GraphError> {
    init();
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (g.width.max(1), g.height.max(1)))
            .into_drawing_area();
        draw(&root, g)?;
        root.present().map_err(err)?;
    }
    Ok(out)
}

fn err(e: impl std::fmt::Display) -> GraphError {
    GraphError::Draw(e.to_string())
}

/// Text safe to draw: no control characters, at most [`MAX_TEXT`] characters.
pub fn clean_text(s: &str) -> String {
    let mut out: String = s
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_TEXT)
        .collect();
    if s.chars().filter(|c| !c.is_control()).count() > MAX_TEXT {
        out.pop();
        out.push('…');
    }
    out
}

/// Grafana's classic palette, darkened a little to read on white.
const PALETTE: [RGBColor; 10] = [
    RGBColor(0x3d, 0x9a, 0x3a), // green
    RGBColor(0x1f, 0x6f, 0xd6), // blue
    RGBColor(0xe0, 0x7b, 0x00), // orange
    RGBColor(0x8e, 0x4f, 0xc2), // purple
    RGBColor(0x00, 0x9e, 0xa8), // teal
    RGBColor(0xc4, 0x9a, 0x00), // mustard
    RGBColor(0xd1, 0x4f, 0x8e), // pink
    RGBColor(0x6b, 0x72, 0x80), // grey
    RGBColor(0x7a, 0x5a, 0x2e), // brown
    RGBColor(0x5b, 0x8f, 0xf9), // light blue
];
const INK: RGBColor = RGBColor(0x37, 0x3d, 0x48);
const MUTED: RGBColor = RGBColor(0x6b, 0x72, 0x80);
const GRID: RGBColor = RGBColor(0xe7, 0xe9, 0xed);
const AXIS: RGBColor = RGBColor(0xb8, 0xbd, 0xc6);
const WARNING: RGBColor = RGBColor(0xe0, 0x9b, 0x00);
const CRITICAL: RGBColor = RGBColor(0xd6, 0x27, 0x28);
const RECOVERED: RGBColor = RGBColor(0x2e, 0x9e, 0x44);
// Scaling: out blue, in violet, heal orange (apart from the palette's first
// lines and from the alarm colours).
const SCALE_OUT: RGBColor = RGBColor(0x25, 0x63, 0xeb);
const SCALE_IN: RGBColor = RGBColor(0x7c, 0x3a, 0xed);
const HEAL: RGBColor = RGBColor(0xea, 0x58, 0x0c);

/// The colour of line `i`.
pub fn color(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

/// Summary of one line for the legend.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stats {
    pub cur: Option<f64>,
    pub min: Option<f64>,
    pub avg: Option<f64>,
    pub max: Option<f64>,
}

impl Line {
    fn known(&self) -> impl Iterator<Item = f64> + '_ {
        self.points
            .iter()
            .filter_map(|p| p.1)
            .filter(|v| v.is_finite())
    }

    /// Current (last known), min, average and max; min and max come from the
    /// band when there is one, so peaks hidden by averaging still show.
    pub fn stats(&self) -> Stats {
        let (mut n, mut sum) = (0usize, 0.0);
        let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
        for v in self.known() {
            n += 1;
            sum += v;
            lo = lo.min(v);
            hi = hi.max(v);
        }
        if let Some(b) = &self.band {
            for (_, mn, mx) in b {
                if let Some(v) = mn.filter(|v| v.is_finite()) {
                    lo = lo.min(v);
                }
                if let Some(v) = mx.filter(|v| v.is_finite()) {
                    hi = hi.max(v);
                }
            }
        }
        Stats {
            cur: self.known().last(),
            min: lo.is_finite().then_some(lo),
            avg: (n > 0).then(|| sum / n as f64),
            max: hi.is_finite().then_some(hi),
        }
    }
}

/// Runs of consecutive known values, as (time, value) lists: a gap (unknown
/// row) ends one run and the next known row starts another.
pub fn segments(points: &[(i64, Option<f64>)]) -> Vec<Vec<(i64, f64)>> {
    let mut out = Vec::new();
    let mut cur = Vec::new();
    for &(t, v) in points {
        match v.filter(|v| v.is_finite()) {
            Some(v) => cur.push((t, v)),
            None if !cur.is_empty() => out.push(std::mem::take(&mut cur)),
            None => {}
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

fn band_segments(band: &[(i64, Option<f64>, Option<f64>)]) -> Vec<Vec<(i64, f64, f64)>> {
    let mut out = Vec::new();
    let mut cur = Vec::new();
    for &(t, lo, hi) in band {
        match (lo.filter(|v| v.is_finite()), hi.filter(|v| v.is_finite())) {
            (Some(lo), Some(hi)) => cur.push((t, lo, hi)),
            _ if !cur.is_empty() => out.push(std::mem::take(&mut cur)),
            _ => {}
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

type Area<DB> = DrawingArea<DB, Shift>;

fn font(px: f32, color: &RGBColor) -> Style {
    Style::new(px, *color)
}

fn text_width<DB: DrawingBackend>(_root: &Area<DB>, s: &str, style: &Style) -> i32 {
    style.width(s)
}

fn put<DB: DrawingBackend>(
    root: &Area<DB>,
    s: &str,
    pos: (i32, i32),
    style: &Style,
    h: HPos,
    v: VPos,
) -> Result<(), GraphError> {
    root.draw(&Label {
        text: s,
        pos,
        style: style.at(h, v),
    })
    .map_err(err)
}

/// Pixel rectangle of the plot and the value range it maps.
struct Frame {
    x0: i32,
    x1: i32,
    y0: i32,
    y1: i32,
    from: i64,
    to: i64,
    lo: f64,
    hi: f64,
}

impl Frame {
    fn x(&self, t: i64) -> i32 {
        let span = (self.to - self.from).max(1) as f64;
        self.x0 + ((t - self.from) as f64 / span * f64::from(self.x1 - self.x0)).round() as i32
    }
    fn y(&self, v: f64) -> i32 {
        let span = if self.hi > self.lo {
            self.hi - self.lo
        } else {
            1.0
        };
        let f = ((v - self.lo) / span).clamp(-0.02, 1.02);
        self.y1 - (f * f64::from(self.y1 - self.y0)).round() as i32
    }
}

/// The value range the data (and nearby thresholds) need.
fn value_range(g: &Graph) -> Option<(f64, f64)> {
    let mut lo = f64::INFINITY;
    let mut hi = f64::NEG_INFINITY;
    for l in &g.lines {
        for v in l.known() {
            lo = lo.min(v);
            hi = hi.max(v);
        }
        for (_, a, b) in l.band.iter().flatten() {
            for v in [a, b].into_iter().flatten().filter(|v| v.is_finite()) {
                lo = lo.min(*v);
                hi = hi.max(*v);
            }
        }
    }
    if !lo.is_finite() {
        return None;
    }
    // Most metrics are counts, sizes or shares: keep zero on the axis.
    if lo > 0.0 {
        lo = 0.0;
    }
    // A threshold close above the data is worth showing; a far one would
    // flatten the lines. A scaling policy's lines are what its graph is
    // about: always in range.
    for t in &g.thresholds {
        if t.level.is_scaling() {
            lo = lo.min(t.value);
            hi = hi.max(t.value);
        } else if t.value > hi && t.value <= hi.max(f64::EPSILON) * 1.6 {
            hi = t.value;
        }
    }
    if g.unit == Unit::Percent && hi > 60.0 && hi <= 100.0 {
        hi = 100.0;
    }
    Some((lo, hi))
}

fn draw<DB: DrawingBackend>(root: &Area<DB>, g: &Graph) -> Result<(), GraphError> {
    root.fill(&WHITE).map_err(err)?;
    if is_sparkline(g.width, g.height) {
        return draw_sparkline(root, g);
    }
    let (w, h) = (g.width as i32, g.height as i32);
    let small = font(10.5, &MUTED);
    let legend_font = font(11.0, &INK);
    let line_h = 15;

    // Vertical layout: title, plot, time labels, legend.
    let title = g.title.as_deref().map(clean_text).filter(|t| !t.is_empty());
    let top = if title.is_some() { 24 } else { 10 };
    let budget = ((h as f64) * 0.42) as i32;
    let n = g.lines.len() as i32;
    let table = n > 0 && (n + 1) * line_h <= budget && n <= 8;
    let legend_rows = if g.lines.is_empty() {
        0
    } else if table {
        n + 1
    } else {
        (budget / line_h).clamp(1, 3)
    };
    let legend_h = legend_rows * line_h + if legend_rows > 0 { 6 } else { 0 };
    let y0 = top;
    let y1 = (h - 18 - legend_h).max(y0 + 20);

    let range = value_range(g);
    let (lo, hi) = range.unwrap_or((0.0, 1.0));
    let want = (((y1 - y0) / 32).max(2)) as usize;
    let ticks = g.unit.ticks(lo, hi, want);
    let label_w = ticks
        .labels
        .iter()
        .map(|l| text_width(root, l, &small))
        .max()
        .unwrap_or(20);
    let x0 = (label_w + 12).max(PLOT_LEFT);
    let x1 = w - PLOT_RIGHT;
    let f = Frame {
        x0,
        x1,
        y0,
        y1,
        from: g.from,
        to: g.to,
        lo: ticks.lo,
        hi: ticks.hi,
    };

    if let Some(t) = &title {
        let style = font(13.0, &INK);
        let t = fit(root, t, &style, w - 20);
        put(root, &t, (w / 2, 5), &style, HPos::Center, VPos::Top)?;
    }

    // Grid and axis labels.
    for (v, label) in ticks.values.iter().zip(&ticks.labels) {
        let y = f.y(*v);
        root.draw(&PathElement::new(vec![(x0, y), (x1, y)], GRID))
            .map_err(err)?;
        put(root, label, (x0 - 6, y), &small, HPos::Right, VPos::Center)?;
    }
    for tick in time::ticks(g.from, g.to, g.utc_offset, (x1 - x0).max(1) as u32) {
        let x = f.x(tick.t);
        root.draw(&PathElement::new(vec![(x, y0), (x, y1)], GRID))
            .map_err(err)?;
        put(
            root,
            &tick.label,
            (x, y1 + 4),
            &small,
            HPos::Center,
            VPos::Top,
        )?;
    }
    root.draw(&PathElement::new(vec![(x0, y0), (x0, y1), (x1, y1)], AXIS))
        .map_err(err)?;

    // Bands under lines, then thresholds, then lines on top.
    let show_bands = g.lines.len() <= 3;
    for (i, l) in g.lines.iter().enumerate() {
        if let (true, Some(b)) = (show_bands, &l.band) {
            draw_band(root, &f, b, g.step, color(i))?;
        }
    }
    for t in &g.thresholds {
        if t.value < f.lo || t.value > f.hi {
            continue;
        }
        let c = match t.level {
            Level::Warning => WARNING,
            Level::Critical => CRITICAL,
            Level::ScaleOut => SCALE_OUT,
            Level::ScaleIn => SCALE_IN,
        };
        let y = f.y(t.value);
        root.draw(&DashedPathElement::new(
            vec![(x0, y), (x1, y)],
            6,
            4,
            c.stroke_width(1),
        ))
        .map_err(err)?;
        let label = match t.level {
            Level::Warning => format!("warning {}", g.unit.format_short(t.value)),
            Level::Critical => format!("critical {}", g.unit.format_short(t.value)),
            Level::ScaleOut => format!("scale out above {}", g.unit.format_short(t.value)),
            Level::ScaleIn => format!("scale in below {}", g.unit.format_short(t.value)),
        };
        put(
            root,
            &label,
            (x1 - 3, y - 2),
            &font(9.5, &c),
            HPos::Right,
            VPos::Bottom,
        )?;
    }
    draw_marks(root, &f, &g.marks)?;
    for (i, l) in g.lines.iter().enumerate() {
        draw_line(root, &f, &l.points, g.step, color(i))?;
    }
    if range.is_none() {
        put(
            root,
            "no data in this range",
            ((x0 + x1) / 2, (y0 + y1) / 2),
            &font(12.0, &MUTED),
            HPos::Center,
            VPos::Center,
        )?;
    }

    // Legend.
    let ly = y1 + 27;
    if table {
        draw_legend_table(root, g, &legend_font, &small, x0, x1, ly, line_h)?;
    } else if legend_rows > 0 {
        draw_legend_flow(root, g, &legend_font, x0, x1, ly, line_h, legend_rows)?;
    }
    Ok(())
}

/// Marks: a dotted vertical line through the plot and a small shape at its
/// end. Alarm transitions: a triangle at the top in the colour of the state
/// the alarm went to (green for a recovery; soft states get the line only).
/// Scaling events: ▲ scale out, ▼ scale in, ◆ heal; filled at the top for
/// events that fired, outlined at the bottom for a dry-run's.
fn draw_marks<DB: DrawingBackend>(
    root: &Area<DB>,
    f: &Frame,
    marks: &[Mark],
) -> Result<(), GraphError> {
    use marks::{MarkKind, ScaleMark};
    use metrolog_protocol::nagios::CheckStatus;
    for m in marks {
        if m.at <= f.from || m.at > f.to {
            continue;
        }
        let x = f.x(m.at);
        let line = |c: RGBColor| {
            root.draw(&DashedPathElement::new(
                vec![(x, f.y0), (x, f.y1)],
                2,
                3,
                c.mix(0.8).stroke_width(1),
            ))
            .map_err(err)
        };
        match m.kind {
            MarkKind::Alarm { to, hard } => {
                let c = match to {
                    CheckStatus::Ok => RECOVERED,
                    CheckStatus::Warning => WARNING,
                    CheckStatus::Critical => CRITICAL,
                    CheckStatus::Unknown => MUTED,
                };
                line(c)?;
                if hard {
                    root.draw(&Polygon::new(
                        vec![(x - 4, f.y0), (x + 4, f.y0), (x, f.y0 + 6)],
                        c.filled(),
                    ))
                    .map_err(err)?;
                }
            }
            MarkKind::Scaling { event, dry_run } => {
                let c = match event {
                    ScaleMark::Out => SCALE_OUT,
                    ScaleMark::In => SCALE_IN,
                    ScaleMark::Heal => HEAL,
                };
                line(c)?;
                // The shape's top edge: inside the plot at its top, or at
                // its bottom for a dry-run.
                let y = if dry_run { f.y1 - 11 } else { f.y0 };
                let shape = match event {
                    ScaleMark::Out => vec![(x - 5, y + 9), (x + 5, y + 9), (x, y)],
                    ScaleMark::In => vec![(x - 5, y), (x + 5, y), (x, y + 9)],
                    ScaleMark::Heal => vec![(x, y), (x + 5, y + 5), (x, y + 10), (x - 5, y + 5)],
                };
                if dry_run {
                    let mut outline = shape.clone();
                    outline.push(shape[0]);
                    root.draw(&Polygon::new(shape, WHITE.filled()))
                        .map_err(err)?;
                    root.draw(&PathElement::new(outline, c.stroke_width(2)))
                        .map_err(err)?;
                } else {
                    root.draw(&Polygon::new(shape, c.filled())).map_err(err)?;
                }
            }
        }
    }
    Ok(())
}

/// `s`, shortened with "…" to fit `max` pixels.
fn fit<DB: DrawingBackend>(root: &Area<DB>, s: &str, style: &Style, max: i32) -> String {
    if text_width(root, s, style) <= max {
        return s.to_string();
    }
    let mut chars: Vec<char> = s.chars().collect();
    while !chars.is_empty() {
        chars.pop();
        let t: String = chars.iter().collect::<String>() + "…";
        if text_width(root, &t, style) <= max {
            return t;
        }
    }
    String::new()
}

fn swatch<DB: DrawingBackend>(
    root: &Area<DB>,
    x: i32,
    y: i32,
    c: RGBColor,
) -> Result<(), GraphError> {
    root.draw(&Rectangle::new([(x, y - 4), (x + 10, y + 5)], c.filled()))
        .map_err(err)
}

/// Munin's legend: one row per line with current, min, average and max.
#[allow(clippy::too_many_arguments)]
fn draw_legend_table<DB: DrawingBackend>(
    root: &Area<DB>,
    g: &Graph,
    style: &Style,
    head: &Style,
    x0: i32,
    x1: i32,
    y: i32,
    line_h: i32,
) -> Result<(), GraphError> {
    let stats: Vec<[String; 4]> = g
        .lines
        .iter()
        .map(|l| {
            let s = l.stats();
            [s.cur, s.min, s.avg, s.max].map(|v| v.map_or("–".into(), |v| g.unit.format(v)))
        })
        .collect();
    let all_heads = ["cur", "min", "avg", "max"];
    // Widths with a margin: the browser may draw an SVG's text in a wider
    // font than the one measured here.
    let all_w: Vec<i32> = (0..4)
        .map(|c| {
            let w = stats
                .iter()
                .map(|r| text_width(root, &r[c], style))
                .chain([text_width(root, all_heads[c], head)])
                .max()
                .unwrap_or(30);
            w + w / 6 + 14
        })
        .collect();
    let label_max = g
        .lines
        .iter()
        .map(|l| text_width(root, &clean_text(&l.label), style))
        .max()
        .unwrap_or(0);
    // A narrow graph drops columns (min, then avg, then max) rather than
    // overlapping them or cutting every label to a letter.
    let want_label = label_max.min(110);
    let columns: &[usize] = [&[0usize, 1, 2, 3][..], &[0, 2, 3], &[0, 3], &[0]]
        .into_iter()
        .find(|cols| {
            let w: i32 = cols.iter().map(|c| all_w[*c]).sum();
            x0 + 16 + want_label + 8 + w <= x1
        })
        .unwrap_or(&[0]);
    let heads: Vec<&str> = columns.iter().map(|c| all_heads[*c]).collect();
    let col_w: Vec<i32> = columns.iter().map(|c| all_w[*c]).collect();
    let stats: Vec<Vec<String>> = stats
        .into_iter()
        .map(|r| columns.iter().map(|c| r[*c].clone()).collect())
        .collect();
    let values_w: i32 = col_w.iter().sum();
    // Columns close to the labels on wide graphs, right-aligned when tight.
    let label_room = (x1 - x0 - values_w - 16).max(40);
    let cols_start = x0 + 16 + label_max.min(label_room) + 8;
    let mut right = Vec::new();
    let mut x = cols_start;
    for cw in &col_w {
        x += cw;
        right.push(x);
    }
    for (c, hd) in heads.iter().enumerate() {
        put(root, hd, (right[c], y), head, HPos::Right, VPos::Center)?;
    }
    for (i, (l, row)) in g.lines.iter().zip(&stats).enumerate() {
        let ry = y + (i as i32 + 1) * line_h;
        swatch(root, x0, ry, color(i))?;
        let label = fit(root, &clean_text(&l.label), style, label_room);
        put(root, &label, (x0 + 16, ry), style, HPos::Left, VPos::Center)?;
        for (c, v) in row.iter().enumerate() {
            put(root, v, (right[c], ry), style, HPos::Right, VPos::Center)?;
        }
    }
    Ok(())
}

/// Many lines: names only, left to right, as many rows as fit, then "+N more".
#[allow(clippy::too_many_arguments)]
fn draw_legend_flow<DB: DrawingBackend>(
    root: &Area<DB>,
    g: &Graph,
    style: &Style,
    x0: i32,
    x1: i32,
    y: i32,
    line_h: i32,
    rows: i32,
) -> Result<(), GraphError> {
    let (mut x, mut row) = (x0, 0);
    for (i, l) in g.lines.iter().enumerate() {
        let label = fit(root, &clean_text(&l.label), style, (x1 - x0) / 2);
        let wdt = 16 + text_width(root, &label, style) + 14;
        if x + wdt > x1 && x > x0 {
            row += 1;
            x = x0;
        }
        let last_row = row == rows - 1;
        let more = g.lines.len() - i;
        if row >= rows || (last_row && more > 1 && x + wdt + 70 > x1) {
            if row < rows {
                let m = format!("+{more} more");
                put(
                    root,
                    &m,
                    (x, y + row * line_h),
                    style,
                    HPos::Left,
                    VPos::Center,
                )?;
            }
            break;
        }
        let ry = y + row * line_h;
        swatch(root, x, ry, color(i))?;
        put(root, &label, (x + 16, ry), style, HPos::Left, VPos::Center)?;
        x += wdt;
    }
    Ok(())
}

fn draw_line<DB: DrawingBackend>(
    root: &Area<DB>,
    f: &Frame,
    points: &[(i64, Option<f64>)],
    step: i64,
    c: RGBColor,
) -> Result<(), GraphError> {
    for seg in segments(points) {
        let mut px: Vec<(i32, i32)> = seg.iter().map(|&(t, v)| (f.x(t), f.y(v))).collect();
        if px.len() == 1 {
            // A lone known row: show it over the time it covers.
            let (t, v) = seg[0];
            px.insert(0, (f.x(t - step).max(f.x0), f.y(v)));
        }
        px.dedup();
        root.draw(&PathElement::new(px, c.stroke_width(1)))
            .map_err(err)?;
    }
    Ok(())
}

fn draw_band<DB: DrawingBackend>(
    root: &Area<DB>,
    f: &Frame,
    band: &[(i64, Option<f64>, Option<f64>)],
    step: i64,
    c: RGBColor,
) -> Result<(), GraphError> {
    for seg in band_segments(band) {
        let mut poly: Vec<(i32, i32)> = Vec::with_capacity(seg.len() * 2 + 2);
        if seg.len() == 1 {
            let (t, lo, hi) = seg[0];
            poly.extend([(f.x(t - step), f.y(hi)), (f.x(t), f.y(hi))]);
            poly.extend([(f.x(t), f.y(lo)), (f.x(t - step), f.y(lo))]);
        } else {
            poly.extend(seg.iter().map(|&(t, _, hi)| (f.x(t), f.y(hi))));
            poly.extend(seg.iter().rev().map(|&(t, lo, _)| (f.x(t), f.y(lo))));
        }
        root.draw(&Polygon::new(poly, c.mix(0.16).filled()))
            .map_err(err)?;
    }
    Ok(())
}

/// Lines only, scaled to the data, with a light fill under the first one.
fn draw_sparkline<DB: DrawingBackend>(root: &Area<DB>, g: &Graph) -> Result<(), GraphError> {
    let Some((lo, hi)) = value_range(g) else {
        let mid = g.height as i32 / 2;
        root.draw(&PathElement::new(
            vec![(0, mid), (g.width as i32, mid)],
            GRID,
        ))
        .map_err(err)?;
        return Ok(());
    };
    let ticks = g.unit.ticks(lo, hi, 2);
    let f = Frame {
        x0: 1,
        x1: g.width as i32 - 2,
        y0: 2,
        y1: g.height as i32 - 2,
        from: g.from,
        to: g.to,
        lo: ticks.lo,
        hi: ticks.hi,
    };
    if let Some(first) = g.lines.first() {
        for seg in segments(&first.points) {
            if seg.len() < 2 {
                continue;
            }
            let mut poly: Vec<(i32, i32)> = seg.iter().map(|&(t, v)| (f.x(t), f.y(v))).collect();
            poly.push((f.x(seg[seg.len() - 1].0), f.y1));
            poly.push((f.x(seg[0].0), f.y1));
            root.draw(&Polygon::new(poly, color(0).mix(0.15).filled()))
                .map_err(err)?;
        }
    }
    for (i, l) in g.lines.iter().enumerate() {
        draw_line(root, &f, &l.points, g.step, color(i))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
