use super::*;

const NOON: i64 = 1_710_331_200;

fn wave(n: i64, step: i64, gap: Option<std::ops::Range<i64>>) -> Vec<(i64, Option<f64>)> {
    (1..=n)
        .map(|i| {
            let t = NOON - (n - i) * step;
            let v = 40.0 + 30.0 * ((i as f64) / 20.0).sin();
            let unknown = gap.as_ref().is_some_and(|g| g.contains(&i));
            (t, (!unknown).then_some(v))
        })
        .collect()
}

fn graph(width: u32, height: u32) -> Graph {
    let pts = wave(1440, 60, Some(600..700));
    let band = pts
        .iter()
        .map(|&(t, v)| (t, v.map(|v| v - 5.0), v.map(|v| v + 8.0)))
        .collect();
    Graph {
        title: Some("CPU <web-1> & \"friends\"".into()),
        width,
        height,
        from: NOON - 86_400,
        to: NOON,
        step: 60,
        unit: Unit::Percent,
        lines: vec![
            Line {
                label: "cpu.busy_pct".into(),
                points: pts,
                band: Some(band),
            },
            Line {
                label: "cpu.user_pct <script>alert(1)</script>".into(),
                points: wave(1440, 60, None)
                    .into_iter()
                    .map(|(t, v)| (t, v.map(|v| v / 2.0)))
                    .collect(),
                band: None,
            },
        ],
        thresholds: vec![
            Threshold {
                value: 80.0,
                level: Level::Warning,
            },
            Threshold {
                value: 95.0,
                level: Level::Critical,
            },
        ],
        marks: Vec::new(),
        utc_offset: 0,
    }
}

#[test]
fn the_embedded_font_is_valid() {
    assert!(plotters::style::register_font("test-font", FontStyle::Normal, FONT).is_ok());
}

#[test]
fn png_has_the_signature_and_the_asked_size() {
    for (w, h) in [(800, 300), (160, 40), (1200, 500)] {
        let png = render_png(&graph(w, h)).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        assert_eq!(png::dimensions(&png), Some((w, h)));
    }
}

#[test]
fn png_draws_text_and_lines() {
    // Not a blank canvas: the frame has far more than one colour.
    let g = graph(800, 300);
    let mut rgb = vec![0u8; 800 * 300 * 3];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (800, 300)).into_drawing_area();
        init();
        draw(&root, &g).unwrap();
        root.present().unwrap();
    }
    let colours: std::collections::HashSet<&[u8]> = rgb.chunks(3).collect();
    assert!(colours.len() > 20, "{} colours", colours.len());
}

#[test]
fn svg_has_the_legend_and_escapes_text() {
    let svg = render_svg(&graph(800, 300)).unwrap();
    assert!(svg.starts_with("<svg"), "{}", &svg[..80]);
    assert!(svg.contains("width=\"800\""));
    assert!(svg.contains(">\ncpu.busy_pct\n</text>") || svg.contains("cpu.busy_pct"));
    for head in ["cur", "min", "avg", "max"] {
        assert!(svg.contains(&format!(">\n{head}\n<")), "legend head {head}");
    }
    assert!(svg.contains("CPU &lt;web-1&gt; &amp; &quot;friends&quot;"));
    assert!(svg.contains("&lt;script&gt;"));
    assert!(!svg.contains("<script"));
    assert!(svg.contains("warning 80 %"));
}

#[test]
fn control_characters_never_reach_the_svg() {
    let mut g = graph(800, 300);
    g.title = Some("bad\u{1}\u{8}title\u{1b}[31m".into());
    let svg = render_svg(&g).unwrap();
    assert!(svg.contains("badtitle[31m"));
    assert!(!svg.chars().any(|c| c.is_control() && c != '\n'));
    assert_eq!(clean_text(&"x".repeat(500)).chars().count(), MAX_TEXT);
}

#[test]
fn gaps_split_lines_into_segments() {
    let pts = vec![
        (10, Some(1.0)),
        (20, Some(2.0)),
        (30, None),
        (40, Some(f64::NAN)),
        (50, Some(3.0)),
        (60, None),
        (70, Some(4.0)),
        (80, Some(5.0)),
    ];
    let segs = segments(&pts);
    assert_eq!(
        segs,
        vec![
            vec![(10, 1.0), (20, 2.0)],
            vec![(50, 3.0)],
            vec![(70, 4.0), (80, 5.0)]
        ]
    );
    // The SVG carries one polyline per segment of each line.
    let mut g = graph(800, 300);
    g.lines = vec![Line {
        label: "x".into(),
        points: pts.iter().map(|&(t, v)| (NOON - 80 + t, v)).collect(),
        band: None,
    }];
    g.from = NOON - 80;
    g.step = 10;
    g.thresholds.clear();
    let svg = render_svg(&g).unwrap();
    let lines = svg
        .lines()
        .filter(|l| l.starts_with("<polyline") && l.contains("stroke=\"#3D9A3A\""))
        .count();
    assert_eq!(lines, 3, "{svg}");
}

#[test]
fn sparkline_has_no_text() {
    let svg = render_svg(&graph(160, 40)).unwrap();
    assert!(!svg.contains("<text"), "{svg}");
    assert!(svg.contains("<polyline"));
}

#[test]
fn empty_graph_says_no_data() {
    let mut g = graph(800, 300);
    g.lines.clear();
    let svg = render_svg(&g).unwrap();
    assert!(svg.contains("no data in this range"));
    assert!(render_png(&g).is_ok());
}

#[test]
fn stats_use_the_band_for_extremes() {
    let l = Line {
        label: "x".into(),
        points: vec![(1, Some(2.0)), (2, None), (3, Some(4.0))],
        band: Some(vec![(1, Some(1.0), Some(3.0)), (3, Some(3.5), Some(9.0))]),
    };
    let s = l.stats();
    assert_eq!(s.cur, Some(4.0));
    assert_eq!(s.avg, Some(3.0));
    assert_eq!((s.min, s.max), (Some(1.0), Some(9.0)));
}

/// `GRAPH_DUMP=/tmp cargo test -p metrolog-server --lib graph::tests::dump`
/// writes the sample pictures for a look.
#[test]
fn dump() {
    let Some(dir) = std::env::var_os("GRAPH_DUMP") else {
        return;
    };
    let dir = std::path::PathBuf::from(dir);
    for (w, h) in [(800, 300), (160, 40), (400, 200)] {
        std::fs::write(
            dir.join(format!("sample-{w}x{h}.png")),
            render_png(&graph(w, h)).unwrap(),
        )
        .unwrap();
    }
    std::fs::write(
        dir.join("sample.svg"),
        render_svg(&graph(800, 300)).unwrap(),
    )
    .unwrap();
}

#[test]
fn alarm_transitions_are_marked_where_they_happened() {
    use metrolog_protocol::nagios::CheckStatus;
    let (w, h) = (800u32, 300u32);
    let pixels = |g: &Graph| {
        let mut rgb = vec![0u8; (w * h * 3) as usize];
        {
            let root = BitMapBackend::with_buffer(&mut rgb, (w, h)).into_drawing_area();
            init();
            draw(&root, g).unwrap();
            root.present().unwrap();
        }
        rgb
    };
    let mut g = graph(w, h);
    g.lines.clear();
    g.thresholds.clear();
    // Fired critical at a quarter of the range, recovered at three quarters;
    // one soft warning and one mark outside the range (not drawn).
    let quarter = (g.to - g.from) / 4;
    g.marks = vec![
        Mark::alarm(g.from + quarter, CheckStatus::Critical, true),
        Mark::alarm(g.from + 3 * quarter, CheckStatus::Ok, true),
        Mark::alarm(g.from - 100, CheckStatus::Critical, true),
    ];
    let rgb = pixels(&g);
    let px = |x: u32, y: u32| {
        let i = ((y * w + x) * 3) as usize;
        (rgb[i], rgb[i + 1], rgb[i + 2])
    };
    // Columns holding the colour of each state, near the top of the plot.
    let columns_of = |c: RGBColor| -> Vec<u32> {
        (0..w)
            .filter(|&x| (8..40).any(|y| px(x, y) == (c.0, c.1, c.2)))
            .collect()
    };
    let red = columns_of(CRITICAL);
    let green = columns_of(RECOVERED);
    assert!(!red.is_empty() && !green.is_empty(), "marks drawn");
    let mid = |cols: &[u32]| cols.iter().sum::<u32>() / cols.len() as u32;
    // The plot spans PLOT_LEFT..w-PLOT_RIGHT: the red mark sits near its
    // first quarter, the green one near its third.
    let span = (w as i32 - PLOT_RIGHT - PLOT_LEFT) as f64;
    let expect = |f: f64| (PLOT_LEFT as f64 + f * span) as i64;
    assert!(
        (mid(&red) as i64 - expect(0.25)).abs() < 12,
        "red at {red:?}"
    );
    assert!(
        (mid(&green) as i64 - expect(0.75)).abs() < 12,
        "green at {green:?}"
    );
    // Without marks, neither colour is there.
    g.marks.clear();
    let rgb = pixels(&g);
    let any = |c: RGBColor| rgb.chunks(3).any(|p| p == [c.0, c.1, c.2]);
    assert!(!any(RECOVERED));
}

#[test]
fn scaling_events_are_marked_filled_at_the_top_and_dry_runs_outlined_at_the_bottom() {
    use marks::ScaleMark;
    let (w, h) = (800u32, 300u32);
    let mut g = graph(w, h);
    g.lines.clear();
    g.thresholds.clear();
    let quarter = (g.to - g.from) / 4;
    g.marks = vec![
        Mark::scaling(g.from + quarter, ScaleMark::Out, false),
        Mark::scaling(g.from + 3 * quarter, ScaleMark::Out, true),
        Mark::scaling(g.from + 2 * quarter, ScaleMark::Heal, false),
    ];
    let mut rgb = vec![0u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (w, h)).into_drawing_area();
        init();
        draw(&root, &g).unwrap();
        root.present().unwrap();
    }
    let px = |x: u32, y: u32| {
        let i = ((y * w + x) * 3) as usize;
        (rgb[i], rgb[i + 1], rgb[i + 2])
    };
    // Solid pixels of a colour in a band of rows: (columns, rows).
    let found = |c: RGBColor, rows: std::ops::Range<u32>| -> Vec<(u32, u32)> {
        (0..w)
            .flat_map(|x| rows.clone().map(move |y| (x, y)))
            .filter(|&(x, y)| px(x, y) == (c.0, c.1, c.2))
            .collect()
    };
    let span = (w as i32 - PLOT_RIGHT - PLOT_LEFT) as f64;
    let expect = |f: f64| (PLOT_LEFT as f64 + f * span) as i64;
    let near = |pts: &[(u32, u32)], f: f64| {
        !pts.is_empty()
            && pts
                .iter()
                .all(|&(x, _)| (i64::from(x) - expect(f)).abs() < 12)
    };
    // The fired scale_out: a filled blue shape at the top, at a quarter.
    let top = found(SCALE_OUT, 20..40);
    assert!(near(&top, 0.25), "top marks at {top:?}");
    // The dry-run's: outlined at the bottom, at three quarters.
    let bottom = found(SCALE_OUT, h / 2..h);
    let outline: Vec<_> = bottom
        .iter()
        .copied()
        .filter(|&(x, _)| (i64::from(x) - expect(0.75)).abs() < 12)
        .collect();
    assert!(
        outline.len() > 10,
        "a dry-run shape at the bottom: {bottom:?}"
    );
    // The heal: orange, at the middle.
    assert!(near(&found(HEAL, 20..40), 0.5));
}

#[test]
fn a_narrow_graph_drops_legend_columns_instead_of_overlapping_them() {
    // A dashboard panel at phone width: three lines of GiB values.
    let gib = |v: f64| {
        wave(360, 60, None)
            .into_iter()
            .map(move |(t, x)| (t, x.map(|x| x * v)))
            .collect::<Vec<_>>()
    };
    let mut g = graph(360, 300);
    g.unit = Unit::Bytes;
    g.lines = ["mem.used_bytes", "mem.total_bytes", "swap.used_bytes"]
        .iter()
        .zip([6.0e7, 4.0e8, 0.0])
        .map(|(label, v)| Line {
            label: label.to_string(),
            points: gib(v),
            band: None,
        })
        .collect();
    let svg = render_svg(&g).unwrap();
    let has = |head: &str| svg.contains(&format!(">\n{head}\n<"));
    assert!(has("cur"), "the current value always shows");
    assert!(!has("min"), "min is the first column to go");
    // The labels keep enough to tell the lines apart.
    assert!(svg.contains("mem.used_b"), "labels cut short: {svg}");
    // Wide enough, every column is back.
    g.width = 900;
    let svg = render_svg(&g).unwrap();
    for head in ["cur", "min", "avg", "max"] {
        assert!(svg.contains(&format!(">\n{head}\n<")), "{head} at 900 px");
    }
}
