/// Masks credentials for logs and status output: never more than the last 4 characters,
/// and nothing at all of short values.
public enum Secret {
    public static func mask(_ value: String) -> String {
        if value.isEmpty { return "(none)" }
        guard value.count >= 16 else { return "****" }
        return "****" + value.suffix(4)
    }
}
