//! SVG plots of the figures the bench prints: cumulative distributions of grant
//! latency, ours against the Go sequence, on a log-scaled time axis (the two
//! differ by orders of magnitude).

use std::path::Path;

use plotters::prelude::*;

use crate::stats::Sample;

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
    let root = SVGBackend::new(path, (720, 420)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d((lo..hi).log_scale(), 0.0..1.0)?;
    chart
        .configure_mesh()
        .x_desc("grant latency, ms (log scale)")
        .y_desc("fraction of grants")
        .draw()?;
    for (i, (label, sample)) in series.iter().enumerate() {
        let mut v = values(sample);
        v.sort_by(f64::total_cmp);
        let n = v.len() as f64;
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(
                v.iter().enumerate().map(|(k, &x)| (x, (k + 1) as f64 / n)),
                color.stroke_width(2),
            ))?
            .label(format!("{label} (n = {})", v.len()))
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}
