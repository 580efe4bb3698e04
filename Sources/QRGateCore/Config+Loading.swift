import Foundation

extension Config {
    /// Environment variables that are not `QRGATE_*` but name a key (the names existing deployments use).
    public static let environmentAliases: [String: [String]] = [
        "EVOLUTION_API_BASE_URL": ["upstream", "baseURL"],
        "EVOLUTION_API_KEY": ["upstream", "apiKey"],
        "SUPABASE_JWT_SECRET": ["auth", "supabase", "jwtSecret"],
        "DATABASE_URL": ["store", "url"],
    ]

    /// Builds a configuration from the JSON text of a file (nil: defaults only) and the environment.
    /// Unknown keys and wrong types stop with an error naming the key.
    public static func load(fileContents: Data?, path: String = "config", environment: [String: String] = [:]) throws(ConfigError) -> Config {
        var tree = defaultsTree()
        if let fileContents {
            let file: JSONValue
            do { file = try JSONDecoder().decode(JSONValue.self, from: fileContents) } catch {
                throw .malformed(path: path, reason: jsonErrorReason(error))
            }
            guard case .object = file else { throw .malformed(path: path, reason: "the top level must be an object") }
            tree = try merge(file, into: tree, at: [])
        }
        for (name, value) in environment.sorted(by: { $0.key < $1.key }) {
            let keyPath: [String]
            if let alias = environmentAliases[name] { keyPath = alias }
            else if name.hasPrefix("QRGATE_") { keyPath = name.dropFirst(7).split(separator: "_").map(String.init) }
            else { continue }
            tree = try override(tree, variable: name, path: keyPath, raw: value)
        }
        let config: Config
        do { config = try JSONDecoder().decode(Config.self, from: tree.encoded()) } catch let error as DecodingError {
            throw decodingFailure(error)
        } catch { throw .malformed(path: path, reason: "\(error)") }
        try config.validate()
        return config
    }

    /// Reads `path`; a missing file is an error only when `required`.
    public static func load(path: String, required: Bool, environment: [String: String]) throws(ConfigError) -> Config {
        let data: Data?
        if FileManager.default.fileExists(atPath: path) {
            do { data = try Data(contentsOf: URL(fileURLWithPath: path)) } catch {
                throw .unreadable(path: path, reason: error.localizedDescription)
            }
        } else if required {
            throw .unreadable(path: path, reason: "no such file")
        } else {
            data = nil
        }
        return try load(fileContents: data, path: path, environment: environment)
    }

    /// Keys of earlier versions: an old configuration gets told what replaced them.
    static let renamedKeys: [String: String] = [
        "server.outboxLimit": "was replaced by server.outboxBytes (unsent bytes, default 4194304) and server.slowConsumerSeconds (default 10)",
    ]

    static func defaultsTree() -> JSONValue {
        // Encoding the defaults gives every key, so the file and the environment are checked against them.
        (try? JSONDecoder().decode(JSONValue.self, from: JSONEncoder().encode(Config()))) ?? .object([:])
    }

    private static func merge(_ value: JSONValue, into base: JSONValue, at path: [String]) throws(ConfigError) -> JSONValue {
        let key = path.joined(separator: ".")
        switch (base, value) {
        case let (.object(b), .object(v)):
            var out = b
            for (k, sub) in v {
                guard let existing = b[k] else {
                    let key = (path + [k]).joined(separator: ".")
                    if let replaced = renamedKeys[key] { throw .invalid(key: key, reason: replaced) }
                    throw .unknownKey(key)
                }
                out[k] = try merge(sub, into: existing, at: path + [k])
            }
            return .object(out)
        case (.object, _): throw .wrongType(key: key, expected: "an object")
        case (.int, .int), (.bool, .bool), (.string, .string), (.array, .array), (.double, .double), (.double, .int):
            return value
        case (.int, .double):
            // JSON writes the default 60.0 as 60: ask the struct itself whether the key is a Double.
            if doubleKeys.contains(key) { return value }
            throw .wrongType(key: key, expected: "an integer")
        default: throw .wrongType(key: key, expected: base.kind)
        }
    }

    private static func override(_ tree: JSONValue, variable: String, path: [String], raw: String) throws(ConfigError) -> JSONValue {
        guard let first = path.first else { throw .badEnvironment(variable: variable, reason: "does not name a configuration key") }
        guard case var .object(o) = tree,
              let key = o.keys.first(where: { $0.lowercased() == first.lowercased() }) else {
            throw .badEnvironment(variable: variable, reason: "does not name a configuration key")
        }
        let current = o[key]!
        if path.count > 1 {
            o[key] = try override(current, variable: variable, path: Array(path.dropFirst()), raw: raw)
            return .object(o)
        }
        switch current {
        case .int:
            guard let i = Int(raw.trimmingCharacters(in: .whitespaces)) else { throw .badEnvironment(variable: variable, reason: "must be an integer, got \"\(raw)\"") }
            o[key] = .int(i)
        case .double:
            guard let d = Double(raw.trimmingCharacters(in: .whitespaces)) else { throw .badEnvironment(variable: variable, reason: "must be a number, got \"\(raw)\"") }
            o[key] = .double(d)
        case .bool:
            switch raw.lowercased() {
            case "true", "1", "yes", "on": o[key] = .bool(true)
            case "false", "0", "no", "off": o[key] = .bool(false)
            default: throw .badEnvironment(variable: variable, reason: "must be true or false, got \"\(raw)\"")
            }
        case .string:
            o[key] = .string(raw)
        case .array, .object:
            if let parsed = JSONValue.parse(Array(raw.utf8)) {
                o[key] = try merge(parsed, into: current, at: [variable])
            } else if case .array = current {
                // A plain comma-separated list is easier to write in an environment than JSON.
                o[key] = .array(raw.split(separator: ",").map { .string($0.trimmingCharacters(in: .whitespaces)) })
            } else {
                throw .badEnvironment(variable: variable, reason: "must be a JSON object")
            }
        case .null:
            o[key] = .string(raw)
        }
        return .object(o)
    }

    private static func decodingFailure(_ error: DecodingError) -> ConfigError {
        switch error {
        case let .typeMismatch(type, ctx):
            return .wrongType(key: keyName(ctx.codingPath), expected: word(for: type))
        case let .valueNotFound(type, ctx):
            return .wrongType(key: keyName(ctx.codingPath), expected: "\(type)")
        case let .keyNotFound(key, ctx):
            return .invalid(key: keyName(ctx.codingPath + [key]), reason: "is required")
        case let .dataCorrupted(ctx) where ctx.debugDescription == "unknown configuration key":
            return .unknownKey(keyName(ctx.codingPath))
        case let .dataCorrupted(ctx):
            if ctx.debugDescription.contains("fit in") { return .wrongType(key: keyName(ctx.codingPath), expected: "an integer") }
            return .invalid(key: keyName(ctx.codingPath), reason: ctx.debugDescription)
        @unknown default:
            return .malformed(path: "config", reason: "\(error)")
        }
    }

    /// Key paths whose Swift type is Double, read off the defaults by reflection.
    static let doubleKeys: Set<String> = {
        var out = Set<String>()
        func walk(_ value: Any, _ path: [String]) {
            for child in Mirror(reflecting: value).children {
                guard let label = child.label else { continue }
                if child.value is Double { out.insert((path + [label]).joined(separator: ".")) }
                else if !(child.value is String || child.value is Int || child.value is Bool || child.value is [Any]) { walk(child.value, path + [label]) }
            }
        }
        walk(Config(), [])
        return out
    }()

    private static func word(for type: Any.Type) -> String {
        switch type {
        case is Int.Type: "an integer"
        case is Double.Type: "a number"
        case is String.Type: "a string"
        case is Bool.Type: "a boolean"
        default: "\(type)"
        }
    }

    /// `sessions[0].sessionId`: dots between names, brackets for positions.
    private static func keyName(_ path: [CodingKey]) -> String {
        path.reduce(into: "") { out, key in
            if let i = key.intValue { out += "[\(i)]" } else { out += (out.isEmpty ? "" : ".") + key.stringValue }
        }
    }

    private static func jsonErrorReason(_ error: Error) -> String {
        if case let DecodingError.dataCorrupted(ctx) = error {
            return (ctx.underlyingError as NSError?)?.userInfo[NSDebugDescriptionErrorKey] as? String ?? ctx.debugDescription
        }
        return "\(error)"
    }
}
