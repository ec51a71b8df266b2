//! The network lab's charts (`ghost bench lab`): delay against loss, a line per carrier, at
//! one round-trip time, as SVG text.

use plotters::prelude::*;

/// Why a chart could not be drawn.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// plotters failed at one step of the drawing.
    #[error("{step}")]
    Draw {
        /// The step, as "drawing the legend".
        step: &'static str,
        /// plotters' error.
        #[source]
        source: DrawingAreaErrorKind<std::io::Error>,
    },
}

/// A closure making an [`Error::Draw`] at `step`, for `map_err`.
fn at(step: &'static str) -> impl FnOnce(DrawingAreaErrorKind<std::io::Error>) -> Error {
    move |source| Error::Draw { step, source }
}

/// One carrier's line: (loss in percent, delay in milliseconds) points, in loss order.
#[derive(Debug, Clone)]
pub struct Line {
    /// The carrier's name, for the legend.
    pub carrier: String,
    /// (loss %, p50 ms, p99 ms) of each measured loss.
    pub points: Vec<(f64, f64, f64)>,
}

/// Colours of the lines, one per carrier, kept apart for readers with red-green blindness.
const COLOURS: [RGBColor; 4] = [
    RGBColor(0, 114, 178),
    RGBColor(230, 159, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
];

/// An SVG of two panels, p99 delay above and p50 below, against loss, a line per carrier,
/// titled with `rtt_ms`.
pub fn delay_against_loss(rtt_ms: u64, lines: &[Line]) -> Result<String, Error> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (800, 900)).into_drawing_area();
        root.fill(&WHITE).map_err(at("drawing the chart"))?;
        let (upper, lower) = root.split_vertically(450);
        let max_loss = lines
            .iter()
            .flat_map(|l| &l.points)
            .map(|p| p.0)
            .fold(0.0f64, f64::max)
            .max(1.0);
        for (area, name, pick) in [
            (
                &upper,
                "p99",
                (|p: &(f64, f64, f64)| p.2) as fn(&(f64, f64, f64)) -> f64,
            ),
            (&lower, "p50", |p: &(f64, f64, f64)| p.1),
        ] {
            let max_delay = lines
                .iter()
                .flat_map(|l| &l.points)
                .map(pick)
                .fold(0.0f64, f64::max)
                .max(1.0)
                * 1.15;
            let mut chart = ChartBuilder::on(area)
                .caption(
                    format!("{name} delay against loss, RTT {rtt_ms} ms"),
                    ("sans-serif", 22),
                )
                .margin(15)
                .x_label_area_size(45)
                .y_label_area_size(65)
                .build_cartesian_2d(0.0..max_loss * 1.05, 0.0..max_delay)
                .map_err(at("laying the chart out"))?;
            chart
                .configure_mesh()
                .x_desc("loss on the path (%)")
                .y_desc(format!("{name} delay, capture to viewer (ms)"))
                .draw()
                .map_err(at("drawing the chart's axes"))?;
            for (line, colour) in lines.iter().zip(COLOURS.iter().cycle()) {
                let points: Vec<(f64, f64)> = line.points.iter().map(|p| (p.0, pick(p))).collect();
                let style = colour.stroke_width(2);
                chart
                    .draw_series(LineSeries::new(points.clone(), style))
                    .map_err(at("drawing a line"))?
                    .label(line.carrier.clone())
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
                chart
                    .draw_series(
                        points
                            .into_iter()
                            .map(|p| Circle::new(p, 4, colour.filled())),
                    )
                    .map_err(at("drawing the points"))?;
            }
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperLeft)
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .draw()
                .map_err(at("drawing the legend"))?;
        }
        root.present().map_err(at("finishing the chart"))?;
    }
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chart_has_a_line_and_a_legend_entry_per_carrier() {
        let lines = [
            Line {
                carrier: "quic".into(),
                points: vec![(0.0, 12.0, 30.0), (2.0, 15.0, 120.0)],
            },
            Line {
                carrier: "websocket".into(),
                points: vec![(0.0, 13.0, 35.0), (2.0, 40.0, 400.0)],
            },
        ];
        let svg = delay_against_loss(20, &lines).expect("a chart");
        assert!(svg.starts_with("<svg"), "{svg}");
        assert!(svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("quic") && svg.contains("websocket"));
        assert!(svg.contains("RTT 20 ms"));
        // Two panels, two lines each.
        assert!(svg.matches("<polyline").count() >= 4, "{svg}");
    }

    #[test]
    fn no_points_is_still_a_chart() {
        let svg = delay_against_loss(100, &[]).expect("an empty chart");
        assert!(svg.contains("RTT 100 ms"));
    }
}
