import Foundation

/// SIGINT and SIGTERM end the process cleanly. They are blocked in every thread (`block()`, first thing,
/// before any thread starts: threads inherit the mask) and taken by one thread with sigwait, so a
/// signal that arrives at any moment is held by the kernel until handled, never lost.
enum ShutdownSignals {
    private static var set: sigset_t {
        var s = sigset_t()
        sigemptyset(&s)
        sigaddset(&s, SIGINT)
        sigaddset(&s, SIGTERM)
        return s
    }

    static func block() {
        var s = set
        pthread_sigmask(SIG_BLOCK, &s, nil)
    }

    /// Runs `handler` once, on its own thread, when the first of the signals comes (or came already).
    static func onSignal(_ handler: @escaping @Sendable () -> Void) {
        let waiter = Thread {
            var s = ShutdownSignals.set
            var sig: Int32 = 0
            sigwait(&s, &sig)
            handler()
        }
        waiter.name = "qrgate-signals"
        waiter.start()
    }
}
