internal import CWebSockets
import Foundation

/// A libwebsockets service thread as a Swift `SerialExecutor` (the pattern swift-nio uses for its
/// event loops): `enqueue` appends the job and wakes the loop with `lws_cancel_service`; the loop runs
/// the jobs in `LWS_CALLBACK_EVENT_WAIT_CANCELLED`. Actors whose `unownedExecutor` is this executor run
/// on the loop thread, so `await` on them is a checked hop onto the loop.
///
/// Besides Swift jobs it runs plain calls (`post`) in the same FIFO order: how another loop hands this
/// one a frame to deliver, or how a loop hands the gateway's loop what its peers said, in order.
///
/// `@unchecked Sendable`: the queue, the context it wakes and the loop thread's identity are all
/// guarded by `lock`.
public final class LoopExecutor: SerialExecutor, TaskExecutor, @unchecked Sendable {
    private enum Work {
        case job(UnownedJob)
        case call(@Sendable () -> Void)
    }
    private let lock = NSLock()
    private var jobs: [Work] = []
    /// The context to wake; nil before the loop runs and after it ended.
    private var context: OpaquePointer?
    private var loopThread: pthread_t?

    init() {}

    public func enqueue(_ job: consuming ExecutorJob) {
        add(.job(UnownedJob(job)))
    }

    /// Runs `call` on the loop thread after everything queued before it. Calls posted after the loop
    /// ended are dropped (their connections are gone).
    public func post(_ call: @escaping @Sendable () -> Void) {
        add(.call(call))
    }

    private func add(_ work: Work) {
        // Woken under the lock, so `detach()` guarantees no wake reaches a destroyed context. One wake is
        // enough for a batch: the loop takes the whole queue at once.
        lock.lock()
        let wasEmpty = jobs.isEmpty
        jobs.append(work)
        if wasEmpty, let context { lws_cancel_service(context) } // the one lws call other threads may make
        lock.unlock()
    }

    public func asUnownedSerialExecutor() -> UnownedSerialExecutor { UnownedSerialExecutor(ordinary: self) }
    /// Also a task executor: `Task(executorPreference:)` starts work on the loop without a hop through
    /// the global pool (which a caller blocked in a synchronous start may be holding).
    public func asUnownedTaskExecutor() -> UnownedTaskExecutor { UnownedTaskExecutor(ordinary: self) }

    /// Traps unless called on the loop thread (what `assumeIsolated` relies on in C callbacks).
    public func checkIsolated() {
        precondition(isLoopThread, "not on this libwebsockets loop's thread")
    }

    var isLoopThread: Bool {
        lock.lock()
        defer { lock.unlock() }
        guard let t = loopThread else { return false }
        return pthread_equal(t, pthread_self()) != 0
    }

    /// Called by the loop thread once its context exists: from now on `enqueue` wakes it, and jobs
    /// queued before are run at the first wake-up.
    func attach(_ context: OpaquePointer) {
        lock.lock()
        loopThread = pthread_self()
        self.context = context
        lws_cancel_service(context)
        lock.unlock()
    }

    /// Called by the loop thread before it destroys the context: later jobs wake nobody.
    func detach() {
        lock.lock()
        context = nil
        lock.unlock()
    }

    /// Runs every job queued so far (on the loop thread).
    func runQueued() {
        lock.lock()
        let batch = jobs
        jobs.removeAll(keepingCapacity: true)
        lock.unlock()
        let serial = asUnownedSerialExecutor(), task = asUnownedTaskExecutor()
        for work in batch {
            switch work {
            case let .job(job): job.runSynchronously(isolatedTo: serial, taskExecutor: task)
            case let .call(call): call()
            }
        }
    }
}
