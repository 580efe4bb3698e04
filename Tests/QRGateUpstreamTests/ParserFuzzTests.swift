import Foundation
import Testing
import QRGateCore
@testable import QRGateUpstream

/// Property tests: every parser facing the outside gets many random and mutated inputs (seeded, so a
/// failure reproduces) and must answer with a value or a typed error — never trap.
@Suite struct ParserFuzzTests {
    /// SplitMix64: a seeded generator so every run sees the same inputs.
    struct SeededRNG: RandomNumberGenerator {
        var state: UInt64
        mutating func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
    }

    static let seeds: [String] = [
        #"{"op":"subscribe","session":"demo","token":"abc","since":3}"#,
        #"{"op":"refresh","session":"s-1"}"#,
        #"{"pairingCode":"ABCD1234","code":"2@abc,def=,ghi=,jkl","base64":"data:image/png;base64,iVBORw0KGgo=","count":3}"#,
        #"{"instance":{"instanceName":"x","state":"open"}}"#,
        #"{"event":"qrcode.updated","instance":"x","data":{"qrcode":{"instance":"x","code":"2@z","base64":"data:image/png;base64,AA"}},"apikey":"k"}"#,
        #"{"event":"connection.update","instance":"x","data":{"instance":"x","state":"close","statusReason":408}}"#,
        #"{"qr":{"ttlSeconds":2},"server":{"allowedOrigins":["a"]},"sessions":[{"sessionId":"a"}]}"#,
    ]

    func mutate(_ base: [UInt8], _ rng: inout SeededRNG) -> [UInt8] {
        var b = base
        for _ in 0..<Int.random(in: 1...6, using: &rng) {
            switch Int.random(in: 0..<6, using: &rng) {
            case 0 where !b.isEmpty: b[Int.random(in: 0..<b.count, using: &rng)] = UInt8.random(in: 0...255, using: &rng)
            case 1 where !b.isEmpty: b.removeSubrange(Int.random(in: 0..<b.count, using: &rng)...)
            case 2: b.insert(contentsOf: Array("[{\"\\u0000:,9e999".utf8).shuffled(using: &rng).prefix(4), at: Int.random(in: 0...b.count, using: &rng))
            case 3 where b.count > 2: b.swapAt(Int.random(in: 0..<b.count, using: &rng), Int.random(in: 0..<b.count, using: &rng))
            case 4: b += b.prefix(Int.random(in: 0...min(64, b.count), using: &rng))
            default: b.append(UInt8.random(in: 0...255, using: &rng))
            }
        }
        return b
    }

    func inputs(_ n: Int, seed: UInt64) -> [[UInt8]] {
        var rng = SeededRNG(state: seed)
        return (0..<n).map { i in
            if i % 4 == 0 { return (0..<Int.random(in: 0...200, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) } }
            return mutate(Array(Self.seeds[i % Self.seeds.count].utf8), &rng)
        }
    }

    @Test func clientMessagesNeverTrap() {
        var accepted = 0, refused = 0
        for input in inputs(20_000, seed: 1) {
            do { _ = try ClientMessage.parse(input); accepted += 1 } catch { refused += 1; #expect(!error.reason.isEmpty) }
        }
        #expect(accepted + refused == 20_000)
        #expect(refused > 0)
    }

    @Test func upstreamBodiesAndWebhooksNeverTrap() {
        var outcomes = 0
        for input in inputs(20_000, seed: 2) {
            _ = EvolutionParsing.connect(input)
            _ = EvolutionParsing.connectionState(input)
            _ = EvolutionParsing.created(input, name: "x")
            if case let .failure(e) = EvolutionParsing.webhook(input) { #expect(!e.description.isEmpty) }
            outcomes += 1
        }
        #expect(outcomes == 20_000)
    }

    @Test func configFilesNeverTrap() {
        var refused = 0
        for input in inputs(5_000, seed: 3) {
            do { _ = try Config.load(fileContents: Data(input), environment: [:]) } catch { refused += 1; #expect(!error.description.isEmpty) }
        }
        #expect(refused > 0)
    }
}
