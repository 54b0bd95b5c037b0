//! SVG charts with plotters (SVG backend only): latency CDF, load share, load over time.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::report::quantile;
use crate::scenario::Scenario;
use crate::sim::Run;

type Result<T = ()> = std::result::Result<T, String>;

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// Colours that stay distinct for the usual forms of colour blindness (Okabe and Ito), then a
/// few more; a strategy keeps its colour in every chart.
const PALETTE: [RGBColor; 12] = [
    RGBColor(0, 0, 0),
    RGBColor(230, 159, 0),
    RGBColor(86, 180, 233),
    RGBColor(0, 158, 115),
    RGBColor(213, 94, 0),
    RGBColor(0, 114, 178),
    RGBColor(204, 121, 167),
    RGBColor(240, 228, 66),
    RGBColor(120, 120, 120),
    RGBColor(140, 86, 75),
    RGBColor(148, 103, 189),
    RGBColor(23, 190, 207),
];

fn color(strategy: &str) -> RGBColor {
    let i = crate::strategies::all()
        .iter()
        .position(|e| e.name == strategy)
        .unwrap_or(0);
    PALETTE[i % PALETTE.len()]
}

/// The weight-share mark: a red no strategy uses.
const WEIGHT_MARK: RGBColor = RGBColor(220, 20, 60);

const SIZE: (u32, u32) = (1100, 600);
/// Width of the legend column on the right, outside the plot so it never hides data.
const LEGEND_WIDTH: u32 = 230;

/// How a legend entry is drawn.
#[derive(Clone, Copy)]
enum Mark {
    Line,
    Bar,
}

/// A white canvas split into the plot (left) and the legend column (right).
fn canvas(path: &Path) -> Result<(Area<'_>, Area<'_>, Area<'_>)> {
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let (plot, legend) = root.split_horizontally(SIZE.0 - LEGEND_WIDTH);
    Ok((root, plot, legend))
}

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;

/// Draws `entries` top-down in the legend column.
fn legend(area: &Area<'_>, entries: &[(String, RGBColor, Mark)]) -> Result {
    for (i, (name, col, mark)) in entries.iter().enumerate() {
        let y = 60 + 22 * i as i32;
        match mark {
            Mark::Line => area
                .draw(&PathElement::new(
                    vec![(4, y), (28, y)],
                    col.stroke_width(3),
                ))
                .map_err(err)?,
            Mark::Bar => area
                .draw(&Rectangle::new([(8, y - 6), (24, y + 6)], col.filled()))
                .map_err(err)?,
        }
        area.draw(&Text::new(
            name.clone(),
            (36, y),
            TextStyle::from((FONT, 14)).pos(Pos::new(HPos::Left, VPos::Center)),
        ))
        .map_err(err)?;
    }
    Ok(())
}

fn strategy_entries(runs: &[Run], mark: Mark) -> Vec<(String, RGBColor, Mark)> {
    runs.iter()
        .map(|r| (r.strategy.clone(), color(&r.strategy), mark))
        .collect()
}
const FONT: &str = "sans-serif";

/// The "nines" of a quantile: 1 → 90 %, 2 → 99 %, 3 → 99.9 %.
fn nines_label(v: f64) -> String {
    let p = 100.0 * (1.0 - 10f64.powf(-v));
    if v <= 0.0 {
        "0".into()
    } else if (p - p.round()).abs() < 1e-9 {
        format!("{p:.0}")
    } else {
        let s = format!("{p:.4}");
        s.trim_end_matches('0').to_owned()
    }
}

/// Latency CDF per strategy, with the tail stretched: the y axis is in "nines", so p50, p90,
/// p99 and p99.9 are equally spaced and a bad tail is visible instead of squashed into the top.
pub fn latency_cdf(path: &Path, sc: &Scenario, runs: &[Run]) -> Result {
    let (root, plot, side) = canvas(path)?;
    let max_nines = 4.0f64;
    let steps = 400;
    let curve = |r: &Run| -> Vec<(f64, f64)> {
        (0..=steps)
            .map(|i| {
                let v = max_nines * i as f64 / steps as f64;
                let p = 1.0 - 10f64.powf(-v);
                ((quantile(&r.latencies, p) as f64 / 1e6).max(1e-3), v)
            })
            .collect()
    };
    let curves: Vec<Vec<(f64, f64)>> = runs.iter().map(curve).collect();
    let lo = curves
        .iter()
        .filter_map(|c| c.first())
        .map(|p| p.0)
        .fold(f64::INFINITY, f64::min);
    let hi = curves
        .iter()
        .filter_map(|c| c.last())
        .map(|p| p.0)
        .fold(0.0, f64::max);
    let (lo, hi) = if lo.is_finite() && hi > lo {
        (lo / 1.2, hi * 1.2)
    } else {
        (0.1, 1000.0)
    };
    let mut chart = ChartBuilder::on(&plot)
        .caption(
            format!("{}: latency CDF (successful requests)", sc.name),
            (FONT, 22),
        )
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(64)
        .build_cartesian_2d((lo..hi).log_scale(), 0f64..max_nines)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("latency (ms, log scale)")
        .y_desc("percentile")
        .y_labels(5)
        .y_label_formatter(&|v| nines_label(*v))
        .x_label_formatter(&|v| format!("{v}"))
        .draw()
        .map_err(err)?;
    for (r, c) in runs.iter().zip(curves) {
        let col = color(&r.strategy);
        chart
            .draw_series(LineSeries::new(c, col.stroke_width(2)))
            .map_err(err)?;
    }
    legend(&side, &strategy_entries(runs, Mark::Line))?;
    root.present().map_err(err)
}

/// Load share per backend, one bar per strategy, with each backend's weight share marked.
pub fn load_share(path: &Path, sc: &Scenario, runs: &[Run]) -> Result {
    let (root, plot, side) = canvas(path)?;
    let names: Vec<String> = sc.expanded().into_iter().map(|e| e.name).collect();
    let n = names.len();
    let total: f64 = runs
        .first()
        .map_or(1.0, |r| r.weights.iter().map(|&w| f64::from(w)).sum());
    let shares: Vec<Vec<f64>> = runs
        .iter()
        .map(|r| {
            let picked = r.picks.iter().sum::<u64>().max(1) as f64;
            r.picks.iter().map(|&p| 100.0 * p as f64 / picked).collect()
        })
        .collect();
    let by_weight: Vec<f64> = runs.first().map_or(Vec::new(), |r| {
        r.weights
            .iter()
            .map(|&w| 100.0 * f64::from(w) / total)
            .collect()
    });
    let top = shares
        .iter()
        .flatten()
        .chain(&by_weight)
        .copied()
        .fold(0.0, f64::max)
        .max(1.0)
        * 1.1;
    let mut chart = ChartBuilder::on(&plot)
        .caption(format!("{}: load share per backend", sc.name), (FONT, 22))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(64)
        .build_cartesian_2d(-0.5f64..(n as f64 - 0.5), 0f64..top)
        .map_err(err)?;
    let labels = names.clone();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n + 1)
        .x_label_formatter(&move |v| {
            let i = v.round();
            if (v - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < labels.len() {
                labels[i as usize].clone()
            } else {
                String::new()
            }
        })
        .y_desc("share of requests (%)")
        .draw()
        .map_err(err)?;
    let k = runs.len().max(1) as f64;
    let width = 0.8 / k;
    for (j, (r, sh)) in runs.iter().zip(&shares).enumerate() {
        let col = color(&r.strategy);
        chart
            .draw_series(sh.iter().enumerate().map(|(i, &s)| {
                let x0 = i as f64 - 0.4 + j as f64 * width;
                Rectangle::new([(x0, 0.0), (x0 + width * 0.9, s)], col.filled())
            }))
            .map_err(err)?;
    }
    if !by_weight.is_empty() {
        chart
            .draw_series(by_weight.iter().enumerate().map(|(i, &y)| {
                PathElement::new(
                    vec![(i as f64 - 0.45, y), (i as f64 + 0.45, y)],
                    WEIGHT_MARK.stroke_width(3),
                )
            }))
            .map_err(err)?;
    }
    let mut entries = strategy_entries(runs, Mark::Bar);
    entries.push(("share by weight".into(), WEIGHT_MARK, Mark::Line));
    legend(&side, &entries)?;
    root.present().map_err(err)
}

/// The watched backend's share of requests over time (top) and the error rate (bottom), one
/// line per strategy; failure windows are shaded.
pub fn load_over_time(path: &Path, sc: &Scenario, runs: &[Run], watched: &str) -> Result {
    let (root, plot, side) = canvas(path)?;
    let Some(first) = runs.first() else {
        return root.present().map_err(err);
    };
    let wi = first
        .backends
        .iter()
        .position(|b| b == watched)
        .ok_or_else(|| format!("no backend `{watched}`"))?;
    let n = first.backends.len();
    let secs = |b: usize| (b as f64 + 0.5) * first.timeline.bucket as f64 / 1e9;
    let span = first.timeline.len as f64 * first.timeline.bucket as f64 / 1e9;
    let series = |r: &Run, f: &dyn Fn(&Run, usize) -> Option<f64>| -> Vec<(f64, f64)> {
        (0..r.timeline.len)
            .filter_map(|b| f(r, b).map(|v| (secs(b), v)))
            .collect()
    };
    let share = |r: &Run, b: usize| {
        let req = r.timeline.requests[b];
        (req > 0).then(|| 100.0 * f64::from(r.timeline.picks[b * n + wi]) / f64::from(req))
    };
    let errors = |r: &Run, b: usize| {
        let req = r.timeline.requests[b];
        (req > 0).then(|| 100.0 * f64::from(r.timeline.errors[b]) / f64::from(req))
    };
    let shares: Vec<Vec<(f64, f64)>> = runs.iter().map(|r| series(r, &share)).collect();
    let errs: Vec<Vec<(f64, f64)>> = runs.iter().map(|r| series(r, &errors)).collect();
    let max_of = |v: &[Vec<(f64, f64)>]| v.iter().flatten().map(|p| p.1).fold(0.0, f64::max);
    let windows: Vec<(f64, f64)> = sc
        .expanded()
        .iter()
        .filter(|e| e.name == watched)
        .flat_map(|e| {
            e.spec
                .failures
                .iter()
                .map(|f| (f.from * span, f.until * span))
        })
        .collect();

    // The error panel only when there is something to show.
    let any_errors = max_of(&errs) > 0.0;
    let (upper, lower) = if any_errors {
        let (u, l) = plot.split_vertically(SIZE.1 * 62 / 100);
        (u, Some(l))
    } else {
        (plot.clone(), None)
    };
    let top = (max_of(&shares) * 1.15).max(1.0);
    let title = format!(
        "{}: share of requests sent to `{watched}` over time",
        sc.name
    );
    let mut chart = panel(&upper, &title, span, top, "share (%)", !any_errors)?;
    shade(&mut chart, &windows, top)?;
    for (r, s) in runs.iter().zip(shares) {
        let col = color(&r.strategy);
        chart
            .draw_series(LineSeries::new(s, col.stroke_width(2)))
            .map_err(err)?;
    }
    legend(&side, &strategy_entries(runs, Mark::Line))?;

    let Some(lower) = lower else {
        return root.present().map_err(err);
    };
    let top = max_of(&errs) * 1.15;
    let mut chart = panel(
        &lower,
        "errors (failed or unroutable requests)",
        span,
        top,
        "errors (%)",
        true,
    )?;
    shade(&mut chart, &windows, top)?;
    for (r, s) in runs.iter().zip(errs) {
        let col = color(&r.strategy);
        chart
            .draw_series(LineSeries::new(s, col.stroke_width(2)))
            .map_err(err)?;
    }
    root.present().map_err(err)
}

type Panel<'a> = ChartContext<
    'a,
    SVGBackend<'a>,
    Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
>;

fn panel<'a>(
    area: &DrawingArea<SVGBackend<'a>, Shift>,
    title: &str,
    span: f64,
    top: f64,
    y_desc: &str,
    x_desc: bool,
) -> Result<Panel<'a>> {
    let mut chart = ChartBuilder::on(area)
        .caption(title, (FONT, 18))
        .margin(12)
        .x_label_area_size(if x_desc { 44 } else { 28 })
        .y_label_area_size(64)
        .build_cartesian_2d(0f64..span, 0f64..top)
        .map_err(err)?;
    let mut mesh = chart.configure_mesh();
    mesh.y_desc(y_desc);
    if x_desc {
        mesh.x_desc("simulated time (s)");
    }
    mesh.draw().map_err(err)?;
    Ok(chart)
}

fn shade(chart: &mut Panel<'_>, windows: &[(f64, f64)], top: f64) -> Result {
    chart
        .draw_series(windows.iter().map(|&(a, b)| {
            Rectangle::new([(a, 0.0), (b, top)], RGBColor(255, 0, 0).mix(0.08).filled())
        }))
        .map_err(err)?;
    Ok(())
}
