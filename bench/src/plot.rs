//! SVG plots of the figures the bench prints: cumulative distributions of grant
//! latency, ours against the Go sequence, on a log-scaled time axis (the two
//! differ by orders of magnitude). Every decade's 1, 2 and 5 are labelled
//! (below 1 ms too), the other integers get light grid lines, and the legend
//! sits under the chart, off the curves.

use std::path::Path;

use plotters::prelude::*;

use crate::stats::Sample;

const WIDTH: u32 = 960;
const CHART_HEIGHT: u32 = 440;
/// One legend row's height, under the chart.
const LEGEND_ROW: u32 = 26;

/// Writes `path`: one CDF line per (label, sample), time in ms on a log axis.
pub fn cdf(path: &Path, title: &str, series: &[(&str, &Sample)]) -> anyhow::Result<()> {
    let values = |s: &Sample| -> Vec<f64> {
        s.values()
            .iter()
            .map(|d| (d.as_secs_f64() * 1000.0).max(0.001))
            .collect()
    };
    let all: Vec<f64> = series.iter().flat_map(|(_, s)| values(s)).collect();
    anyhow::ensure!(!all.is_empty(), "nothing to plot for {title}");
    let lo = all.iter().copied().fold(f64::INFINITY, f64::min) * 0.8;
    let hi = all.iter().copied().fold(0.0, f64::max) * 1.25;
    let (bold, light) = ticks(lo, hi);
    let rows = series.len().div_ceil(2) as u32;
    let root =
        SVGBackend::new(path, (WIDTH, CHART_HEIGHT + 12 + rows * LEGEND_ROW)).into_drawing_area();
    root.fill(&WHITE)?;
    let (upper, lower) = root.split_vertically(CHART_HEIGHT);
    let mut chart = ChartBuilder::on(&upper)
        .caption(title, ("sans-serif", 20))
        .margin(14)
        .x_label_area_size(44)
        .y_label_area_size(56)
        .build_cartesian_2d(
            (lo..hi)
                .log_scale()
                .with_key_points(bold)
                .with_light_points(light),
            0.0..1.0,
        )?;
    chart
        .configure_mesh()
        .x_desc("grant latency, ms (log scale)")
        .y_desc("fraction of grants")
        .x_label_formatter(&|v| label(*v))
        .x_label_style(("sans-serif", 13))
        .y_label_style(("sans-serif", 13))
        .y_labels(6)
        .light_line_style(RGBColor(235, 235, 235))
        .bold_line_style(RGBColor(200, 200, 200))
        .draw()?;
    let mut legend = Vec::new();
    for (i, (name, sample)) in series.iter().enumerate() {
        let mut v = values(sample);
        v.sort_by(f64::total_cmp);
        let n = v.len() as f64;
        let color = Palette99::pick(i).to_rgba();
        chart.draw_series(LineSeries::new(
            v.iter().enumerate().map(|(k, &x)| (x, (k + 1) as f64 / n)),
            color.stroke_width(2),
        ))?;
        legend.push((format!("{name} (n = {})", v.len()), color));
    }
    // The legend: two columns of line swatches and names under the chart.
    for (i, (text, color)) in legend.into_iter().enumerate() {
        let x = 70 + (i as i32 % 2) * (WIDTH as i32 / 2 - 30);
        let y = 6 + (i as i32 / 2) * LEGEND_ROW as i32 + LEGEND_ROW as i32 / 2;
        lower.draw(&PathElement::new(
            vec![(x, y), (x + 28, y)],
            color.stroke_width(3),
        ))?;
        lower.draw(&Text::new(
            text,
            (x + 36, y - 8),
            ("sans-serif", 15).into_font(),
        ))?;
    }
    root.present()?;
    Ok(())
}

/// The 1-2-5 values of every decade between `lo` and `hi` (labelled), and
/// the other integer multiples (grid lines only).
fn ticks(lo: f64, hi: f64) -> (Vec<f64>, Vec<f64>) {
    let (mut bold, mut light) = (Vec::new(), Vec::new());
    let mut decade = 10f64.powf(lo.log10().floor());
    while decade <= hi {
        for m in 1..10 {
            let v = decade * f64::from(m);
            if v < lo || v > hi {
                continue;
            }
            if matches!(m, 1 | 2 | 5) {
                bold.push(v);
            } else {
                light.push(v);
            }
        }
        decade *= 10.0;
    }
    (bold, light)
}

/// A short tick label: `0.2`, `5`, `50`, `500`, then seconds (`1 s`, `20 s`).
fn label(ms: f64) -> String {
    let trim = |v: f64| {
        let text = format!("{v:.3}");
        text.trim_end_matches('0').trim_end_matches('.').to_owned()
    };
    if ms >= 1000.0 {
        format!("{} s", trim(ms / 1000.0))
    } else {
        trim(ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_decade_gets_its_1_2_5_labels() {
        let (bold, light) = ticks(0.15, 60.0);
        let labels: Vec<String> = bold.iter().map(|v| label(*v)).collect();
        assert_eq!(labels, ["0.2", "0.5", "1", "2", "5", "10", "20", "50"]);
        assert!(light.iter().any(|v| (v - 0.3).abs() < 1e-9));
        assert_eq!(label(2000.0), "2 s");
        assert_eq!(label(0.001), "0.001");
    }
}
