//! Text on graphs, laid out with the embedded DejaVu Sans through ab_glyph.
//!
//! plotters' own ab_glyph text places each glyph's ink box at the pen
//! position, ignoring side bearings (a "." lands against the previous letter
//! and leaves a gap after it), so labels are laid out here: pen advance,
//! kerning and bearings as the font says. On the SVG backend only the anchor,
//! size and colour are used; the browser draws the glyphs.

use ab_glyph::{Font, FontRef, PxScale, ScaleFont};
use plotters::element::{Drawable, PointCollection};
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::{FontFamily, RGBColor};
use plotters_backend::{
    BackendColor, BackendCoord, BackendTextStyle, DrawingBackend, DrawingErrorKind,
};
use std::sync::OnceLock;

fn face() -> Option<&'static FontRef<'static>> {
    static FACE: OnceLock<Option<FontRef<'static>>> = OnceLock::new();
    FACE.get_or_init(|| FontRef::try_from_slice(super::FONT).ok())
        .as_ref()
}

/// How a label looks: CSS-like font size in pixels, colour and anchor.
#[derive(Clone, Copy)]
pub struct Style {
    pub px: f32,
    pub color: RGBColor,
    pub anchor: Pos,
}

impl Style {
    pub fn new(px: f32, color: RGBColor) -> Style {
        Style {
            px,
            color,
            anchor: Pos::new(HPos::Left, VPos::Top),
        }
    }

    pub fn at(self, h: HPos, v: VPos) -> Style {
        Style {
            anchor: Pos::new(h, v),
            ..self
        }
    }

    /// ab_glyph scales by ascent − descent; CSS sizes by the em.
    fn scale(&self, f: &FontRef<'static>) -> PxScale {
        let em = f.units_per_em().unwrap_or(2048.0);
        PxScale::from(self.px * f.height_unscaled() / em)
    }

    /// Width of `text` in pixels.
    pub fn width(&self, text: &str) -> i32 {
        let Some(f) = face() else {
            return (text.chars().count() as f32 * self.px * 0.6) as i32;
        };
        let sf = f.as_scaled(self.scale(f));
        let mut w = 0.0;
        let mut prev = None;
        for c in text.chars() {
            let id = sf.glyph_id(c);
            if let Some(p) = prev {
                w += sf.kern(p, id);
            }
            w += sf.h_advance(id);
            prev = Some(id);
        }
        w.ceil() as i32
    }

    /// Ascent above the baseline and the line height, in pixels.
    fn metrics(&self) -> (f32, f32) {
        match face() {
            Some(f) => {
                let sf = f.as_scaled(self.scale(f));
                (sf.ascent(), sf.ascent() - sf.descent())
            }
            None => (self.px * 0.9, self.px * 1.2),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("the embedded font could not be read")]
pub struct NoFont;

impl BackendTextStyle for Style {
    type FontError = NoFont;

    fn color(&self) -> BackendColor {
        BackendColor {
            alpha: 1.0,
            rgb: (self.color.0, self.color.1, self.color.2),
        }
    }

    /// plotters' SVG backend writes `font-size` as this divided by 1.24.
    fn size(&self) -> f64 {
        f64::from(self.px) * 1.24
    }

    fn anchor(&self) -> Pos {
        self.anchor
    }

    fn family(&self) -> FontFamily<'_> {
        FontFamily::SansSerif
    }

    fn layout_box(&self, text: &str) -> Result<((i32, i32), (i32, i32)), NoFont> {
        let (_, height) = self.metrics();
        Ok(((0, 0), (self.width(text), height.round() as i32)))
    }

    fn draw<E, F: FnMut(i32, i32, BackendColor) -> Result<(), E>>(
        &self,
        text: &str,
        (x0, y0): BackendCoord,
        mut draw: F,
    ) -> Result<Result<(), E>, NoFont> {
        let f = face().ok_or(NoFont)?;
        let sf = f.as_scaled(self.scale(f));
        let (ascent, _) = self.metrics();
        let rgb = (self.color.0, self.color.1, self.color.2);
        let mut pen = 0.0f32;
        let mut prev = None;
        for c in text.chars() {
            let id = sf.glyph_id(c);
            if let Some(p) = prev {
                pen += sf.kern(p, id);
            }
            prev = Some(id);
            let glyph = id.with_scale_and_position(sf.scale(), ab_glyph::point(pen, ascent));
            pen += sf.h_advance(id);
            let Some(outline) = f.outline_glyph(glyph) else {
                continue;
            };
            let b = outline.px_bounds();
            let mut result = Ok(());
            outline.draw(|x, y, cover| {
                if result.is_ok() && cover > 0.02 {
                    result = draw(
                        x0 + b.min.x as i32 + x as i32,
                        y0 + b.min.y as i32 + y as i32,
                        BackendColor {
                            alpha: f64::from(cover.min(1.0)),
                            rgb,
                        },
                    );
                }
            });
            if result.is_err() {
                return Ok(result);
            }
        }
        Ok(Ok(()))
    }
}

/// A label at a pixel position, drawn with [`Style`].
pub struct Label<'a> {
    pub text: &'a str,
    pub pos: BackendCoord,
    pub style: Style,
}

impl<'a> PointCollection<'a, BackendCoord> for &'a Label<'_> {
    type Point = &'a BackendCoord;
    type IntoIter = std::iter::Once<&'a BackendCoord>;
    fn point_iter(self) -> Self::IntoIter {
        std::iter::once(&self.pos)
    }
}

impl<DB: DrawingBackend> Drawable<DB> for Label<'_> {
    fn draw<I: Iterator<Item = BackendCoord>>(
        &self,
        mut points: I,
        backend: &mut DB,
        _: (u32, u32),
    ) -> Result<(), DrawingErrorKind<DB::ErrorType>> {
        match points.next() {
            Some(p) => backend.draw_text(self.text, &self.style, p),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn widths_follow_the_font() {
        let s = Style::new(12.0, RGBColor(0, 0, 0));
        assert!(s.width("WWW") > s.width("iii"));
        assert_eq!(s.width(""), 0);
        // DejaVu Sans digits are 0.636 em wide.
        let w = s.width("0000000000");
        assert!((74..=78).contains(&w), "{w}");
    }
}
