//! Serves predictions from a saved model in your own program: reads rows from stdin and
//! prints one output per row, exactly as `streamsgd predict` would (the model's feature stage,
//! or its hashing and crosses, applied).
//!
//! A dense model reads comma-separated feature values (an empty cell is missing); a sparse one
//! reads VW lines.
//!
//! ```sh
//! streamsgd gen --rows 10000 --features 4 -o c.csv && streamsgd train c.csv --save c.model
//! cut -d, -f1-4 c.csv | tail -n +2 | cargo run --release --example predict -- c.model
//! ```

use std::io::{BufRead, Write};
use streamsgd::predictor::Predictor;
use streamsgd::source::TextFormat;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args().nth(1).ok_or("usage: predict MODEL < rows")?;
    let model = Predictor::load(path.as_ref())?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut row = Vec::new();
    for (i, line) in std::io::stdin().lock().lines().enumerate() {
        let line = line?;
        let y = match model.features() {
            Some(_) => {
                row.clear();
                for cell in line.split(',') {
                    let cell = cell.trim();
                    row.push(if cell.is_empty() {
                        f32::NAN
                    } else {
                        cell.parse().map_err(|e| format!("line {}: '{cell}': {e}", i + 1))?
                    });
                }
                model.predict(&row)
            }
            None => model.predict_line(TextFormat::Vw, &line),
        };
        writeln!(out, "{}", y.map_err(|e| format!("line {}: {e}", i + 1))?)?;
    }
    Ok(())
}
