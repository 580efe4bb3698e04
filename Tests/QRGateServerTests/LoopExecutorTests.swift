import Dispatch
import Logging
import QRGateCore
import Synchronization
import Testing
@testable import QRGateServer

/// The loop's executor on a real libwebsockets loop: FIFO for calls and ordinary jobs, high-priority
/// jobs (the store's answers) ahead of that queue.
@Suite(.serialized)
struct LoopExecutorTests {
    @Test(arguments: [EventLoopKind.libev, .poll])
    func highPriorityJobsRunAheadOfTheQueue(_ kind: EventLoopKind) async throws {
        let server = LWSServer(options: LWSServerOptions(host: "127.0.0.1", port: 0, loops: 1, eventLoop: kind),
                               logger: Logger(label: "loop-executor-test"))
        try server.start()
        defer { server.stop() }
        let executor = server.executor
        let order = Recorder()
        let blocked = DispatchSemaphore(value: 0), release = DispatchSemaphore(value: 0)
        executor.post {
            // Queued together, so the loop takes both in one batch: a call that holds the loop, then an
            // ordinary call behind it.
            executor.post {
                blocked.signal()
                _ = release.wait(timeout: .now() + 20)
            }
            executor.post { order.append("queued call") }
        }
        #expect(blocked.wait(timeout: .now() + 10) == .success)
        // While the loop is held: an ordinary job and a high-priority one arrive after the queued call.
        Task(executorPreference: executor, priority: .medium) { [order, executor] in
            order.append(executor.isLoopThread ? "medium-priority task" : "medium-priority task off the loop")
        }
        Task(executorPreference: executor, priority: .high) { [order, executor] in
            order.append(executor.isLoopThread ? "high-priority task" : "high-priority task off the loop")
        }
        release.signal()
        let deadline = ContinuousClock.now + .seconds(10)
        while order.entries.count < 3, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(5)) }
        // The high-priority job runs before the next item of the batch; the rest keep their order.
        #expect(order.entries == ["high-priority task", "queued call", "medium-priority task"])
    }
}

/// What ran, in order (any thread).
private final class Recorder: Sendable {
    private let list = Mutex<[String]>([])
    func append(_ s: String) { list.withLock { $0.append(s) } }
    var entries: [String] { list.withLock { $0 } }
}
