//! Image sizes (from the header alone) and thumbnails (decoded within fixed limits).

use image::{ImageReader, Limits, Rgb, RgbImage};
use std::io::Cursor;

/// Largest side of a thumbnail, in pixels.
pub const THUMB_SIDE: u32 = 320;
/// Largest image file a thumbnail is made of; bigger images get none (they are still shown).
pub const THUMB_MAX_INPUT: u64 = 20 * 1024 * 1024;
/// Largest image (width × height) decoded for a thumbnail.
const MAX_PIXELS: u64 = 40_000_000;
/// Memory the decoder may take.
const MAX_ALLOC: u64 = 256 * 1024 * 1024;

/// Width and height of an image from its first bytes, when the header says.
pub fn dimensions(head: &[u8]) -> Option<(u32, u32)> {
    let size = imagesize::blob_size(head).ok()?;
    let w = u32::try_from(size.width).ok()?;
    let h = u32::try_from(size.height).ok()?;
    (w > 0 && h > 0).then_some((w, h))
}

/// Why no thumbnail was made.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The image is larger than a thumbnail is made of.
    #[error("the image is too large for a thumbnail ({0})")]
    TooLarge(String),
    /// The bytes do not decode.
    #[error("the image does not decode: {0}")]
    Decode(#[from] image::ImageError),
}

/// A JPEG thumbnail of at most [`THUMB_SIDE`]×[`THUMB_SIDE`] (aspect kept; transparency over white).
/// CPU-bound: call it from a blocking thread.
pub fn thumbnail(bytes: &[u8]) -> Result<Vec<u8>, Error> {
    if let Some((w, h)) = dimensions(bytes)
        && u64::from(w) * u64::from(h) > MAX_PIXELS
    {
        return Err(Error::TooLarge(format!("{w}×{h} pixels")));
    }
    let mut reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(image::ImageError::IoError)?;
    let mut limits = Limits::default();
    limits.max_image_width = Some(20_000);
    limits.max_image_height = Some(20_000);
    limits.max_alloc = Some(MAX_ALLOC);
    reader.limits(limits);
    let image = reader.decode()?;
    let small = if image.width() <= THUMB_SIDE && image.height() <= THUMB_SIDE {
        image.to_rgba8()
    } else {
        image.thumbnail(THUMB_SIDE, THUMB_SIDE).to_rgba8()
    };
    let mut flat = RgbImage::new(small.width(), small.height());
    for (x, y, p) in small.enumerate_pixels() {
        let [r, g, b, a] = p.0;
        let over = |c: u8| ((u16::from(c) * u16::from(a) + 255 * (255 - u16::from(a))) / 255) as u8;
        flat.put_pixel(x, y, Rgb([over(r), over(g), over(b)]));
    }
    let mut out = Vec::new();
    let encoder = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 80);
    flat.write_with_encoder(encoder)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{ImageFormat, RgbaImage};

    fn png(w: u32, h: u32) -> Vec<u8> {
        let img = RgbaImage::from_fn(w, h, |x, y| {
            image::Rgba([(x % 256) as u8, (y % 256) as u8, 90, 255])
        });
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, ImageFormat::Png)
            .expect("encode a test PNG");
        out.into_inner()
    }

    #[test]
    fn sizes_come_from_the_header() {
        let p = png(640, 200);
        assert_eq!(dimensions(&p[..64]), Some((640, 200)));
        assert_eq!(dimensions(b"not an image"), None);
    }

    #[test]
    fn thumbnails_fit_the_box_and_keep_the_aspect() {
        let t = thumbnail(&png(640, 200)).expect("thumbnail");
        assert_eq!(&t[..3], b"\xff\xd8\xff", "a JPEG");
        assert_eq!(dimensions(&t), Some((320, 100)));
        let t = thumbnail(&png(50, 40)).expect("thumbnail of a small image");
        assert_eq!(
            dimensions(&t),
            Some((50, 40)),
            "small images are not enlarged"
        );
    }

    #[test]
    fn broken_and_giant_images_are_refused() {
        let mut p = png(64, 64);
        p.truncate(60);
        assert!(matches!(thumbnail(&p), Err(Error::Decode(_))));
        // a header claiming 100 000 × 100 000 pixels is refused before decoding
        let mut giant = png(1, 1);
        giant[16..20].copy_from_slice(&100_000u32.to_be_bytes());
        giant[20..24].copy_from_slice(&100_000u32.to_be_bytes());
        assert!(matches!(thumbnail(&giant), Err(Error::TooLarge(_))));
    }
}
