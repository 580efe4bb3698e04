/// WebSocket close codes the gateway uses (documented in docs/PROTOCOL.md).
public enum CloseCode {
    /// RFC 6455: a message over `server.maxMessageBytes`.
    public static let messageTooBig = 1009
    /// The gateway is shutting down.
    public static let goingAway = 1001
    /// The outbox stayed over its bound: the peer reads too slowly.
    public static let slowConsumer = 4008
    /// Too many messages per second from this peer.
    public static let rateLimited = 4029
    /// Credentials missing, wrong or expired.
    public static let unauthorized = 4001
}
