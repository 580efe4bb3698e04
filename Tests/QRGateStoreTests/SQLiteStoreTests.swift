import Foundation
import Testing
import QRGateCore
@testable import QRGateStore

@Suite(.serialized) struct SQLiteStoreTests {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("qrgate-store-\(UUID().uuidString)")
    var path: String { dir.appendingPathComponent("qrgate.sqlite").path }
    let t0 = Date(timeIntervalSince1970: 1_800_000_000)

    func session(_ id: String, seq: Int, status: SessionMachine.Status = .pending, token: String? = "instance-secret-token-123") -> StoredSession {
        StoredSession(id: id, instanceName: "inst-\(id)", instanceToken: token, numberId: "5511", phoneNumber: "5511987654321",
                      state: SessionMachine.Persisted(status: status, qr: SessionQR(code: "2@c\(seq)", pngDataURL: "data:image/png;base64,AA", svg: "<svg/>",
                                                                                    pairingCode: "ABCD-EFGH"),
                                                      qrExpiresAt: t0.addingTimeInterval(60), qrUpdatedAt: t0, attempt: 1,
                                                      connectedAt: nil, lastError: "boom", lastRefreshAt: nil),
                      seq: seq, createdAt: t0, lastActiveAt: t0)
    }

    func writeAndWait(_ store: SQLiteStore, _ s: StoredSession, _ events: [StoredEvent]) throws {
        let done = DispatchSemaphore(value: 0)
        nonisolated(unsafe) var failure: Error?
        store.write(s, events: events) { failure = $0; done.signal() }
        #expect(done.wait(timeout: .now() + 10) == .success)
        if let failure { throw failure }
    }

    @Test func sessionsAndEventsSurviveReopeningWithTheTokenSealed() throws {
        defer { try? FileManager.default.removeItem(at: dir) }
        do {
            let store = try SQLiteStore(path: path, eventCapacity: 3, eventMaxAgeSeconds: 3600)
            for seq in 1...5 {
                try writeAndWait(store, session("a", seq: seq), [StoredEvent(sessionId: "a", seq: seq, action: "qr_expired", payload: Array("{\"seq\":\(seq)}".utf8), at: Date())])
            }
            try writeAndWait(store, session("b", seq: 0, status: .connected, token: nil), [])
            store.close()
        }
        let reopened = try SQLiteStore(path: path, eventCapacity: 3, eventMaxAgeSeconds: 3600)
        let all = try reopened.loadAll()
        #expect(all.map(\.0.id) == ["a", "b"])
        // The code comes back without its pictures (ours are drawn again from it).
        var expected = session("a", seq: 5)
        expected.state.qr?.pictures = QRPictures(svg: "", png: "")
        #expect(all[0].0 == expected)
        #expect(all[0].1.map(\.seq) == [3, 4, 5]) // bounded by count
        #expect(all[1].0.state.status == .connected && all[1].0.instanceToken == nil)
        // The instance token is not in the file in clear.
        let raw = try Data(contentsOf: URL(fileURLWithPath: path))
        let wal = (try? Data(contentsOf: URL(fileURLWithPath: path + "-wal"))) ?? Data()
        // Neither is the phone number linking by pairing code.
        for secret in ["instance-secret-token-123", "5511987654321"] {
            #expect(raw.range(of: Data(secret.utf8)) == nil && wal.range(of: Data(secret.utf8)) == nil, "\(secret) in clear")
        }
        let perms = try FileManager.default.attributesOfItem(atPath: path + ".key")[.posixPermissions] as? Int
        #expect(perms == 0o600)
    }

    @Test func codesNotPicturesAndANewQRSupersedesTheOlderOnes() throws {
        defer { try? FileManager.default.removeItem(at: dir) }
        do {
            let store = try SQLiteStore(path: path, eventCapacity: 100, eventMaxAgeSeconds: 3600)
            for seq in 1...6 {
                let action = seq % 3 == 0 ? "qr_expired" : (seq % 3 == 1 ? "qr_generated" : "pairing_code")
                try writeAndWait(store, session("a", seq: seq), [StoredEvent(sessionId: "a", seq: seq, action: action, payload: Array("{\"seq\":\(seq)}".utf8), at: Date())])
            }
            // An upstream's own PNG is kept, as it came.
            var upstream = session("u", seq: 1)
            upstream.state.qr = SessionQR(code: "2@u", pngDataURL: "data:image/png;base64,UPSTREAM", svg: "<svg>ours</svg>", upstreamImage: true)
            try writeAndWait(store, upstream, [])
            store.close()
        }
        let all = try SQLiteStore(path: path, eventCapacity: 100, eventMaxAgeSeconds: 3600).loadAll()
        // Seq 1 (QR) and 2 (its pairing code) are superseded by the QR of seq 4; the rest stays.
        #expect(all[0].1.map(\.seq) == [3, 4, 5, 6])
        #expect(all[0].0.state.qr?.svg == "" && all[0].0.state.qr?.pngDataURL == "")
        #expect(all[1].0.state.qr == SessionQR(code: "2@u", pngDataURL: "data:image/png;base64,UPSTREAM", svg: "", upstreamImage: true))
        let raw = try Data(contentsOf: URL(fileURLWithPath: path)) + ((try? Data(contentsOf: URL(fileURLWithPath: path + "-wal"))) ?? Data())
        #expect(raw.range(of: Data("<svg".utf8)) == nil)
    }

    @Test func aSeqOnlyChangeKeepsTheRowWhole() throws {
        defer { try? FileManager.default.removeItem(at: dir) }
        do {
            let store = try SQLiteStore(path: path, eventCapacity: 10, eventMaxAgeSeconds: 3600)
            try writeAndWait(store, session("a", seq: 1), [])
            var next = session("a", seq: 1)
            next.seq = 7 // only the numbering moved
            try writeAndWait(store, next, [])
            store.close()
        }
        let row = try SQLiteStore(path: path, eventCapacity: 10, eventMaxAgeSeconds: 3600).loadAll()[0].0
        var expected = session("a", seq: 1)
        expected.seq = 7
        expected.state.qr?.pictures = QRPictures(svg: "", png: "")
        #expect(row == expected)
    }

    @Test func oldEventsAgeOut() throws {
        defer { try? FileManager.default.removeItem(at: dir) }
        let store = try SQLiteStore(path: path, eventCapacity: 100, eventMaxAgeSeconds: 60)
        try writeAndWait(store, session("a", seq: 1), [StoredEvent(sessionId: "a", seq: 1, action: "x", payload: [1], at: Date().addingTimeInterval(-120))])
        try writeAndWait(store, session("a", seq: 2), [StoredEvent(sessionId: "a", seq: 2, action: "x", payload: [2], at: Date())])
        #expect(try store.loadAll()[0].1.map(\.seq) == [2])
    }

    @Test func eventsAreBoundedByBytesOldestFirst() throws {
        defer { try? FileManager.default.removeItem(at: dir) }
        let store = try SQLiteStore(path: path, eventCapacity: 100, eventMaxAgeSeconds: 3600, eventMaxBytes: 2_000)
        for seq in 1...10 {
            try writeAndWait(store, session("a", seq: seq), [StoredEvent(sessionId: "a", seq: seq, action: "x", payload: [UInt8](repeating: 7, count: 500), at: Date())])
        }
        #expect(try store.loadAll()[0].1.map(\.seq) == [7, 8, 9, 10])
        // One event over the bound on its own is still kept: the newest always is.
        try writeAndWait(store, session("a", seq: 11), [StoredEvent(sessionId: "a", seq: 11, action: "x", payload: [UInt8](repeating: 7, count: 5_000), at: Date())])
        #expect(try store.loadAll()[0].1.map(\.seq) == [11])
    }

    @Test func refreshCyclesAreKept() throws {
        defer { try? FileManager.default.removeItem(at: dir) }
        let store = try SQLiteStore(path: path, eventCapacity: 10, eventMaxAgeSeconds: 60)
        store.recordCycle(StoredCycle(startedAt: t0, durationMs: 12, total: 3, refreshed: 2, failed: 1))
        store.recordCycle(StoredCycle(startedAt: t0.addingTimeInterval(60), durationMs: 8, total: 3, refreshed: 3, failed: 0))
        store.close()
        let cycles = try store.recentCycles(limit: 5)
        #expect(cycles.map(\.failed) == [0, 1])
    }
}
