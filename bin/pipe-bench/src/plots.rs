//! Line charts for the congestion benchmark (latency, throughput and gas against offered load),
//! written as standalone SVG files by the `plotters` crate.
//!
//! Charts come straight out of the Rust binary, so reproducing a benchmark's figures needs no
//! Python, matplotlib or system font libraries: the SVG backend emits `<text>` elements and the
//! viewer picks the font.

use std::ops::Range;
use std::path::Path;

use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::prelude::*;

/// Chart size in pixels.
const SIZE: (u32, u32) = (800, 500);

/// Palette99 entries that stay readable on white (it also holds yellow, pink, beige, ...).
const COLOURS: [usize; 12] = [3, 0, 1, 4, 5, 10, 7, 12, 14, 18, 19, 20];

/// One line of a chart.
pub struct Series {
    pub label: String,
    pub points: Vec<(f64, f64)>,
}

/// What [`line_chart`] draws.
pub struct Chart<'a> {
    pub title: &'a str,
    pub x_label: &'a str,
    pub y_label: &'a str,
    pub log_x: bool,
    pub series: &'a [Series],
}

/// Writes `chart` as an SVG file at `path` (800x500), each series a coloured line with small
/// point markers and a legend entry; axis ranges from the data (with a little margin; a y range
/// starting at 0 when all y >= 0); log_x uses a logarithmic x axis (only positive x are drawn).
/// Empty series or no points: still writes a valid SVG with the title and axes.
pub fn line_chart(path: &Path, chart: &Chart<'_>) -> anyhow::Result<()> {
    // Only points that can be placed on the axes: finite, and x > 0 on a log axis.
    let series: Vec<(&str, Vec<(f64, f64)>)> = chart
        .series
        .iter()
        .map(|s| {
            let points = s
                .points
                .iter()
                .copied()
                .filter(|&(x, y)| x.is_finite() && y.is_finite() && (!chart.log_x || x > 0.0))
                .collect();
            (s.label.as_str(), points)
        })
        .collect();
    let xs = || series.iter().flat_map(|(_, p)| p.iter().map(|&(x, _)| x));
    let ys = || series.iter().flat_map(|(_, p)| p.iter().map(|&(_, y)| y));
    let y_span = y_range(ys());

    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    if chart.log_x {
        draw(&root, chart, &series, log_x_range(xs()).log_scale(), y_span)?;
    } else {
        draw(&root, chart, &series, linear_x_range(xs()), y_span)?;
    }
    // The SVG backend only writes the file here (or, silently, on drop): surface I/O errors.
    root.present()
        .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))
}

/// The drawing itself, generic over the x axis kind (linear `Range<f64>` or log-scaled range),
/// which plotters models as different coordinate types.
fn draw<X>(
    root: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    chart: &Chart<'_>,
    series: &[(&str, Vec<(f64, f64)>)],
    x_spec: X,
    y_range: Range<f64>,
) -> anyhow::Result<()>
where
    X: AsRangedCoord<Value = f64>,
    X::CoordDescType: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    let mut ctx = ChartBuilder::on(root)
        .caption(chart.title, ("sans-serif", 26).into_font())
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(x_spec, y_range)
        .map_err(plot_err)?;

    let fmt = tick_label;
    ctx.configure_mesh()
        .x_desc(chart.x_label)
        .y_desc(chart.y_label)
        // plotters' defaults (12) come out at under 10px in SVG.
        .axis_desc_style(("sans-serif", 17).into_font())
        .label_style(("sans-serif", 14).into_font())
        .x_label_formatter(&fmt)
        .y_label_formatter(&fmt)
        .draw()
        .map_err(plot_err)?;

    for (i, (label, points)) in series.iter().enumerate() {
        // As RGBA: `PaletteColor` is not `Copy`, and the legend closure needs its own copy.
        let colour = Palette99::pick(COLOURS[i % COLOURS.len()]).to_rgba();
        ctx.draw_series(LineSeries::new(
            points.iter().copied(),
            colour.stroke_width(2),
        ))
        .map_err(plot_err)?
        .label(*label)
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2)));
        ctx.draw_series(points.iter().map(|&p| Circle::new(p, 3, colour.filled())))
            .map_err(plot_err)?;
    }

    // A legend box with no entries would be an empty rectangle.
    if !series.is_empty() {
        ctx.configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(("sans-serif", 16).into_font())
            .draw()
            .map_err(plot_err)?;
    }
    Ok(())
}

/// plotters' error types are generic over the backend and not always `Send + Sync`; keep the
/// message only.
fn plot_err(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("drawing chart: {e}")
}

/// Min and max of `values`, or `None` when empty.
fn bounds(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    values.fold(None, |acc, v| match acc {
        None => Some((v, v)),
        Some((lo, hi)) => Some((lo.min(v), hi.max(v))),
    })
}

/// Data range plus 5% each side; a single value gets a unit-ish window around it.
fn linear_x_range(xs: impl Iterator<Item = f64>) -> Range<f64> {
    match bounds(xs) {
        None => 0.0..1.0,
        Some((lo, hi)) if hi > lo => {
            let pad = (hi - lo) * 0.05;
            lo - pad..hi + pad
        }
        Some((v, _)) => {
            let pad = if v == 0.0 { 1.0 } else { v.abs() * 0.1 };
            v - pad..v + pad
        }
    }
}

/// Positive data range widened by 5% of its span in log space (factor 2 for a single value).
/// plotters labels a log axis from its first power of ten on, so a range without room for two
/// labels after one (such as 200..800, or 3..12) is extended down to the power of ten below it.
fn log_x_range(xs: impl Iterator<Item = f64>) -> Range<f64> {
    let (lo, hi) = match bounds(xs) {
        None => return 1.0..10.0,
        Some((lo, hi)) if hi > lo => {
            let factor = (hi / lo).powf(0.05);
            (lo / factor, hi * factor)
        }
        Some((v, _)) => (v / 2.0, v * 2.0),
    };
    let exponent = lo.log10();
    if 2.0 * 10f64.powi(exponent.ceil() as i32) <= hi {
        return lo..hi;
    }
    // Slightly below the power of ten, so rounding in plotters cannot skip its label.
    10f64.powi(exponent.floor() as i32) * 0.99..hi
}

/// From 0 when nothing is negative (latencies, rates, gas), else the data range; 5% headroom.
fn y_range(ys: impl Iterator<Item = f64>) -> Range<f64> {
    match bounds(ys) {
        None => 0.0..1.0,
        Some((lo, hi)) if lo >= 0.0 => {
            if hi > 0.0 {
                0.0..hi * 1.05
            } else {
                0.0..1.0
            }
        }
        Some((lo, hi)) if hi > lo => {
            let pad = (hi - lo) * 0.05;
            lo - pad..hi + pad
        }
        Some((v, _)) => v - v.abs() * 0.1..v + v.abs() * 0.1,
    }
}

/// Tick labels with at most 4 significant digits, so log-axis ticks such as
/// 1000.0000000000001 print as "1000"; very large or small magnitudes use exponent notation.
fn tick_label(v: &f64) -> String {
    let v = *v;
    if v == 0.0 {
        return "0".into(); // also for -0.0
    }
    if !v.is_finite() {
        return format!("{v}");
    }
    let magnitude = v.abs();
    if !(1e-3..1e6).contains(&magnitude) {
        return format!("{v:.2e}");
    }
    let decimals = 3 - magnitude.log10().floor() as i32;
    let rounded = if decimals >= 0 {
        let scale = 10f64.powi(decimals);
        (v * scale).round() / scale
    } else {
        let scale = 10f64.powi(-decimals);
        (v / scale).round() * scale
    };
    format!("{rounded}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series() -> Vec<Series> {
        vec![
            Series {
                label: "pipe (one transaction)".into(),
                points: vec![(1.0, 12.0), (10.0, 13.5), (100.0, 15.0), (1000.0, 40.0)],
            },
            Series {
                label: "oracle (two transactions)".into(),
                // Non-finite and (on a log axis) non-positive points are skipped, not fatal.
                points: vec![
                    (0.0, 20.0),
                    (1.0, 24.0),
                    (10.0, f64::NAN),
                    (100.0, 30.0),
                    (f64::INFINITY, 1.0),
                    (1000.0, 95.0),
                ],
            },
        ]
    }

    fn read_svg(path: &Path) -> String {
        let svg = std::fs::read_to_string(path).unwrap();
        assert!(
            svg.starts_with("<svg"),
            "not an SVG: {}",
            &svg[..svg.len().min(80)]
        );
        assert!(svg.trim_end().ends_with("</svg>"));
        svg
    }

    #[test]
    fn charts_are_svg_with_title_axis_labels_and_legend() {
        let dir = tempfile::tempdir().unwrap();
        let series = series();
        for log_x in [false, true] {
            let path = dir.path().join(format!("latency-log{log_x}.svg"));
            let title = format!("Latency under load (log x: {log_x})");
            line_chart(
                &path,
                &Chart {
                    title: &title,
                    x_label: "offered load (tx/s)",
                    y_label: "latency (ms)",
                    log_x,
                    series: &series,
                },
            )
            .unwrap();
            let svg = read_svg(&path);
            for text in [
                title.as_str(),
                "offered load (tx/s)",
                "latency (ms)",
                "pipe (one transaction)",
                "oracle (two transactions)",
            ] {
                assert!(
                    svg.contains(text),
                    "{text:?} missing from {}",
                    path.display()
                );
            }
        }
    }

    #[test]
    fn empty_charts_still_have_title_and_axes() {
        let dir = tempfile::tempdir().unwrap();
        let empty = [Series {
            label: "nothing yet".into(),
            points: vec![],
        }];
        for (name, series) in [("none", &[][..]), ("empty", &empty[..])] {
            for log_x in [false, true] {
                let path = dir.path().join(format!("{name}-{log_x}.svg"));
                line_chart(
                    &path,
                    &Chart {
                        title: "No data",
                        x_label: "x",
                        y_label: "y",
                        log_x,
                        series,
                    },
                )
                .unwrap();
                assert!(read_svg(&path).contains("No data"));
            }
        }
    }

    #[test]
    fn tick_labels_are_short() {
        assert_eq!(tick_label(&1000.0000000000001), "1000");
        assert_eq!(tick_label(&0.30000000000000004), "0.3");
        assert_eq!(tick_label(&12345.0), "12350");
        assert_eq!(tick_label(&0.0), "0");
        assert_eq!(tick_label(&-2.5), "-2.5");
        assert_eq!(tick_label(&2.0e7), "2.00e7");
    }
}
