import Foundation
import Testing
@testable import QRGatePostgres

/// What can be checked without a server (the store itself runs against a real PostgreSQL in
/// Tests/e2e/test_postgres.py, which starts a throwaway cluster).
@Suite struct PostgresStoreTests {
    @Test func theURLIsLoggedWithItsPasswordMasked() {
        let shown = PostgresStore.masked("postgres://qrgate:s3cret-pass-word@db.internal:5432/qrgate?sslmode=require")
        #expect(!shown.contains("s3cret-pass-word") && shown.contains("db.internal:5432/qrgate") && shown.contains("qrgate:"))
        #expect(PostgresStore.masked("postgres://db/qrgate") == "postgres://db/qrgate")
    }

    @Test func aBadURLIsRefusedWithTheReason() {
        #expect(throws: PostgresStoreError.self) { try PostgresStore.target(url: "http://db/x") }
        let c = try? PostgresStore.target(url: "postgres://u:p@127.0.0.1:6543/app").pool
        #expect(c?.port == 6543 && c?.database == "app" && c?.username == "u")
    }

    @Test func aDatabaseThatIsNotThereFailsStartUpWithinTheTimeoutAndSaysWhere() async throws {
        // A closed loopback port: refused at once, reported with the masked URL.
        let started = ContinuousClock.now
        do {
            _ = try await PostgresStore.open(url: "postgres://u:hidden-pw@127.0.0.1:1/none", sealKey: "", eventCapacity: 10,
                                             eventMaxAgeSeconds: 60, logger: .init(label: "test"))
            Issue.record("opened a store on a closed port")
        } catch {
            let text = "\(error)"
            #expect(text.contains("127.0.0.1:1") && !text.contains("hidden-pw"), "\(text)")
        }
        // Refused at once, not after PostgresNIO's minute of retries (the bound is the start-up timeout, loose on a busy machine).
        #expect(ContinuousClock.now - started < .seconds(PostgresStore.timeoutSeconds * 2))
    }
}
