/// What every HTTP answer carries, pages and API alike.
enum SecurityHeaders {
    /// The served pages load scripts, styles and images from the gateway only (no inline code: the
    /// pages and `<qrgate-link>` use files and constructable stylesheets), QR images as `data:` URLs,
    /// and talk to the gateway only (`'self'` covers its ws:/wss: address).
    static func contentSecurityPolicy(frameAncestors: String) -> String {
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
            + "font-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors \(frameAncestors)"
    }

    static func all(frameAncestors: String, tls: Bool) -> [(String, String)] {
        var h = [("Content-Security-Policy", contentSecurityPolicy(frameAncestors: frameAncestors)),
                 ("X-Content-Type-Options", "nosniff"),
                 // Browser tokens travel in `?token=`: no page address ever leaves in a Referer.
                 ("Referrer-Policy", "no-referrer")]
        if tls { h.append(("Strict-Transport-Security", "max-age=15552000")) }
        return h
    }
}
