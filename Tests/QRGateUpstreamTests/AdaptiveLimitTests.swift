import Testing
@testable import QRGateHTTP

/// The upstream concurrency limit, driven by simulated upstreams: one round trip = one wave of `slots` answers.
@Suite struct AdaptiveLimitTests {
    /// Runs `sessions` requests through the limit against an upstream whose latency and overload answers
    /// depend on how many are in flight; returns the seconds the batch took and the limit at the end.
    func cycle(_ sessions: Int, limit start: AdaptiveLimit, latency: (Int) -> Double, overloaded: (Int) -> Bool = { _ in false })
        -> (seconds: Double, limit: AdaptiveLimit, steady: Double) {
        var limit = start, left = sessions, clock = 0.0, waves: [Int] = []
        while left > 0 {
            let slots = limit.slots
            let inFlight = min(left, slots)
            waves.append(inFlight)
            let rtt = latency(inFlight)
            for _ in 0..<inFlight {
                // A wave that used every slot: its answers come back with every slot busy.
                limit.record(seconds: rtt, overloaded: overloaded(inFlight), saturated: inFlight == slots)
            }
            left -= inFlight
            clock += rtt
        }
        // The average in flight over the second half of the waves: where it settled.
        let late = waves.suffix(waves.count / 2)
        return (clock, limit, late.isEmpty ? 0 : Double(late.reduce(0, +)) / Double(late.count))
    }

    @Test func aSteadyUpstreamGetsTheCeilingWithinAFewRoundTrips() {
        let r = cycle(1000, limit: AdaptiveLimit(initial: 16, min: 4, max: 256, slowSeconds: 4), latency: { _ in 1.0 })
        // 16 + 32 + 64 + 128, then 256 at a time: seconds, where the old fixed 32 took 32 s.
        #expect(r.seconds <= 10)
        #expect(r.limit.slots == 256)
    }

    @Test func anUpstreamThatQueuesTowardsTheTimeoutIsHeldBelowIt() {
        // Answers in 0.5 s up to 20 at once, then queues: over 4 s (half an 8 s timeout) past 160 in flight.
        let r = cycle(5000, limit: AdaptiveLimit(initial: 16, min: 4, max: 256, slowSeconds: 4), latency: { n in 0.5 * max(1, Double(n) / 20) })
        // It settles where answers take about half the timeout (~160 in flight), never at the 256 ceiling.
        #expect(r.steady <= 175 && r.steady >= 100, "settled at \(r.steady)")
    }

    @Test func anUpstreamThatRefusesPastTwentyIsHeldNearTwenty() {
        let r = cycle(5000, limit: AdaptiveLimit(initial: 16, min: 4, max: 256, slowSeconds: 4), latency: { _ in 0.2 }, overloaded: { $0 > 20 })
        #expect(r.steady <= 22 && r.steady >= 12, "settled at \(r.steady)")
    }

    @Test func overloadAnswersShrinkItToTheFloorAndItRecovers() {
        var limit = AdaptiveLimit(initial: 64, min: 4, max: 256)
        // One cut per round trip: a whole wave of failures cuts once.
        for _ in 0..<64 { limit.record(seconds: 0.01, overloaded: true, saturated: true) }
        #expect(limit.slots == 44)
        for _ in 0..<1000 { limit.record(seconds: 0.01, overloaded: true, saturated: true) }
        #expect(limit.slots == 4)
        // Then it grows again, one slot per round trip of good answers.
        for _ in 0..<(4 + 5 + 6 + 7) { limit.record(seconds: 0.01, overloaded: false, saturated: true) }
        #expect(limit.slots == 7 || limit.slots == 8)
    }

    @Test func idleSlotsDoNotGrowItAndFixedStaysFixed() {
        var limit = AdaptiveLimit(initial: 16, min: 4, max: 256)
        for _ in 0..<100 { limit.record(seconds: 0.1, overloaded: false, saturated: false) }
        #expect(limit.slots == 16)
        var fixed = AdaptiveLimit.fixed(32)
        for _ in 0..<50 { fixed.record(seconds: 0.1, overloaded: false, saturated: true) }
        for _ in 0..<50 { fixed.record(seconds: 9, overloaded: true, saturated: true) }
        #expect(fixed.slots == 32)
    }
}
