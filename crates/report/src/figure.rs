//! One drawing code, two outputs: every figure of the crate implements
//! [`Figure`] once, generic over plotters' backends, and [`svg`] / [`png`]
//! render it as an SVG string (for the HTML report and the dashboard) or as PNG
//! bytes (for files a person opens or a paper includes).
//!
//! Text is measured with a font bundled into the binary (DejaVu Sans, see
//! `assets/DejaVuSans-LICENSE.txt`), so rendering needs no fontconfig, no
//! freetype and no fonts installed on the machine; in SVG the text stays text
//! (`font-family: sans-serif`), so it is sharp and searchable.

#[cfg(test)]
use std::io::Cursor;
use std::sync::Once;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::FontStyle;

/// Font sizes in plotters' units (the SVG `font-size` comes out 1/1.24 of
/// these): the title, axis titles and legends, tick labels and captions.
pub const TITLE_SIZE: f64 = 22.0;
pub const LABEL_SIZE: f64 = 18.0;
pub const TICK_SIZE: f64 = 16.0;

/// Family name figures ask for; the bundled font is registered under it.
pub const FONT: &str = "sans-serif";

static FONT_BYTES: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");
static REGISTER: Once = Once::new();

/// Registers the bundled font with plotters (once per process).
pub(crate) fn ensure_font() {
    REGISTER.call_once(|| {
        // The font is compiled in and known to parse; a failure here is a
        // broken build, which the crate's tests catch.
        for style in [FontStyle::Normal, FontStyle::Bold] {
            if plotters::style::register_font(FONT, style, FONT_BYTES).is_err() {
                panic!("the bundled DejaVuSans.ttf does not parse");
            }
        }
    });
}

/// A drawing failed (a backend error, or an image that could not be encoded).
#[derive(Debug, thiserror::Error)]
pub enum ChartError {
    #[error("drawing {figure}: {message}")]
    Draw {
        figure: &'static str,
        message: String,
    },
    #[error("encoding {figure} as PNG: {source}")]
    Png {
        figure: &'static str,
        #[source]
        source: png::EncodingError,
    },
    #[error("{figure}: {message}")]
    Input {
        figure: &'static str,
        message: String,
    },
}

/// The result of drawing onto one backend.
pub type DrawResult<DB> = Result<(), DrawingAreaErrorKind<<DB as DrawingBackend>::ErrorType>>;

/// A figure that can be drawn on any plotters backend.
pub trait Figure {
    /// What the figure is, for error messages ("learning curves", ...).
    const KIND: &'static str;
    /// Width and height in pixels (SVG user units).
    fn size(&self) -> (u32, u32);
    /// Checks the input before any drawing (an empty chart, ragged data).
    fn validate(&self) -> Result<(), String> {
        Ok(())
    }
    /// Draws the whole figure onto `area`, which has [`Figure::size`].
    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> DrawResult<DB>;
}

fn check<F: Figure>(figure: &F) -> Result<(), ChartError> {
    figure.validate().map_err(|message| ChartError::Input {
        figure: F::KIND,
        message,
    })
}

/// Renders `figure` as a standalone SVG document (an `<svg>` element with
/// width, height and viewBox), fit for inlining into HTML.
pub fn svg<F: Figure>(figure: &F) -> Result<String, ChartError> {
    ensure_font();
    check(figure)?;
    let mut out = String::new();
    {
        let area = SVGBackend::with_string(&mut out, figure.size()).into_drawing_area();
        let drawn = figure.draw(&area).and_then(|()| area.present());
        drawn.map_err(|e| ChartError::Draw {
            figure: F::KIND,
            message: e.to_string(),
        })?;
    }
    Ok(out)
}

/// Renders `figure` as PNG bytes (8-bit RGB).
pub fn png<F: Figure>(figure: &F) -> Result<Vec<u8>, ChartError> {
    ensure_font();
    check(figure)?;
    let (w, h) = figure.size();
    let mut pixels = vec![255u8; w as usize * h as usize * 3];
    {
        let area = BitMapBackend::with_buffer(&mut pixels, (w, h)).into_drawing_area();
        let drawn = figure.draw(&area).and_then(|()| area.present());
        drawn.map_err(|e| ChartError::Draw {
            figure: F::KIND,
            message: e.to_string(),
        })?;
    }
    encode_png(F::KIND, w, h, pixels)
}

/// Encodes an RGB buffer of `w × h` pixels as PNG.
pub(crate) fn encode_png(
    figure: &'static str,
    w: u32,
    h: u32,
    pixels: Vec<u8>,
) -> Result<Vec<u8>, ChartError> {
    if pixels.len() != w as usize * h as usize * 3 {
        return Err(ChartError::Input {
            figure,
            message: format!("pixel buffer does not hold {w}×{h} RGB pixels"),
        });
    }
    // The png crate directly (the image crate would add its colour management
    // and every other codec's code to the build of a light sweepctl).
    let mut bytes = Vec::new();
    let mut encoder = png::Encoder::new(&mut bytes, w, h);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    encoder
        .write_header()
        .and_then(|mut writer| writer.write_image_data(&pixels))
        .map_err(|source| ChartError::Png { figure, source })?;
    Ok(bytes)
}

/// Decodes a whole PNG (so that a broken one fails the test) and returns its
/// width and height.
#[cfg(test)]
pub(crate) fn png_size(bytes: &[u8]) -> (u32, u32) {
    let mut reader = png::Decoder::new(Cursor::new(bytes)).read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    (info.width, info.height)
}

/// A colour-blind-safe qualitative palette (Okabe & Ito), black last so the
/// first colours go to the first series; repeats after eight.
pub fn palette(i: usize) -> RGBColor {
    const COLORS: [RGBColor; 8] = [
        RGBColor(0, 114, 178),   // blue
        RGBColor(230, 159, 0),   // orange
        RGBColor(0, 158, 115),   // bluish green
        RGBColor(204, 121, 167), // reddish purple
        RGBColor(86, 180, 233),  // sky blue
        RGBColor(213, 94, 0),    // vermillion
        RGBColor(240, 228, 66),  // yellow
        RGBColor(0, 0, 0),       // black
    ];
    COLORS[i % COLORS.len()]
}

/// Width in pixels of `text` at `size` in the bundled font (for layout).
pub(crate) fn text_width(text: &str, size: f64) -> u32 {
    ensure_font();
    let font: FontDesc = (FONT, size).into_font();
    font.box_size(text).map_or_else(
        |_| (text.chars().count() as f64 * size * 0.6) as u32,
        |(w, _)| w,
    )
}

/// `text` in lines at most `room` pixels wide at `size`: broken after a
/// `_`, `-`, `.`, `,`, `/` or space where it can (the joints of variant
/// names such as `learning_rate-0.001_width-64`), inside a word only where a
/// word alone is wider. No character is dropped: the lines joined are `text`.
pub(crate) fn wrap(text: &str, room: u32, size: f64) -> Vec<String> {
    let mut pieces: Vec<String> = Vec::new();
    let mut piece = String::new();
    for c in text.chars() {
        piece.push(c);
        if matches!(c, '_' | '-' | '.' | ',' | '/' | ' ') {
            pieces.push(std::mem::take(&mut piece));
        }
    }
    if !piece.is_empty() {
        pieces.push(piece);
    }
    let fits = |s: &str| text_width(s, size) <= room;
    let mut lines: Vec<String> = Vec::new();
    let mut line = String::new();
    for piece in pieces {
        let longer = format!("{line}{piece}");
        if fits(longer.trim_end()) {
            line = longer;
            continue;
        }
        if !line.is_empty() {
            lines.push(std::mem::take(&mut line));
        }
        for c in piece.chars() {
            if !line.is_empty() && !fits(&format!("{line}{c}")) {
                lines.push(std::mem::take(&mut line));
            }
            line.push(c);
        }
    }
    if !line.is_empty() || lines.is_empty() {
        lines.push(line);
    }
    lines
}

/// Tick labels with as many decimals as the axis span needs.
pub(crate) fn tick_decimals(span: f64) -> usize {
    match span {
        s if s >= 20.0 => 0,
        s if s >= 2.0 => 1,
        s if s >= 0.2 => 2,
        s if s >= 0.02 => 3,
        _ => 4,
    }
}

/// The text content of every `<text>` element of an SVG, trimmed (for tests
/// and checks: plotters writes the text on its own line).
pub fn svg_texts(svg: &str) -> Vec<String> {
    svg.split("<text")
        .skip(1)
        .filter_map(|rest| {
            let start = rest.find('>')? + 1;
            let end = rest.find("</text>")?;
            Some(rest.get(start..end)?.trim().to_string())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_names_wrap_at_their_joints_and_lose_nothing() {
        let name = "learning_rate-0.001_width-512";
        let room = text_width("learning_rate-0.001_", LABEL_SIZE);
        let lines = wrap(name, room, LABEL_SIZE);
        assert_eq!(lines, ["learning_rate-0.001_", "width-512"]);
        assert_eq!(wrap("short", 1000, LABEL_SIZE), ["short"]);
        // A word wider than the room breaks inside, and keeps every character.
        let word = "abcdefghijklmnopqrstuvwxyz";
        let lines = wrap(word, text_width("abcdefgh", LABEL_SIZE), LABEL_SIZE);
        assert!(lines.len() >= 3, "{lines:?}");
        assert_eq!(lines.concat(), word);
        assert!(
            lines
                .iter()
                .all(|l| text_width(l, LABEL_SIZE) <= text_width("abcdefgh", LABEL_SIZE))
        );
    }
}
