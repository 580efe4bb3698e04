/// How many upstream requests may be in flight, adapted to how the upstream answers, the way TCP finds
/// its window: grow while answers come back well and every slot is busy, shrink on signs of overload.
///
/// - Growth: until the first sign of overload, each good answer that finished while every slot was taken
///   adds one slot, so an upstream that keeps up sees the limit double every round trip (16 → 256 in
///   four), up to `max`; after it, one slot per round trip (TCP's slow start, then congestion avoidance).
/// - Decrease: an overload answer (timeout, refused connection, 429, 502–504) or an answer slower than
///   `slowSeconds` (half the request timeout: the upstream is queueing towards timeouts) cuts the limit to
///   70 %, at most once per round trip (once per `slots` answers), down to `min`.
///
/// No latency baseline: one was tried and mistook a change of the request mix (fast state checks, then
/// slow connects) or of the upstream for queueing — a 1 000-session refresh after fast session creation
/// collapsed to 4 in flight. Pure value; the curl thread owns one.
public struct AdaptiveLimit: Sendable, Equatable {
    public let min: Int
    public let max: Int
    /// Answers slower than this count as the upstream struggling.
    public let slowSeconds: Double
    /// The current limit (whole slots: `slots`).
    public private(set) var value: Double
    /// Doubling per round trip until the first overload.
    public private(set) var slowStart = true
    private var answersSinceDecrease = Int.max
    /// The slots in use when it was last cut: that many answers belong to the round trip that caused it.
    private var inFlightAtDecrease = 0

    static let decrease = 0.7

    public init(initial: Int, min: Int, max: Int, slowSeconds: Double = .infinity) {
        self.max = Swift.max(1, max)
        self.min = Swift.max(1, Swift.min(min, self.max))
        self.slowSeconds = slowSeconds
        value = Double(Swift.min(Swift.max(initial, self.min), self.max))
    }

    /// A fixed limit (adaptation switched off).
    public static func fixed(_ n: Int) -> AdaptiveLimit { AdaptiveLimit(initial: n, min: n, max: n) }

    public var slots: Int { Int(value) }

    /// One answer: how long it took, whether it failed with an overload sign, and whether every slot
    /// was in use when it finished (only then does a good answer say more slots would be used).
    public mutating func record(seconds: Double, overloaded: Bool, saturated: Bool) {
        if answersSinceDecrease < Int.max { answersSinceDecrease += 1 }
        if overloaded || seconds > slowSeconds {
            // The answers of the round trip that overloaded it say the same thing: one cut per round trip.
            guard answersSinceDecrease > inFlightAtDecrease else { return }
            inFlightAtDecrease = slots
            value = Swift.max(Double(min), value * Self.decrease)
            slowStart = false
            answersSinceDecrease = 0
        } else if saturated {
            value = Swift.min(Double(max), value + (slowStart ? 1 : 1 / value))
        }

    }
}
