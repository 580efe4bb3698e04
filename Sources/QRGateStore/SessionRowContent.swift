import Foundation
import QRGateCore

/// What a session row holds besides `seq` and `lastActiveAt`, as a store last wrote it: when a write changes
/// nothing else (a countdown-only change, a new seq), a store rewrites only those two columns instead of
/// the whole row with its QR.
public struct SessionRowContent: Equatable, Sendable {
    var instanceName: String
    var instanceToken: String?
    var numberId: String?
    var phoneNumber: String?
    var state: SessionMachine.Persisted
    var createdAt: Date

    public init(_ s: StoredSession) {
        instanceName = s.instanceName; instanceToken = s.instanceToken; numberId = s.numberId
        phoneNumber = s.phoneNumber; state = s.state; createdAt = s.createdAt
    }
}
