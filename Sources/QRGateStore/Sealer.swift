import Crypto
import Foundation

/// Seals instance tokens and phone numbers at rest (AES-GCM, 256-bit key): one type for every store.
public struct Sealer: Sendable {
    private let key: SymmetricKey

    public init(key: SymmetricKey) { self.key = key }

    /// A key of 32 bytes (`store.sealKey` decoded, or a key a store keeps).
    public init(bytes: Data) throws {
        guard bytes.count == 32 else { throw SealerError.badKey }
        key = SymmetricKey(data: bytes)
    }

    /// 32 random bytes, for a store that keeps its own key.
    public static func newKeyBytes() -> Data { SymmetricKey(size: .bits256).withUnsafeBytes { Data($0) } }

    public func seal(_ text: String) throws -> Data {
        try AES.GCM.seal(Data(text.utf8), using: key).combined!
    }

    public func open(_ sealed: Data) throws -> String {
        String(decoding: try AES.GCM.open(AES.GCM.SealedBox(combined: sealed), using: key), as: UTF8.self)
    }

    /// 32 random bytes in a file only the owner can read, made on first use.
    public static func loadOrCreateKey(at path: String) throws -> Sealer {
        if let data = FileManager.default.contents(atPath: path), data.count == 32 { return Sealer(key: SymmetricKey(data: data)) }
        let data = newKeyBytes()
        guard FileManager.default.createFile(atPath: path, contents: data, attributes: [.posixPermissions: 0o600]) else {
            throw CocoaError(.fileWriteUnknown, userInfo: [NSFilePathErrorKey: path])
        }
        return Sealer(key: SymmetricKey(data: data))
    }
}

public enum SealerError: Error, CustomStringConvertible {
    case badKey
    public var description: String { "a seal key must be 32 bytes (base64 of 32 bytes in configuration)" }
}
