import ArgumentParser
import Foundation
import Logging
import TollgateCore
import TollgateLedger
import TollgateRedis
import TollgateServer

@main
struct Tollgate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tollgate",
        abstract: "An OpenAI-compatible gateway for a pool of LLM inference instances.",
        subcommands: [Serve.self, Check.self, Keys.self, Report.self, Migrate.self, Simulate.self, HashKey.self],
        defaultSubcommand: Serve.self)
}

/// Options shared by the commands that read the configuration.
struct ConfigOptions: ParsableArguments {
    @Option(name: .long, help: "Configuration file or directory (env TOLLGATE_CONFIG; default: routes).")
    var config: String?

    var path: String { config ?? ProcessInfo.processInfo.environment["TOLLGATE_CONFIG"] ?? "routes" }
}

func makeLogger(level: String?) -> Logger {
    let chosen = level ?? ProcessInfo.processInfo.environment["TOLLGATE_LOG_LEVEL"] ?? "info"
    LoggingSystem.bootstrap { label in
        var handler = StreamLogHandler.standardOutput(label: label)
        handler.logLevel = Logger.Level(rawValue: chosen) ?? .info
        return handler
    }
    return Logger(label: "tollgate")
}

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Run the gateway: data plane and control plane.")

    @OptionGroup var options: ConfigOptions
    @Option(help: "Data-plane address (overrides listen.host).") var host: String?
    @Option(help: "Data-plane port (overrides listen.port).") var port: Int?
    @Option(help: "Control-plane address (overrides admin.host).") var adminHost: String?
    @Option(help: "Control-plane port (overrides admin.port).") var adminPort: Int?
    @OptionGroup var ledger: LedgerOptions
    @Option(help: "Name of this replica, written into every ledger row (default: the host name).") var replica: String?
    @Option(help: "Redis URL redis://[:password@]host:port/db (env TOLLGATE_REDIS_URL): quota counters shared by replicas, and the cache.") var redis: String?
    @Option(help: "trace, debug, info, notice, warning, error (env TOLLGATE_LOG_LEVEL; default info).") var logLevel: String?

    func run() async throws {
        let logger = makeLogger(level: logLevel)
        let path = options.path
        let config: GatewayConfiguration
        do {
            config = try ConfigurationLoader.load(path: path)
        } catch {
            FileHandle.standardError.write(Data("tollgate: configuration refused\n\(error)\n".utf8))
            throw ExitCode(2)
        }
        let overrides = Gateway.Overrides(host: host, port: port, adminHost: adminHost, adminPort: adminPort)
        let settings = LedgerSettings(
            databasePath: ledger.databasePath, migrationsDirectory: try ledger.migrationsDirectory(),
            replica: replica ?? ProcessInfo.processInfo.hostName)
        var redisConfiguration: RedisConfiguration?
        if let url = redis ?? ProcessInfo.processInfo.environment["TOLLGATE_REDIS_URL"], !url.isEmpty {
            do {
                redisConfiguration = try RedisConfiguration(url: url)
            } catch {
                FileHandle.standardError.write(Data("tollgate: --redis: \(error)\n".utf8))
                throw ExitCode(2)
            }
        }
        let gateway: Gateway
        do {
            gateway = try Gateway(configuration: config, configPath: path, overrides: overrides, ledger: settings,
                                  redis: redisConfiguration, logger: logger)
        } catch {
            FileHandle.standardError.write(Data("tollgate: cannot open the ledger \(settings.databasePath)\n\(error)\n".utf8))
            throw ExitCode(2)
        }
        try await gateway.run { data, admin in
            logger.notice("ready", metadata: ["data_plane": "\(data)", "control_plane": "\(admin)", "config": "\(path)"])
        }
    }
}

struct Check: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Validate the configuration and print the resolved routing table.")

    @OptionGroup var options: ConfigOptions

    func run() throws {
        do {
            let config = try ConfigurationLoader.load(path: options.path)
            let table = RoutingTable(configuration: config)
            print("configuration \(options.path): OK")
            print("data plane \(config.listen), control plane \(config.admin)")
            print(table.render(), terminator: "")
        } catch let errors as ConfigurationErrors {
            FileHandle.standardError.write(Data("configuration \(options.path): \(errors.errors.count) error(s)\n\(errors)\n".utf8))
            throw ExitCode(1)
        }
    }
}

struct HashKey: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "hash-key",
        abstract: "Print the SHA-256 of an API key, as configuration stores it (reads the key from stdin when none is given).")

    @Argument(help: "The key. Prefer stdin: arguments end up in shell history.") var key: String?

    func run() throws {
        let text = key ?? (readLine(strippingNewline: true) ?? "")
        guard !text.isEmpty else { throw ValidationError("no key given") }
        print(KeyDigest.hex(of: text))
    }
}
