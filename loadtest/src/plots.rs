//! SVG plots via plotters: the publish→receive latency CDF and deliveries per second over the
//! measured phase, one series per target.

use std::path::Path;

use plotters::prelude::*;

use crate::error::{Context, Error, Result};
use crate::report::RunResult;

const COLORS: [RGBColor; 4] = [BLUE, RED, GREEN, MAGENTA];

fn plot_err(e: impl std::fmt::Display) -> Error {
    Error::Plot(e.to_string())
}

/// Writes `<scenario>-latency-cdf.svg` and `<scenario>-deliveries.svg` into `dir` (when the
/// scenario has deliveries).
pub fn write_all(dir: &Path, result: &RunResult) -> Result<()> {
    std::fs::create_dir_all(dir).context(format!("creating {}", dir.display()))?;
    let name = format!("{:?}", result.scenario).to_lowercase();
    if result.runs.iter().all(|r| r.latency_cdf.is_empty()) {
        return Ok(());
    }
    latency_cdf(&dir.join(format!("{name}-latency-cdf.svg")), result)?;
    deliveries(&dir.join(format!("{name}-deliveries.svg")), result)
}

fn latency_cdf(path: &Path, result: &RunResult) -> Result<()> {
    let max_ms = result
        .runs
        .iter()
        .filter_map(|r| r.latency.map(|p| p.p999_us as f64 / 1000.0))
        .fold(0.1_f64, f64::max)
        * 1.1;
    let root = SVGBackend::new(path, (900, 540)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption("publish → receive latency (CDF, up to p99.9)", ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(0.0..max_ms, 0.0..100.0)
        .map_err(plot_err)?;
    chart
        .configure_mesh()
        .x_desc("latency (ms)")
        .y_desc("percent of deliveries")
        .draw()
        .map_err(plot_err)?;
    for (i, run) in result.runs.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let points = run.latency_cdf.iter().map(|(q, us)| (*us as f64 / 1000.0, q * 100.0));
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))
            .map_err(plot_err)?
            .label(run.target.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    chart.configure_series_labels().border_style(BLACK).draw().map_err(plot_err)?;
    root.present().map_err(plot_err)
}

fn deliveries(path: &Path, result: &RunResult) -> Result<()> {
    let max_x =
        result.runs.iter().flat_map(|r| r.per_second.iter().map(|p| p.0)).max().unwrap_or(1).max(1);
    let max_y =
        result.runs.iter().flat_map(|r| r.per_second.iter().map(|p| p.1)).max().unwrap_or(1).max(1);
    let root = SVGBackend::new(path, (900, 540)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption("deliveries per second", ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0u64..max_x + 1, 0u64..max_y + max_y / 10 + 1)
        .map_err(plot_err)?;
    chart
        .configure_mesh()
        .x_desc("second of the measured phase")
        .y_desc("deliveries/s")
        .draw()
        .map_err(plot_err)?;
    for (i, run) in result.runs.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        chart
            .draw_series(LineSeries::new(run.per_second.iter().copied(), color.stroke_width(2)))
            .map_err(plot_err)?
            .label(run.target.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    chart.configure_series_labels().border_style(BLACK).draw().map_err(plot_err)?;
    root.present().map_err(plot_err)
}
