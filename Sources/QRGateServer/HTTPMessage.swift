import Foundation
import QRGateCore

/// One connection (HTTP or WebSocket) as the event loop knows it.
public typealias ConnectionID = UInt64

/// An HTTP request as read from libwebsockets, copied into Swift values.
public struct HTTPRequest: Sendable {
    public enum Method: String, Sendable { case get = "GET", head = "HEAD", post = "POST", put = "PUT", delete = "DELETE", patch = "PATCH", options = "OPTIONS" }
    public var method: Method
    /// Decoded path, without the query string.
    public var path: String
    /// Decoded query arguments; the first value wins for repeated names.
    public var query: [String: String]
    /// Selected headers, names lower-cased.
    public var headers: [String: String]
    public var body: [UInt8]
    public var peer: String

    public init(method: Method, path: String, query: [String: String] = [:], headers: [String: String] = [:], body: [UInt8] = [], peer: String = "") {
        self.method = method; self.path = path; self.query = query; self.headers = headers; self.body = body; self.peer = peer
    }
}

/// What the gateway answers to an HTTP request.
public struct HTTPResponse: Sendable {
    public enum Body: Sendable {
        case bytes([UInt8])
        /// A file under the static root, streamed by libwebsockets.
        case file(path: String)
    }
    public var status: Int
    public var contentType: String
    public var headers: [(String, String)]
    public var body: Body

    public init(status: Int, contentType: String, headers: [(String, String)] = [], body: Body) {
        self.status = status; self.contentType = contentType; self.headers = headers; self.body = body
    }

    public static func json(_ status: Int, _ object: Any, headers: [(String, String)] = []) -> HTTPResponse {
        let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data("{}".utf8)
        return HTTPResponse(status: status, contentType: "application/json", headers: headers, body: .bytes(Array(data)))
    }

    /// A JSON body written by `JSONValue`'s writer: for answers on hot paths (a webhook's acknowledgement,
    /// 150 a second for a fleet), where `JSONSerialization` of a dictionary was 6 % of an idle fleet's CPU.
    public static func json(_ status: Int, value: JSONValue, headers: [(String, String)] = []) -> HTTPResponse {
        HTTPResponse(status: status, contentType: "application/json", headers: headers, body: .bytes(Array(value.encoded())))
    }

    /// `{"success":false,"error":reason}` with the given status.
    public static func error(_ status: Int, _ reason: String, headers: [(String, String)] = []) -> HTTPResponse {
        json(status, ["success": false, "error": reason], headers: headers)
    }

    /// 405 for a known path asked with a method it does not answer, naming the ones it does (`Allow`).
    public static func methodNotAllowed(_ request: HTTPRequest, allowed: [HTTPRequest.Method]) -> HTTPResponse {
        let names = allowed.map(\.rawValue).joined(separator: ", ")
        return error(405, "method \(request.method.rawValue) not allowed on \(request.path.prefix(200)); use \(names)",
                     headers: [("Allow", names)])
    }

    public static func text(_ status: Int, _ text: String, contentType: String = "text/plain; charset=utf-8") -> HTTPResponse {
        HTTPResponse(status: status, contentType: contentType, body: .bytes(Array(text.utf8)))
    }
}

/// What the loop learnt about a WebSocket when it opened.
public struct WebSocketInfo: Sendable {
    public var path: String
    public var query: [String: String]
    public var origin: String?
    public var authorization: String?
    public var subprotocol: String?
    public var peer: String

    public init(path: String, query: [String: String] = [:], origin: String? = nil, authorization: String? = nil,
                subprotocol: String? = nil, peer: String = "") {
        self.path = path; self.query = query; self.origin = origin; self.authorization = authorization
        self.subprotocol = subprotocol; self.peer = peer
    }
}
