//! Any bytes through the csv text parser — CSV: the header and every line, with the label found by name or by default, and with the columns mapped by a model's names: every call returns a row or an error
//! (never a panic), and a row fills exactly the parser's features.
#![no_main]
use libfuzzer_sys::fuzz_target;
use streamsgd::source::text::LabelColumn;
use streamsgd::source::{TextFormat, TextOptions, TextParser};

fn parse_all(data: &[u8], opts: &TextOptions) {
    let Ok(mut p) = TextParser::new(data, "fuzz", TextFormat::Csv, opts) else { return };
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

fuzz_target!(|data: &[u8]| {
    let plain = TextOptions::default();
    parse_all(data, &plain);
    parse_all(data, &TextOptions { features: Some(8), ..plain.clone() });
    parse_all(
        data,
        &TextOptions {
            label: Some(LabelColumn::IfPresent("y".into())),
            feature_order: Some(vec!["a".into(), "b".into()]),
            ..plain.clone()
        },
    );
    parse_all(data, &TextOptions { vw_names: Some(vec!["a".into(), "n^b".into()]), ..plain });
});
