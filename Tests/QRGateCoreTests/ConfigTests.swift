import Foundation
import Testing
@testable import QRGateCore

@Suite struct ConfigTests {
    private func load(_ json: String, env: [String: String] = [:]) throws -> Config {
        try Config.load(fileContents: Data(json.utf8), path: "test.json", environment: env)
    }

    @Test func emptyFileGivesDefaults() throws {
        let c = try load("{}")
        #expect(c == Config())
        #expect(c.qr.ttlSeconds == 60)
        #expect(c.server.maxMessageBytes == 65536)
    }

    @Test func nestedKeysOverrideDefaults() throws {
        let c = try load(#"{"qr": {"ttlSeconds": 2, "maxAttempts": 5}, "server": {"allowedOrigins": ["https://a.example"]}}"#)
        #expect(c.qr.ttlSeconds == 2)
        #expect(c.qr.maxAttempts == 5)
        #expect(c.qr.countdownIntervalSeconds == 1)
        #expect(c.server.allowedOrigins == ["https://a.example"])
    }

    @Test func unknownKeyStopsStartupNamingTheKey() {
        #expect(throws: ConfigError.unknownKey("qr.ttlSecs")) { try load(#"{"qr": {"ttlSecs": 2}}"#) }
        #expect(throws: ConfigError.unknownKey("nope")) { try load(#"{"nope": 1}"#) }
    }

    @Test func unknownKeyInsideASessionEntryIsRefusedToo() throws {
        #expect(throws: ConfigError.unknownKey("sessions[0].sesionId")) { try load(#"{"sessions": [{"sesionId": "a"}]}"#) }
        #expect(try load(#"{"sessions": [{"sessionId": "a", "numberId": "1"}]}"#).sessions == [.init(sessionId: "a", numberId: "1")])
    }

    @Test func thePostgresStoreNeedsAUsableURLFromTheFileOrDATABASE_URL() throws {
        #expect(throws: ConfigError.invalid(key: "store.url", reason: "is required when store.mode is postgres (or set DATABASE_URL)")) {
            try load(#"{"store": {"mode": "postgres"}}"#)
        }
        #expect(throws: ConfigError.invalid(key: "store.url", reason: "must start with postgres:// (got mysql://)")) {
            try load(#"{"store": {"mode": "postgres", "url": "mysql://db/x"}}"#)
        }
        #expect(throws: ConfigError.invalid(key: "store.url", reason: "sslmode must be disable, prefer or require (got verify-full)")) {
            try load(#"{"store": {"mode": "postgres", "url": "postgres://u@db/x?sslmode=verify-full"}}"#)
        }
        #expect(throws: ConfigError.invalid(key: "store.sealKey", reason: "must be the base64 of 32 bytes (openssl rand -base64 32)")) {
            try load(#"{"store": {"sealKey": "c2hvcnQ="}}"#)
        }
        let c = try load(#"{"store": {"mode": "postgres"}}"#, env: ["DATABASE_URL": "postgresql://qrgate:pw@127.0.0.1:5433/qrgate"])
        #expect(c.store.mode == .postgres && c.store.url == "postgresql://qrgate:pw@127.0.0.1:5433/qrgate")
        #expect(throws: ConfigError.self) { try load(#"{"store": {"mode": "mysql"}}"#) }
    }

    @Test func wrongTypeNamesTheKey() {
        #expect(throws: ConfigError.wrongType(key: "qr.ttlSeconds", expected: "an integer")) { try load(#"{"qr": {"ttlSeconds": "60"}}"#) }
        #expect(throws: ConfigError.wrongType(key: "qr", expected: "an object")) { try load(#"{"qr": 3}"#) }
        #expect(throws: ConfigError.wrongType(key: "qr.ttlSeconds", expected: "an integer")) { try load(#"{"qr": {"ttlSeconds": 1.5}}"#) }
        #expect(throws: ConfigError.wrongType(key: "server.allowedOrigins", expected: "an array")) { try load(#"{"server": {"allowedOrigins": "x"}}"#) }
    }

    @Test func wrongArrayElementTypeNamesTheKey() throws {
        do {
            _ = try load(#"{"server": {"allowedOrigins": [1]}}"#)
            Issue.record("accepted a number as an origin")
        } catch let error as ConfigError {
            #expect(error.description.contains("server.allowedOrigins"))
        }
    }

    @Test func malformedJSONIsRefused() {
        #expect(throws: ConfigError.self) { try load(#"{"qr": "#) }
        #expect(throws: ConfigError.malformed(path: "test.json", reason: "the top level must be an object")) { try load("[1]") }
    }

    @Test func environmentOverridesTheFile() throws {
        let c = try load(#"{"qr": {"ttlSeconds": 30}}"#, env: ["QRGATE_QR_TTLSECONDS": "2", "QRGATE_LOG_LEVEL": "debug",
                                                              "QRGATE_SERVER_ALLOWEDORIGINS": "https://a, https://b", "PATH": "/bin"])
        #expect(c.qr.ttlSeconds == 2)
        #expect(c.log.level == "debug")
        #expect(c.server.allowedOrigins == ["https://a", "https://b"])
    }

    @Test func badEnvironmentIsNamed() {
        #expect(throws: ConfigError.badEnvironment(variable: "QRGATE_QR_TTLSECONDS", reason: "must be an integer, got \"soon\"")) {
            try load("{}", env: ["QRGATE_QR_TTLSECONDS": "soon"])
        }
        #expect(throws: ConfigError.badEnvironment(variable: "QRGATE_QR_NOPE", reason: "does not name a configuration key")) {
            try load("{}", env: ["QRGATE_QR_NOPE": "1"])
        }
    }

    @Test func outOfRangeValuesAreRefused() {
        #expect(throws: ConfigError.invalid(key: "qr.ttlSeconds", reason: "must be greater than 0, got 0")) { try load(#"{"qr": {"ttlSeconds": 0}}"#) }
        #expect(throws: ConfigError.self) { try load(#"{"qr": {"errorCorrection": "Z"}}"#) }
        #expect(throws: ConfigError.self) { try load(#"{"log": {"level": "loud"}}"#) }
        #expect(throws: ConfigError.invalid(key: "server.tlsKey", reason: "TLS needs both tlsCert and tlsKey")) { try load(#"{"server": {"tlsCert": "a.pem"}}"#) }
        #expect(throws: ConfigError.invalid(key: "server.pingIntervalSeconds", reason: "must be 1 to 3600, got 9000000000000")) {
            try load(#"{"server": {"pingIntervalSeconds": 9000000000000}}"#)
        }
        #expect(throws: ConfigError.invalid(key: "server.handshakeTimeoutSeconds", reason: "must be 1 to 300, got 0")) {
            try load(#"{"server": {"handshakeTimeoutSeconds": 0}}"#)
        }
        #expect(throws: ConfigError.invalid(key: "cluster.leaseSeconds", reason: "must be between 1 and 600, got 0.5")) { try load(#"{"cluster": {"leaseSeconds": 0.5}}"#) }
        #expect(throws: ConfigError.invalid(key: "cluster.nodeId", reason: "must be 1–64 characters of A–Z a–z 0–9 . _ : @ -")) { try load(#"{"cluster": {"nodeId": "node one"}}"#) }
        #expect(throws: ConfigError.self) { try load(#"{"cluster": {"orderTimeoutSeconds": 0}}"#) }
        #expect((try? load(#"{"cluster": {"nodeId": "gw-1", "leaseSeconds": 5}}"#))?.cluster == Config.Cluster(nodeId: "gw-1", leaseSeconds: 5))
    }

    @Test func shippedConfigFileLoads() throws {
        let path = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../Config/qrgate.json").path
        _ = try Config.load(path: path, required: true, environment: [:])
    }
}
