private import CCurl
import Foundation


/// An HTTP request for the libcurl client.
public struct ClientRequest: Sendable {
    public var method: String
    public var url: String
    public var headers: [(String, String)]
    public var body: [UInt8]?
    /// Whole-request deadline.
    public var timeoutSeconds: Double
    /// Bodies over this many bytes fail with `.bodyTooLarge`.
    public var maxResponseBytes: Int
    /// Send the path exactly as written (no "/../" squashing): for probing servers.
    public var pathAsIs: Bool

    public init(method: String = "GET", url: String, headers: [(String, String)] = [], body: [UInt8]? = nil,
                timeoutSeconds: Double = 8, maxResponseBytes: Int = 1 << 20, pathAsIs: Bool = false) {
        self.method = method; self.url = url; self.headers = headers; self.body = body
        self.timeoutSeconds = timeoutSeconds; self.maxResponseBytes = maxResponseBytes; self.pathAsIs = pathAsIs
    }
}

/// What came back.
public struct ClientResponse: Sendable {
    public var status: Int
    public var contentType: String?
    public var body: [UInt8]
    public var text: String { String(decoding: body, as: UTF8.self) }
}

/// Transport failures, each with a reason safe to show to a user (no URLs with credentials, no keys).
public enum HTTPClientError: Error, Equatable, CustomStringConvertible {
    case timeout(seconds: Double)
    case connectionRefused
    case unresolvable
    case bodyTooLarge(limit: Int)
    case invalidRequest(String)
    case transport(String)

    public var description: String {
        switch self {
        case let .timeout(s): "no answer within \(s) s"
        case .connectionRefused: "connection refused"
        case .unresolvable: "host name could not be resolved"
        case let .bodyTooLarge(limit): "response body over \(limit) bytes"
        case let .invalidRequest(why): "invalid request: \(why)"
        case let .transport(why): "transport error: \(why)"
        }
    }
}

/// One libcurl easy handle set up for one request; owns the handle, its header list and its buffers.
final class CurlTransfer {
    /// `curl_global_init` runs once, before the first handle (it is not thread-safe itself).
    static let globalInit: Void = { curl_global_init(Int(CURL_GLOBAL_DEFAULT)) }()

    let handle: UnsafeMutableRawPointer
    let request: ClientRequest
    private var headerList: UnsafeMutablePointer<curl_slist>?
    private var received: [UInt8] = []
    private var overflowed = false
    /// curl writes its error text here at any time during the transfer, so it is memory this transfer
    /// owns until `deinit` (a pointer into a Swift array would dangle once the closure returned).
    private let errorBuffer: UnsafeMutablePointer<CChar> = {
        let p = UnsafeMutablePointer<CChar>.allocate(capacity: Int(CURL_ERROR_SIZE) + 1)
        p.initialize(repeating: 0, count: Int(CURL_ERROR_SIZE) + 1)
        return p
    }()

    init(_ request: ClientRequest) throws(HTTPClientError) {
        _ = CurlTransfer.globalInit
        guard let h = curl_easy_init() else { throw .transport("curl_easy_init failed") }
        handle = h
        self.request = request
        // Unretained: whoever runs the transfer keeps it alive until curl is done with it.
        let ref = Unmanaged.passUnretained(self)
        guard request.url.hasPrefix("http://") || request.url.hasPrefix("https://") else {
            throw .invalidRequest("URL must start with http:// or https://")
        }
        qg_curl_setopt_ptr(h, CURLOPT_URL, request.url)
        qg_curl_setopt_long(h, CURLOPT_NOSIGNAL, 1)
        qg_curl_setopt_long(h, CURLOPT_TIMEOUT_MS, Int(request.timeoutSeconds * 1000))
        qg_curl_setopt_long(h, CURLOPT_CONNECTTIMEOUT_MS, Int(min(request.timeoutSeconds, 5) * 1000))
        qg_curl_setopt_long(h, CURLOPT_PROTOCOLS, Int(CURLPROTO_HTTP | CURLPROTO_HTTPS))
        qg_curl_setopt_long(h, CURLOPT_FOLLOWLOCATION, 0)
        if request.pathAsIs { qg_curl_setopt_long(h, CURLOPT_PATH_AS_IS, 1) }
        qg_curl_setopt_write(h, qgCurlWrite)
        qg_curl_setopt_ptr(h, CURLOPT_WRITEDATA, ref.toOpaque())
        qg_curl_setopt_ptr(h, CURLOPT_ERRORBUFFER, errorBuffer)
        switch request.method {
        case "GET": break
        case "HEAD": qg_curl_setopt_long(h, CURLOPT_NOBODY, 1)
        default: qg_curl_setopt_ptr(h, CURLOPT_CUSTOMREQUEST, request.method)
        }
        if let body = request.body {
            qg_curl_setopt_off(h, CURLOPT_POSTFIELDSIZE_LARGE, curl_off_t(body.count))
            body.withUnsafeBytes { _ = qg_curl_setopt_ptr(h, CURLOPT_COPYPOSTFIELDS, $0.baseAddress ?? UnsafeRawPointer(bitPattern: 1)) }
            if request.method == "GET" { qg_curl_setopt_long(h, CURLOPT_POST, 1) }
        }
        var list: UnsafeMutablePointer<curl_slist>?
        for (name, value) in request.headers {
            // Checked byte-wise: "\r\n" is one Character in Swift, so a Character test would miss it.
            guard !name.utf8.contains(where: { $0 == 13 || $0 == 10 || $0 == 58 }), !value.utf8.contains(where: { $0 == 13 || $0 == 10 }) else {
                curl_slist_free_all(list)
                throw .invalidRequest("header \(name) contains a line break")
            }
            list = curl_slist_append(list, "\(name): \(value)")
        }
        // Without this, curl sends "Expect: 100-continue" for bodies over 1 KiB and waits a second.
        list = curl_slist_append(list, "Expect:")
        headerList = list
        qg_curl_setopt_ptr(h, CURLOPT_HTTPHEADER, list)
    }

    deinit {
        curl_easy_cleanup(handle)
        curl_slist_free_all(headerList)
        errorBuffer.deallocate()
    }

    fileprivate func append(_ bytes: UnsafeRawBufferPointer) -> Bool {
        if received.count + bytes.count > request.maxResponseBytes {
            overflowed = true
            return false
        }
        received.append(contentsOf: bytes)
        return true
    }

    /// Turns the transfer's outcome into a response or a typed failure.
    fileprivate func result(_ code: CURLcode) -> Result<ClientResponse, HTTPClientError> {
        switch code {
        case CURLE_OK:
            var status = 0
            qg_curl_getinfo_long(handle, CURLINFO_RESPONSE_CODE, &status)
            var ct: UnsafeMutablePointer<CChar>?
            qg_curl_getinfo_str(handle, CURLINFO_CONTENT_TYPE, &ct)
            return .success(ClientResponse(status: status, contentType: ct.map { String(cString: $0) }, body: received))
        case CURLE_OPERATION_TIMEDOUT: return .failure(.timeout(seconds: request.timeoutSeconds))
        case CURLE_COULDNT_CONNECT: return .failure(.connectionRefused)
        case CURLE_COULDNT_RESOLVE_HOST: return .failure(.unresolvable)
        case CURLE_WRITE_ERROR where overflowed: return .failure(.bodyTooLarge(limit: request.maxResponseBytes))
        default:
            let detail = String(cString: errorBuffer)
            return .failure(.transport(detail.isEmpty ? String(cString: curl_easy_strerror(code)) : detail))
        }
    }

    func result(rawCode: UInt32) -> Result<ClientResponse, HTTPClientError> { result(CURLcode(rawValue: rawCode)) }

    /// Runs the transfer on the calling thread.
    func perform() -> Result<ClientResponse, HTTPClientError> { result(curl_easy_perform(handle)) }
}

private func qgCurlWrite(_ data: UnsafeMutablePointer<CChar>?, _ size: Int, _ count: Int, _ user: UnsafeMutableRawPointer?) -> Int {
    guard let user, let data else { return 0 }
    let n = size * count
    let transfer = Unmanaged<CurlTransfer>.fromOpaque(user).takeUnretainedValue()
    return transfer.append(UnsafeRawBufferPointer(start: data, count: n)) ? n : 0
}

/// Blocking HTTP over libcurl: one request on the calling thread.
public enum HTTPClient {
    public static func perform(_ request: ClientRequest) -> Result<ClientResponse, HTTPClientError> {
        do { return try CurlTransfer(request).perform() } catch { return .failure(error) }
    }
}
