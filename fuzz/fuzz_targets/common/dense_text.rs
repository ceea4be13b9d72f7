//! What the three dense text targets share: any bytes through the parser of one format, with
//! the options each format has (default, a fixed dimension, a label by name with columns in a
//! model's order, VW names): every call returns a row or an error (never a panic), and a row
//! fills exactly the parser's features.
use streamsgd::source::text::LabelColumn;
use streamsgd::source::{TextFormat, TextOptions, TextParser};

fn parse_all(format: TextFormat, data: &[u8], opts: &TextOptions) {
    let Ok(mut p) = TextParser::new(data, "fuzz", format, opts) else { return };
    let mut row = vec![0.0f32; p.features()];
    for _ in 0..100_000 {
        match p.next_row(&mut row) {
            Ok(None) => break,
            Ok(Some(r)) => assert!(r.line >= 1),
            Err(e) if e.fatal => break,
            Err(_) => {}
        }
    }
    assert_eq!(row.len(), p.features());
}

/// Runs `data` through the `format` parser under each set of options.
pub fn fuzz(format: TextFormat, data: &[u8]) {
    let plain = TextOptions::default();
    parse_all(format, data, &plain);
    parse_all(format, data, &TextOptions { features: Some(8), ..plain.clone() });
    parse_all(
        format,
        data,
        &TextOptions {
            label: Some(LabelColumn::IfPresent("y".into())),
            feature_order: Some(vec!["a".into(), "b".into()]),
            ..plain.clone()
        },
    );
    parse_all(format, data, &TextOptions { vw_names: Some(vec!["a".into(), "n^b".into()]), ..plain });
}
