import Foundation

/// Linking by phone number: WhatsApp's "Link with phone number instead" shows an 8-character code the
/// user types on the phone. Evolution returns it as `pairingCode` when connect carries `?number=`.
public enum PairingCode {
    /// The code as WhatsApp shows it, `ABCD-EFGH`; nil for anything that is not 8 letters or digits
    /// (with or without the dash), so a malformed upstream value never reaches a client.
    public static func normalize(_ raw: String?) -> String? {
        guard let raw else { return nil }
        let chars = raw.unicodeScalars.filter { $0 != "-" && $0 != " " }
        guard chars.count == 8, chars.allSatisfy({ $0.isASCII && (CharacterSet.alphanumerics.contains($0)) }) else { return nil }
        let s = String(String.UnicodeScalarView(chars)).uppercased()
        return s.prefix(4) + "-" + s.suffix(4)
    }
}

/// A phone number to link: digits with the country code, 8–15 of them (E.164), an optional leading `+`.
public enum PhoneNumber {
    public static let rule = "phoneNumber must be 8–15 digits with the country code (an optional leading +), e.g. 5511987654321"

    /// The digits, or nil when `raw` is not a phone number by `rule`.
    public static func validate(_ raw: String) -> String? {
        let digits = raw.hasPrefix("+") ? raw.dropFirst() : Substring(raw)
        guard (8...15).contains(digits.count), digits.utf8.allSatisfy({ (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) }) else { return nil }
        return String(digits)
    }

    /// What may be shown or logged: the last four digits only.
    public static func masked(_ digits: String) -> String { "•••• " + digits.suffix(4) }
}
