import Foundation

/// A libwebsockets service thread as a Swift `SerialExecutor` (the pattern swift-nio uses for its
/// event loops): `enqueue` appends the job and wakes the loop with `lws_cancel_service`; the loop runs
/// the jobs in `LWS_CALLBACK_EVENT_WAIT_CANCELLED`. Actors whose `unownedExecutor` is this executor run
/// on the loop thread, so `await` on them is a checked hop onto the loop.
///
/// `@unchecked Sendable`: the job queue and the wake-up hook are guarded by `lock`; `thread` is written
/// once by the loop thread before the first job runs and read only to assert isolation.
public final class LoopExecutor: SerialExecutor, TaskExecutor, @unchecked Sendable {
    private let lock = NSLock()
    private var jobs: [UnownedJob] = []
    private var wake: (@Sendable () -> Void)?
    private var loopThread: pthread_t?

    init() {}

    public func enqueue(_ job: consuming ExecutorJob) {
        let unowned = UnownedJob(job)
        // Woken under the lock, so `detach()` guarantees no wake reaches a destroyed context.
        lock.lock()
        jobs.append(unowned)
        wake?()
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

    public var isLoopThread: Bool {
        lock.lock()
        defer { lock.unlock() }
        guard let t = loopThread else { return false }
        return pthread_equal(t, pthread_self()) != 0
    }

    /// Called by the loop thread once its context exists: from now on `enqueue` wakes it.
    func attach(wake: @escaping @Sendable () -> Void) {
        lock.lock()
        loopThread = pthread_self()
        self.wake = wake
        lock.unlock()
        wake()
    }

    /// Called by the loop thread as it ends: later jobs wait for nobody.
    func detach() {
        lock.lock()
        wake = nil
        lock.unlock()
    }

    /// Runs every job queued so far (on the loop thread).
    func runQueued() {
        lock.lock()
        let batch = jobs
        jobs.removeAll(keepingCapacity: true)
        lock.unlock()
        let serial = asUnownedSerialExecutor(), task = asUnownedTaskExecutor()
        for job in batch { job.runSynchronously(isolatedTo: serial, taskExecutor: task) }
    }
}
