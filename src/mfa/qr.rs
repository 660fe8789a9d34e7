//! QR codes as small, self-contained SVG images (no scripts, no external references).

use std::fmt::Write;

use qrcodegen::{QrCode, QrCodeEcc};

/// Light modules around the symbol, as the QR specification requires.
const QUIET_ZONE: i32 = 4;

/// Default rendered size of one module, in CSS pixels (pages may resize the image).
const MODULE_PX: i32 = 5;

/// Renders `text` as a QR code (error correction at least Medium: the encoder raises the
/// level when that fits in the same version). All dark modules are one `<path>` of
/// horizontal runs. `None` if the text does not fit in the largest QR version.
pub fn qr_svg(text: &str) -> Option<String> {
    let qr = QrCode::encode_text(text, QrCodeEcc::Medium).ok()?;
    let size = qr.size();
    let full = size + 2 * QUIET_ZONE;
    let px = full * MODULE_PX;
    let mut path = String::new();
    for y in 0..size {
        let mut x = 0;
        while x < size {
            if !qr.get_module(x, y) {
                x += 1;
                continue;
            }
            let start = x;
            while x < size && qr.get_module(x, y) {
                x += 1;
            }
            let run = x - start;
            let _ = write!(path, "M{},{}h{run}v1h-{run}z", start + QUIET_ZONE, y + QUIET_ZONE);
        }
    }
    Some(format!(
        concat!(
            r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {full} {full}" width="{px}" height="{px}" "#,
            r#"role="img" aria-label="QR code for an authenticator app" shape-rendering="crispEdges">"#,
            r##"<rect width="{full}" height="{full}" fill="#fff"/><path d="{path}" fill="#000"/></svg>"##
        ),
        full = full,
        px = px,
        path = path
    ))
}
