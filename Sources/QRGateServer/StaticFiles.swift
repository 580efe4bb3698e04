import Foundation

/// Maps request paths to files under the static root, refusing anything that would leave it.
public struct StaticFiles: Sendable {
    public let root: String

    /// `directory` must exist; it is resolved once so symlinks cannot move it later.
    public init(directory: String) throws {
        guard let real = realpath(directory, nil) else {
            throw LWSServerError.contextFailed("static directory \(directory) does not exist")
        }
        root = String(cString: real)
        free(real)
    }

    /// The file to serve for `path`, or nil (→ 404). `/` serves `index.html`; a directory never lists.
    public func resolve(_ path: String) -> String? {
        guard path.hasPrefix("/"), !path.contains("\0"), !path.contains("\\") else { return nil }
        var segments: [Substring] = []
        for segment in path.split(separator: "/", omittingEmptySubsequences: true) {
            // "..", ".", and hidden files are never served; percent-escapes were decoded by lws already,
            // and a "%" left over means double encoding, which no page of ours uses.
            if segment.hasPrefix(".") || segment.contains("%") { return nil }
            segments.append(segment)
        }
        if segments.isEmpty { segments = ["index.html"] }
        var candidate = root + "/" + segments.joined(separator: "/")
        // "/admin" serves admin.html: pages have clean URLs.
        if !segments.last!.contains("."), access(candidate + ".html", R_OK) == 0 { candidate += ".html" }
        guard let real = realpath(candidate, nil) else { return nil }
        defer { free(real) }
        let resolved = String(cString: real)
        guard resolved.hasPrefix(root + "/") else { return nil }
        var st = stat()
        guard stat(resolved, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG else { return nil }
        return resolved
    }
}
