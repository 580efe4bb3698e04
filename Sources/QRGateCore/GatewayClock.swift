import Foundation
import Synchronization

/// The one clock the runtime reads: session deadlines, loop timers and rate limits all come from it,
/// so tests drive the whole runtime with a `ManualClock` and no sleeps.
public protocol GatewayClock: Sendable {
    func now() -> Date
}

/// Wall-clock time.
public struct SystemClock: GatewayClock {
    public init() {}
    public func now() -> Date { Date() }
}

/// A clock that moves only when told to (tests).
public final class ManualClock: GatewayClock {
    private let current: Mutex<Date>
    public init(_ start: Date = Date(timeIntervalSince1970: 1_800_000_000)) { current = Mutex(start) }
    public func now() -> Date { current.withLock { $0 } }
    public func advance(by seconds: Double) { current.withLock { $0 = $0.addingTimeInterval(seconds) } }
}
